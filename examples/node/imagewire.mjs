// @ts-check
// A Node.js client for both imagewire services over the typed TypeScript package (client/ts, gRPC over HTTP/2).
//
//   node imagewire.mjs caption IMAGE TARGET [field=value ...]       prints the CaptionResponse as JSON
//   node imagewire.mjs animate IMAGE OUT TARGET [--grpc-web] [--events] [field=value ...]
//                                                                   streams the video into OUT, resuming after
//                                                                   dropped connections, checks its length and
//                                                                   SHA-256, prints a summary as JSON
//
// TARGET is host:port or http(s)://host:port. The optional fields are the request's, by their proto names
// (num_frames=14 seed=7 format=VIDEO_FORMAT_WEBM_VP9 prompt="a picture of"). --grpc-web speaks gRPC-Web (to a
// proxy such as Envoy) instead of gRPC; --events prints each event's kind ("event chunk") and each failure the
// download resumes from ("resume STATUS: message") on stderr as they happen. A failed call prints "STATUS:
// message" on stderr and exits 1.
import { open, readFile, rm } from "node:fs/promises";
import {
  animate, callFailure, caption, clients, downloadAnimation, fromJson, hex, textFields, toJson, VideoSink,
} from "@imagewire/client";
import { nodeTransport } from "@imagewire/client/node";
import { webTransport } from "@imagewire/client/web";

const CAPTION_TIMEOUT_MS = 60_000;
const ANIMATE_TIMEOUT_MS = 900_000;

/** `field=value` arguments as proto JSON request fields. */
function fields(pairs) {
  return textFields(pairs.map((pair) => {
    const at = pair.indexOf("=");
    if (at < 1) throw new Error(`expected field=value, got ${JSON.stringify(pair)}`);
    return [pair.slice(0, at), pair.slice(at + 1)];
  }));
}

async function captionCommand(image, target, pairs) {
  const api = clients(nodeTransport(target));
  const request = { ...fromJson(caption.CaptionRequestSchema, fields(pairs)), image: await readFile(image) };
  const response = await api.caption.caption(request, { timeoutMs: CAPTION_TIMEOUT_MS });
  console.log(JSON.stringify(toJson(caption.CaptionResponseSchema, response)));
}

async function animateCommand(image, out, target, args) {
  const flags = new Set(args.filter((arg) => arg.startsWith("--")));
  const pairs = args.filter((arg) => !arg.startsWith("--"));
  const transport = flags.has("--grpc-web")
    ? webTransport(/^https?:\/\//.test(target) ? target : `http://${target}`)
    : nodeTransport(target);
  const api = clients(transport);
  const request = { ...fromJson(animate.AnimateRequestSchema, fields(pairs)), image: await readFile(image) };
  const file = await open(out, "w");
  let position = 0;
  const sink = new VideoSink(async (bytes) => {
    await file.write(bytes, 0, bytes.length, position);
    position += bytes.length;
  }, async () => {
    await file.truncate(0);
    position = 0;
  });
  const seen = { job: 0, progress: 0, preview: 0, header: 0, chunk: 0, result: 0 };
  const order = [];
  const onEvent = (event) => {
    seen[event.case] += 1;
    if (order.at(-1) !== event.case) order.push(event.case);
    if (flags.has("--events")) console.error(`event ${event.case}`);
  };
  const onResume = (error) => {
    const failure = callFailure(error);
    if (flags.has("--events")) console.error(`resume ${failure.status}: ${failure.message}`);
  };
  try {
    const result = await downloadAnimation(api.animate, request, sink, { timeoutMs: ANIMATE_TIMEOUT_MS, onEvent, onResume });
    await file.close();
    console.log(JSON.stringify({
      header: sink.header && toJson(animate.VideoHeaderSchema, sink.header),
      result: toJson(animate.AnimateResultSchema, result),
      sha256: hex(result.sha256),
      events: seen,
      order,
      provenance: sink.provenance,
    }));
  } catch (error) {
    await file.close();
    await rm(out, { force: true });
    throw error;
  }
}

const [command, ...args] = process.argv.slice(2);
try {
  if (command === "caption" && args.length >= 2) {
    await captionCommand(args[0], args[1], args.slice(2));
  } else if (command === "animate" && args.length >= 3) {
    await animateCommand(args[0], args[1], args[2], args.slice(3));
  } else {
    console.error("usage: node imagewire.mjs caption IMAGE TARGET [field=value ...]\n" +
                  "       node imagewire.mjs animate IMAGE OUT TARGET [field=value ...]");
    process.exitCode = 2;
  }
} catch (error) {
  const failure = callFailure(error);
  console.error(`${failure.status}: ${failure.message}`);
  process.exitCode = 1;
}
