"""The header's RFC 6381 codecs string is true: it matches the codec parameters PyAV reads back from the stream."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from animator.video import StreamingVideoEncoder, VideoFormat, h264_codecs, vp9_codecs

# H.264 profile_idc values by the profile names FFmpeg reports.
H264_PROFILES = {"Baseline": 0x42, "Constrained Baseline": 0x42, "Main": 0x4D, "High": 0x64}


def encode(fmt: VideoFormat, width: int, height: int, fps: int) -> tuple[str, av.container.InputContainer]:
    encoder = StreamingVideoEncoder(fmt, width, height, fps)
    rng = np.random.default_rng(0)
    data = encoder.write(rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)) + encoder.close()
    return encoder.codecs, av.open(io.BytesIO(data))


@pytest.mark.parametrize(("width", "height"), [(64, 64), (96, 64), (1024, 576)])
def test_h264_codecs_are_the_avcc_profile_and_level_of_the_stream(width: int, height: int) -> None:
    codecs, container = encode(VideoFormat.MP4_H264, width, height, 6)
    with container:
        context = container.streams.video[0].codec_context
        # The avcC record PyAV reads from the MP4: version 1, then profile_idc, constraint flags, level_idc.
        avcc = bytes(context.extradata)
    assert avcc[0] == 1 and codecs == "avc1." + avcc[1:4].hex()
    profile, level = int(codecs[5:7], 16), int(codecs[9:11], 16)
    assert profile == H264_PROFILES[context.profile] and level == context.level


def test_h264_level_follows_the_frame_size() -> None:
    # libx264 picks the level from the macroblock count and rate: High 1.0 for a tiny frame, 3.1 for 1024x576.
    assert encode(VideoFormat.MP4_H264, 64, 64, 6)[0] == "avc1.64000a"
    assert encode(VideoFormat.MP4_H264, 1024, 576, 6)[0] == "avc1.64001f"


@pytest.mark.parametrize(
    ("width", "height", "fps", "level"),
    [
        (64, 64, 6, 10),  # level 1: at most 36,864 luma samples a picture, 829,440 a second, 512 a side
        (256, 144, 6, 10),  # exactly 36,864 samples
        (256, 144, 30, 11),  # 1,105,920 samples a second is over level 1's rate
        (1024, 64, 6, 21),  # 65,536 samples fit level 1.1, but a 1024 side needs level 2.1 (at most 1344)
        (1024, 576, 6, 31),  # 589,824 samples is over level 3's 552,960
    ],
)
def test_vp9_codecs_are_profile_level_and_depth_of_the_stream(width: int, height: int, fps: int, level: int) -> None:
    codecs, container = encode(VideoFormat.WEBM_VP9, width, height, fps)
    with container:
        stream = container.streams.video[0]
        frame = next(container.decode(video=0))
        assert (stream.codec_context.profile, frame.format.name) == ("Profile 0", "yuv420p")
        assert (stream.width, stream.height, stream.average_rate) == (width, height, fps)
    assert codecs == f"vp09.00.{level:02d}.08"


def test_codecs_helpers_refuse_what_they_cannot_describe() -> None:
    with pytest.raises(ValueError, match="no sequence parameter set"):
        h264_codecs(b"\x00\x00\x00\x01\x68\xee\x3c\x80")  # a picture parameter set only
    with pytest.raises(ValueError, match="beyond every VP9 level"):
        vp9_codecs("yuv420p", 16384, 16384, 60)
