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
// message" on stderr and exits 1; a field or value the request cannot take is a bad command line: "error: ..."
// naming it, exit 2, before anything is sent.
import { open, readFile, rm } from "node:fs/promises";
import {
  animate, callFailure, caption, clients, downloadAnimation, fromJson, hex, textFields, toJson, VideoSink,
} from "@imagewire/client";
import { nodeTransport } from "@imagewire/client/node";
import { webTransport } from "@imagewire/client/web";

const CAPTION_TIMEOUT_MS = 60_000;
const ANIMATE_TIMEOUT_MS = 900_000;

/** A command line that cannot be right (exit status 2). */
class UsageError extends Error {}

/** `field=value` arguments as a request of `schema` (proto JSON names); UsageError naming a bad one. */
function requestFields(schema, pairs) {
  const json = textFields(pairs.map((pair) => {
    const at = pair.indexOf("=");
    if (at < 1) throw new UsageError(`expected field=value, got ${JSON.stringify(pair)}`);
    return [pair.slice(0, at), pair.slice(at + 1)];
  }));
  try {
    return fromJson(schema, json);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

async function captionCommand(image, target, pairs) {
  const api = clients(nodeTransport(target));
  const request = { ...requestFields(caption.CaptionRequestSchema, pairs), image: await readFile(image) };
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
  const request = { ...requestFields(animate.AnimateRequestSchema, pairs), image: await readFile(image) };
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
  if (error instanceof UsageError) {
    console.error(`error: ${error.message}`);
    process.exitCode = 2;
  } else {
    const failure = callFailure(error);
    console.error(`${failure.status}: ${failure.message}`);
    process.exitCode = 1;
  }
}
