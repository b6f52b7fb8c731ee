// A Node.js client for both imagewire services, built at run time from protos/ (no generated code).
//
//   node imagewire.js caption IMAGE TARGET            -> prints the CaptionResponse as JSON
//   node imagewire.js animate IMAGE OUT TARGET [N]    -> streams a video of N frames into OUT, prints the result
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const crypto = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");

function load(file) {
  const definition = protoLoader.loadSync(path.join(PROTOS, file), {
    includeDirs: [PROTOS], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
  });
  return grpc.loadPackageDefinition(definition);
}

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

function caption(image, target) {
  const { imagewire } = load("imagewire/caption/v1/caption.proto");
  const client = new imagewire.caption.v1.CaptionService(target, grpc.credentials.createInsecure());
  client.Caption({ image: fs.readFileSync(image) }, { deadline: deadline(60) }, (error, response) => {
    client.close();
    if (error) {
      console.error(`${grpc.status[error.code]}: ${error.details}`);
      process.exit(1);
    }
    console.log(JSON.stringify(response));
  });
}

function animate(image, out, target, frames) {
  const { imagewire } = load("imagewire/animate/v1/animate.proto");
  const client = new imagewire.animate.v1.AnimateService(target, grpc.credentials.createInsecure());
  const request = { image: fs.readFileSync(image), num_frames: frames, num_inference_steps: 2, width: 64, height: 64,
                    seed: 3 };
  const call = client.Animate(request, { deadline: deadline(300) });
  const file = fs.openSync(out, "w");
  const digest = crypto.createHash("sha256");
  const events = [];
  let written = 0;
  call.on("data", (response) => {
    events.push(response.event);
    if (response.event === "chunk") {
      fs.writeSync(file, response.chunk.data);
      digest.update(response.chunk.data);
      written += response.chunk.data.length;
    } else if (response.event === "result") {
      const result = response.result;
      const ok = result.total_bytes === written && Buffer.from(result.sha256).equals(digest.digest());
      console.log(JSON.stringify({ written, verified: ok, seed: result.seed, first: events[0],
                                   header_before_chunks: events.indexOf("header") < events.indexOf("chunk") }));
    }
  });
  call.on("error", (error) => {
    console.error(`${grpc.status[error.code]}: ${error.details}`);
    process.exit(1);
  });
  call.on("end", () => {
    fs.closeSync(file);
    client.close();
  });
}

const [command, ...args] = process.argv.slice(2);
if (command === "caption" && args.length === 2) {
  caption(args[0], args[1]);
} else if (command === "animate" && args.length >= 3) {
  animate(args[0], args[1], args[2], Number(args[3] || 4));
} else {
  console.error("usage: node imagewire.js caption IMAGE TARGET | animate IMAGE OUT TARGET [FRAMES]");
  process.exit(2);
}
