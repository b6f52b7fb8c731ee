// The I/O-free helpers: the sink's checks, the format choice and the error names (node --test dist/test/).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  animateEvents, type AnimateEvent, animate, callFailure, downloadAnimation, dropped, fromJson, isJobId, mediaType,
  playableFormat,
  ProvenanceChanged, statusName, textFields, VideoSink,
} from "../index.js";
import {
  AnimateResponseSchema,
  JobStatusSchema,
  AnimateResultSchema,
  VideoChunkSchema,
  VideoFormat,
  VideoHeaderSchema,
} from "../gen/imagewire/animate/v1/animate_pb.js";

const header: AnimateEvent = { case: "header", value: create(VideoHeaderSchema, { mimeType: "video/mp4", codecs: "avc1.64000a" }) };
const parts = [new Uint8Array([1, 2, 3]), new Uint8Array([4, 5])];

function chunk(data: Uint8Array, offset: number): AnimateEvent {
  return { case: "chunk", value: create(VideoChunkSchema, { data, offset: BigInt(offset) }) };
}

function result(totalBytes: number, bytes: Uint8Array[]): AnimateEvent {
  const sha256 = createHash("sha256");
  bytes.forEach((part) => sha256.update(part));
  return { case: "result", value: create(AnimateResultSchema, { totalBytes: BigInt(totalBytes), sha256: sha256.digest() }) };
}

async function dataLoss(promise: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ConnectError && error.code === Code.DataLoss, String(error));
    assert.match(error.rawMessage, message);
    return true;
  });
}

test("the sink writes the chunks in order and returns the verified result", async () => {
  const written: number[] = [];
  const sink = new VideoSink(async (bytes) => void written.push(...bytes));
  assert.equal(await sink.feed(header), undefined);
  await sink.feed(chunk(parts[0]!, 0));
  await sink.feed(chunk(parts[1]!, 3));
  const done = await sink.feed(result(5, parts));
  assert.deepEqual(written, [1, 2, 3, 4, 5]);
  assert.equal(done?.totalBytes, 5n);
  assert.equal(sink.finish(), done);
  assert.equal(sink.bytesWritten, 5n);
});

test("the sink refuses a broken stream", async () => {
  await dataLoss(new VideoSink(() => {}).feed(chunk(parts[0]!, 0)), /before the header/);
  const gap = new VideoSink(() => {});
  await gap.feed(header);
  await gap.feed(chunk(parts[0]!, 0));
  await dataLoss(gap.feed(chunk(parts[1]!, 4)), /offset 4, expected 3/);
  const wrong = new VideoSink(() => {});
  await wrong.feed(header);
  await wrong.feed(chunk(parts[0]!, 0));
  await dataLoss(wrong.feed(result(3, [parts[1]!])), /sha256/);
  const short = new VideoSink(() => {});
  await short.feed(header);
  assert.throws(() => short.finish(), /without a result/);
});

test("a response without an event is a protocol error", async () => {
  async function* responses() {
    yield create(AnimateResponseSchema, { event: header });
    yield create(AnimateResponseSchema, {});
  }
  const seen: string[] = [];
  await dataLoss((async () => {
    for await (const event of animateEvents(responses())) seen.push(event.case);
  })(), /no event/);
  assert.deepEqual(seen, ["header"]);
});

test("the format follows what the player plays, H.264 first", () => {
  assert.equal(playableFormat(() => true), VideoFormat.MP4_H264);
  assert.equal(playableFormat((type) => type.startsWith("video/webm")), VideoFormat.WEBM_VP9);
  assert.equal(playableFormat(() => false), undefined);
  assert.equal(mediaType(create(VideoHeaderSchema, { mimeType: "video/mp4", codecs: "avc1.64000a" })), 'video/mp4; codecs="avc1.64000a"');
});

test("errors read as the contract's status names", () => {
  assert.equal(statusName(Code.InvalidArgument), "INVALID_ARGUMENT");
  assert.equal(statusName(Code.Unavailable), "UNAVAILABLE");
  assert.equal(statusName(Code.Canceled), "CANCELLED");
  assert.equal(statusName(Code.Unauthenticated), "UNAUTHENTICATED");
  const failure = callFailure(new ConnectError("image is empty", Code.InvalidArgument));
  assert.deepEqual([failure.status, failure.message], ["INVALID_ARGUMENT", "image is empty"]);
  assert.equal(callFailure(new Error("boom")).status, "UNKNOWN");
});

test("text fields become a request: booleans, enum names, every digit of a 64-bit seed", () => {
  const fields = textFields([["num_frames", "5"], ["safety_check", "true"], ["format", "VIDEO_FORMAT_WEBM_VP9"],
    ["seed", "18446744073709551615"], ["noise_aug_strength", "0.5"]]);
  const request = fromJson(animate.AnimateRequestSchema, fields);
  assert.deepEqual([request.numFrames, request.safetyCheck, request.format, request.seed, request.noiseAugStrength],
    [5, true, VideoFormat.WEBM_VP9, 18446744073709551615n, 0.5]);
});

function job(provenanceKey: string): AnimateEvent {
  return { case: "job", value: create(JobStatusSchema, { jobId: "j", provenanceKey }) };
}

test("a stream from a server of another provenance may not continue the bytes; after a restart it may", async () => {
  const written: number[] = [];
  let erased = 0;
  const sink = new VideoSink((bytes) => void written.push(...bytes), () => {
    erased += 1;
    written.length = 0;
  });
  await sink.feed(job("a"));
  await sink.feed(header);
  await sink.feed(chunk(parts[0]!, 0));
  await sink.feed(job("a")); // the same provenance: its bytes continue the file
  await sink.feed(job("")); // a server that does not say: nothing to tell
  await assert.rejects(sink.feed(job("b")), (error: unknown) => {
    assert.ok(error instanceof ProvenanceChanged && error.code === Code.Aborted, String(error));
    return true;
  });
  assert.ok(!(new ConnectError("other", Code.Aborted) instanceof ProvenanceChanged));
  await sink.restart();
  await sink.feed(job("b"));
  await sink.feed(header);
  await sink.feed(chunk(parts[0]!, 0));
  await sink.feed(chunk(parts[1]!, 3));
  const done = await sink.feed(result(5, parts));
  assert.equal(done?.totalBytes, 5n);
  assert.deepEqual([erased, written, sink.provenance], [1, [1, 2, 3, 4, 5], "b"]);
  await assert.rejects(new VideoSink(() => undefined).restart(), /cannot erase/);
});

test("a dropped connection: UNAVAILABLE, a stream reset over HTTP/2 or gRPC-Web; not a server's INTERNAL", () => {
  const nodeReset = Object.assign(new Error("Stream closed with error code NGHTTP2_INTERNAL_ERROR"),
    { code: "ERR_HTTP2_STREAM_ERROR" });
  assert.ok(dropped(new ConnectError("upstream connect error", Code.Unavailable)));
  assert.ok(dropped(new ConnectError(nodeReset.message, Code.Internal, undefined, undefined, nodeReset)));
  assert.ok(dropped(new ConnectError("http/2 stream closed with error code INTERNAL_ERROR (0x2)", Code.Internal)));
  assert.ok(dropped(new ConnectError("terminated", Code.Unknown, undefined, undefined, new TypeError("terminated"))));
  assert.ok(!dropped(new ConnectError("internal error; the server logged the details", Code.Internal)));
  assert.ok(!dropped(new ConnectError("job 'j' is not on this server", Code.NotFound)));
  assert.ok(!dropped(new ConnectError("boom", Code.Unknown)));
});

test("a job id outside the contract's rule is refused before anything is sent", async () => {
  assert.ok(isJobId("job-1.a_B") && isJobId("x".repeat(128)));
  for (const bad of ["", "ünï", "new\nline", "a\u0000b", "x".repeat(129)]) {
    if (bad) assert.ok(!isJobId(bad), bad);
  }
  let called = false;
  const client = new Proxy({}, { get: () => () => { called = true; throw new Error("sent"); } });
  const request = create(animate.AnimateRequestSchema, { jobId: "ünï" });
  await assert.rejects(downloadAnimation(client as never, request, new VideoSink(async () => {})), (error) => {
    const failure = ConnectError.from(error);
    return failure.code === Code.InvalidArgument && failure.message.includes("job_id");
  });
  assert.equal(called, false);
});
