from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VideoFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIDEO_FORMAT_UNSPECIFIED: _ClassVar[VideoFormat]
    VIDEO_FORMAT_MP4_H264: _ClassVar[VideoFormat]
    VIDEO_FORMAT_WEBM_VP9: _ClassVar[VideoFormat]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_QUEUED: _ClassVar[Stage]
    STAGE_ENCODE_IMAGE: _ClassVar[Stage]
    STAGE_DENOISE: _ClassVar[Stage]
    STAGE_DECODE: _ClassVar[Stage]
    STAGE_ENCODE_VIDEO: _ClassVar[Stage]
VIDEO_FORMAT_UNSPECIFIED: VideoFormat
VIDEO_FORMAT_MP4_H264: VideoFormat
VIDEO_FORMAT_WEBM_VP9: VideoFormat
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
STAGE_UNSPECIFIED: Stage
STAGE_QUEUED: Stage
STAGE_ENCODE_IMAGE: Stage
STAGE_DENOISE: Stage
STAGE_DECODE: Stage
STAGE_ENCODE_VIDEO: Stage

class AnimateRequest(_message.Message):
    __slots__ = ("image", "model_id", "width", "height", "num_frames", "fps", "motion_bucket_id", "noise_aug_strength", "num_inference_steps", "seed", "decode_chunk_size", "safety_check", "format", "min_guidance_scale", "max_guidance_scale", "job_id", "preview_every", "detach_grace_seconds", "prompt", "negative_prompt", "guidance_scale")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    MOTION_BUCKET_ID_FIELD_NUMBER: _ClassVar[int]
    NOISE_AUG_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    NUM_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DECODE_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_CHECK_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MIN_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    MAX_GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    DETACH_GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    model_id: str
    width: int
    height: int
    num_frames: int
    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    num_inference_steps: int
    seed: int
    decode_chunk_size: int
    safety_check: bool
    format: VideoFormat
    min_guidance_scale: float
    max_guidance_scale: float
    job_id: str
    preview_every: int
    detach_grace_seconds: float
    prompt: str
    negative_prompt: str
    guidance_scale: float
    def __init__(self, image: _Optional[bytes] = ..., model_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_frames: _Optional[int] = ..., fps: _Optional[int] = ..., motion_bucket_id: _Optional[int] = ..., noise_aug_strength: _Optional[float] = ..., num_inference_steps: _Optional[int] = ..., seed: _Optional[int] = ..., decode_chunk_size: _Optional[int] = ..., safety_check: _Optional[bool] = ..., format: _Optional[_Union[VideoFormat, str]] = ..., min_guidance_scale: _Optional[float] = ..., max_guidance_scale: _Optional[float] = ..., job_id: _Optional[str] = ..., preview_every: _Optional[int] = ..., detach_grace_seconds: _Optional[float] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., guidance_scale: _Optional[float] = ...) -> None: ...

class WatchAnimationRequest(_message.Message):
    __slots__ = ("job_id", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class WatchAnimationResponse(_message.Message):
    __slots__ = ("progress", "header", "chunk", "result", "job", "preview")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    header: VideoHeader
    chunk: VideoChunk
    result: AnimateResult
    job: JobStatus
    preview: Preview
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., header: _Optional[_Union[VideoHeader, _Mapping]] = ..., chunk: _Optional[_Union[VideoChunk, _Mapping]] = ..., result: _Optional[_Union[AnimateResult, _Mapping]] = ..., job: _Optional[_Union[JobStatus, _Mapping]] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ...) -> None: ...

class CancelAnimationRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelAnimationResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobStatus
    def __init__(self, job: _Optional[_Union[JobStatus, _Mapping]] = ...) -> None: ...

class AnimateResponse(_message.Message):
    __slots__ = ("progress", "header", "chunk", "result", "job", "preview")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    header: VideoHeader
    chunk: VideoChunk
    result: AnimateResult
    job: JobStatus
    preview: Preview
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., header: _Optional[_Union[VideoHeader, _Mapping]] = ..., chunk: _Optional[_Union[VideoChunk, _Mapping]] = ..., result: _Optional[_Union[AnimateResult, _Mapping]] = ..., job: _Optional[_Union[JobStatus, _Mapping]] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("job_id", "state", "queue_position", "created", "available_bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    queue_position: int
    created: bool
    available_bytes: int
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., queue_position: _Optional[int] = ..., created: _Optional[bool] = ..., available_bytes: _Optional[int] = ...) -> None: ...

class Preview(_message.Message):
    __slots__ = ("image", "mime_type", "width", "height", "num_frames", "step", "total")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    mime_type: str
    width: int
    height: int
    num_frames: int
    step: int
    total: int
    def __init__(self, image: _Optional[bytes] = ..., mime_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_frames: _Optional[int] = ..., step: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "step", "total")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    step: int
    total: int
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., step: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class VideoHeader(_message.Message):
    __slots__ = ("mime_type", "container", "codec", "width", "height", "fps", "num_frames", "seed", "model_id", "codecs")
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    mime_type: str
    container: str
    codec: str
    width: int
    height: int
    fps: int
    num_frames: int
    seed: int
    model_id: str
    codecs: str
    def __init__(self, mime_type: _Optional[str] = ..., container: _Optional[str] = ..., codec: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ..., num_frames: _Optional[int] = ..., seed: _Optional[int] = ..., model_id: _Optional[str] = ..., codecs: _Optional[str] = ...) -> None: ...

class VideoChunk(_message.Message):
    __slots__ = ("data", "offset")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class AnimateResult(_message.Message):
    __slots__ = ("total_bytes", "sha256", "seed", "safety_checked", "nsfw", "usage")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SAFETY_CHECKED_FIELD_NUMBER: _ClassVar[int]
    NSFW_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    sha256: bytes
    seed: int
    safety_checked: bool
    nsfw: bool
    usage: Usage
    def __init__(self, total_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ..., seed: _Optional[int] = ..., safety_checked: _Optional[bool] = ..., nsfw: _Optional[bool] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("output_pixels", "usd_per_output_pixel", "price_usd")
    OUTPUT_PIXELS_FIELD_NUMBER: _ClassVar[int]
    USD_PER_OUTPUT_PIXEL_FIELD_NUMBER: _ClassVar[int]
    PRICE_USD_FIELD_NUMBER: _ClassVar[int]
    output_pixels: int
    usd_per_output_pixel: float
    price_usd: float
    def __init__(self, output_pixels: _Optional[int] = ..., usd_per_output_pixel: _Optional[float] = ..., price_usd: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model_id")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model_id: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model_id: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "device", "dtype", "max_image_bytes", "default_width", "default_height", "default_num_frames", "default_fps", "default_num_inference_steps", "max_pixels_per_frame", "max_num_frames", "max_num_inference_steps", "safety_checker", "usd_per_output_pixel", "family", "fields")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FPS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_NUM_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_PER_FRAME_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    SAFETY_CHECKER_FIELD_NUMBER: _ClassVar[int]
    USD_PER_OUTPUT_PIXEL_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    device: str
    dtype: str
    max_image_bytes: int
    default_width: int
    default_height: int
    default_num_frames: int
    default_fps: int
    default_num_inference_steps: int
    max_pixels_per_frame: int
    max_num_frames: int
    max_num_inference_steps: int
    safety_checker: bool
    usd_per_output_pixel: float
    family: str
    fields: _containers.RepeatedCompositeFieldContainer[FieldInfo]
    def __init__(self, model_id: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., max_image_bytes: _Optional[int] = ..., default_width: _Optional[int] = ..., default_height: _Optional[int] = ..., default_num_frames: _Optional[int] = ..., default_fps: _Optional[int] = ..., default_num_inference_steps: _Optional[int] = ..., max_pixels_per_frame: _Optional[int] = ..., max_num_frames: _Optional[int] = ..., max_num_inference_steps: _Optional[int] = ..., safety_checker: _Optional[bool] = ..., usd_per_output_pixel: _Optional[float] = ..., family: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[FieldInfo, _Mapping]]] = ...) -> None: ...

class FieldInfo(_message.Message):
    __slots__ = ("name", "default_value", "minimum", "maximum", "multiple_of", "remainder")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_FIELD_NUMBER: _ClassVar[int]
    MULTIPLE_OF_FIELD_NUMBER: _ClassVar[int]
    REMAINDER_FIELD_NUMBER: _ClassVar[int]
    name: str
    default_value: _struct_pb2.Value
    minimum: float
    maximum: float
    multiple_of: int
    remainder: int
    def __init__(self, name: _Optional[str] = ..., default_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., minimum: _Optional[float] = ..., maximum: _Optional[float] = ..., multiple_of: _Optional[int] = ..., remainder: _Optional[int] = ...) -> None: ...
