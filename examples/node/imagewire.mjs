// @ts-check
// A Node.js client for both imagewire services over the typed TypeScript package (client/ts, gRPC over HTTP/2).
//
//   node imagewire.mjs caption IMAGE TARGET [field=value ...]       prints the CaptionResponse as JSON
//   node imagewire.mjs animate IMAGE OUT TARGET [field=value ...]   streams the video into OUT, checks its length
//                                                                   and SHA-256, prints a summary as JSON
//
// TARGET is host:port or http(s)://host:port. The optional fields are the request's, by their proto names
// (num_frames=14 seed=7 format=VIDEO_FORMAT_WEBM_VP9 prompt="a picture of"). A failed call prints
// "STATUS: message" on stderr and exits 1; a field or value the request cannot take is a bad command line:
// "error: ..." naming it, exit 2, before anything is sent.
import { open, readFile, rm } from "node:fs/promises";
import {
  animate, animateEvents, callFailure, caption, clients, fromJson, hex, textFields, toJson, VideoSink,
} from "@imagewire/client";
import { nodeTransport } from "@imagewire/client/node";

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

async function animateCommand(image, out, target, pairs) {
  const api = clients(nodeTransport(target));
  const request = { ...requestFields(animate.AnimateRequestSchema, pairs), image: await readFile(image) };
  const file = await open(out, "w");
  const sink = new VideoSink(async (bytes) => void (await file.write(bytes)));
  const seen = { job: 0, progress: 0, preview: 0, header: 0, chunk: 0, result: 0 };
  const order = [];
  try {
    for await (const event of animateEvents(api.animate.animate(request, { timeoutMs: ANIMATE_TIMEOUT_MS }))) {
      seen[event.case] += 1;
      if (order.at(-1) !== event.case) order.push(event.case);
      await sink.feed(event);
    }
    const result = sink.finish();
    await file.close();
    console.log(JSON.stringify({
      header: sink.header && toJson(animate.VideoHeaderSchema, sink.header),
      result: toJson(animate.AnimateResultSchema, result),
      sha256: hex(result.sha256),
      events: seen,
      order,
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
