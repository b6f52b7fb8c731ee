// @imagewire/client: the contract generated from protos/ (protobuf-es), typed Connect clients of both
// services, and a small I/O-free layer over the Animate stream. Transports: "@imagewire/client/node" (gRPC over
// HTTP/2) and "@imagewire/client/web" (gRPC-Web, for browsers through a proxy such as Envoy).
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { AnimateService } from "./gen/imagewire/animate/v1/animate_pb.js";
import { CaptionService } from "./gen/imagewire/caption/v1/caption_pb.js";

// The protobuf-es functions a caller needs with the generated schemas (building, reading and printing messages),
// from the one copy of the runtime the generated code uses.
export { create, fromJson, toJson, toJsonString } from "@bufbuild/protobuf";
export * as animate from "./gen/imagewire/animate/v1/animate_pb.js";
export * as caption from "./gen/imagewire/caption/v1/caption_pb.js";
export { animateEvents, hex, mediaType, playableFormat, ProvenanceChanged, VideoSink } from "./animate.js";
export type { AnimateEvent, ByteEraser, ByteWriter } from "./animate.js";
export { DEFAULT_RESUME, downloadAnimation, dropped, isJobId, JOB_ID_KEY, JOB_ID_RULE } from "./resume.js";
export type { DownloadOptions, Resume } from "./resume.js";
export { bearer, callFailure, statusName, textFields } from "./calls.js";
export type { CallFailure } from "./calls.js";

/** Both services' clients over one transport (a proxy routes both by path; a direct connection serves one). */
export interface Clients {
  readonly caption: Client<typeof CaptionService>;
  readonly animate: Client<typeof AnimateService>;
}

/** The typed clients of both services over `transport`. */
export function clients(transport: Transport): Clients {
  return { caption: createClient(CaptionService, transport), animate: createClient(AnimateService, transport) };
}
