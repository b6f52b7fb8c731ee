// A job's video downloaded across dropped connections: the rules docs/api.md gives every resuming client (the
// Python client's, client/imagewire/client/_resume.py), over a Connect client of either transport.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import {
  type AnimateRequest,
  type AnimateResult,
  AnimateService,
  WatchAnimationRequestSchema,
} from "./gen/imagewire/animate/v1/animate_pb.js";
import { type AnimateEvent, animateEvents, ProvenanceChanged, type VideoSink } from "./animate.js";

/** The metadata key carrying the job id, on which a front door with several replicas routes a job's calls. */
export const JOB_ID_KEY = "x-imagewire-job-id";

/** The contract's rule for a job id (it travels in metadata): as the Python client's imagewire.limits. */
export const JOB_ID_RULE = "1 to 128 characters from A-Z, a-z, 0-9, '-', '_' and '.'";
const JOB_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Whether `text` is a job id the contract accepts (JOB_ID_RULE). */
export function isJobId(text: string): boolean {
  return JOB_ID.test(text);
}

/**
 * How a download survives dropped connections: at most `attempts` reconnections in all, the first after
 * `backoffMs`, each later one after twice the pause before it (at most `maxBackoffMs`).
 */
export interface Resume {
  readonly attempts: number;
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
}

/** Five reconnections after 0.5, 1, 2, 4 and 8 s (as the Python client). */
export const DEFAULT_RESUME: Resume = { attempts: 5, backoffMs: 500, maxBackoffMs: 8000 };

// How a transport reports a stream that a proxy reset (RST_STREAM: Envoy resets the caller's stream when the
// server behind it dies) rather than a status a server sent. Over HTTP/2 (Connect for Node), Internal caused by
// Node's ERR_HTTP2_STREAM_ERROR ("Stream closed with error code NGHTTP2_INTERNAL_ERROR") or Connect's own "http/2
// stream closed with error code INTERNAL_ERROR (0x2)"; a connection reset (ECONNRESET) is Aborted. Over gRPC-Web
// (fetch), a body cut short: a TypeError ("terminated", "network error", "Failed to fetch") that Connect wraps as
// Unknown.
const RESET = /^http\/2 stream closed with error code/;
const TRANSPORT_CODES = new Set(["ERR_HTTP2_STREAM_ERROR", "ECONNRESET"]);

/**
 * Whether a failed call lost its connection while the job may well go on: Unavailable, or a stream reset by a
 * proxy or a connection reset (see above). A real Internal status answered by a server is not.
 */
export function dropped(error: unknown): boolean {
  const connectError = ConnectError.from(error);
  const causes = causeChain(connectError.cause);
  switch (connectError.code) {
    case Code.Unavailable:
      return true;
    case Code.Internal:
    case Code.Aborted:
      return RESET.test(connectError.rawMessage) || causes.some((cause) => TRANSPORT_CODES.has(nodeCode(cause)));
    case Code.Unknown:
      return causes.some((cause) => cause instanceof TypeError);
    default:
      return false;
  }
}

function causeChain(cause: unknown): Error[] {
  const chain: Error[] = [];
  while (cause instanceof Error && !chain.includes(cause)) {
    chain.push(cause);
    cause = cause.cause;
  }
  return chain;
}

function nodeCode(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code : "";
}

/** Options of a download. */
export interface DownloadOptions {
  /** The whole download's deadline, every resumed call within it (default 900 s). */
  readonly timeoutMs?: number;
  readonly resume?: Resume;
  /** Sees every event first (the events of every call, resumed ones too). */
  readonly onEvent?: (event: AnimateEvent) => void;
  /** Told of each failure the download goes on from, before its pause. */
  readonly onResume?: (error: ConnectError) => void;
}

/**
 * Generate a video into `sink`, resuming after dropped connections: Animate, then WatchAnimation from the bytes
 * the sink has after a drop; Animate again with the same job id, the sink started over, when the server no longer
 * knows the job (NOT_FOUND); WatchAnimation from byte 0, the sink started over, when a resumed stream comes from a
 * server of another provenance. Returns the verified result. The request gets a job id when it has none.
 */
export async function downloadAnimation(
  client: Client<typeof AnimateService>, request: AnimateRequest, sink: VideoSink, options: DownloadOptions = {},
): Promise<AnimateResult> {
  const resume = options.resume ?? DEFAULT_RESUME;
  const deadline = Date.now() + (options.timeoutMs ?? 900_000);
  if (request.jobId && !isJobId(request.jobId)) {
    // Refused before anything is sent: metadata cannot carry it, and the server would refuse it anyway.
    throw new ConnectError(`job_id: must be ${JOB_ID_RULE}, not ${JSON.stringify(request.jobId)}`,
                           Code.InvalidArgument);
  }
  const jobId = request.jobId || crypto.randomUUID().replaceAll("-", "");
  const animateRequest = { ...request, jobId };
  const headers = { [JOB_ID_KEY]: jobId };
  let method: "animate" | "watch" = "animate";
  let resumes = 0;
  for (;;) {
    const callOptions = { timeoutMs: Math.max(1, deadline - Date.now()), headers };
    try {
      const responses = method === "animate"
        ? client.animate(animateRequest, callOptions)
        : client.watchAnimation(create(WatchAnimationRequestSchema, { jobId, offset: sink.bytesWritten }),
          callOptions);
      for await (const event of animateEvents(responses)) {
        options.onEvent?.(event);
        await sink.feed(event);
      }
      return sink.finish();
    } catch (error) {
      const changed: boolean = error instanceof ProvenanceChanged;
      const lostJob: boolean = method === "watch" && ConnectError.from(error).code === Code.NotFound;
      if (!(dropped(error) || changed || lostJob) || resumes >= resume.attempts) {
        throw error;
      }
      // The server that answered is up: a change of provenance is followed at once.
      const pause = changed ? 0 : Math.min(resume.backoffMs * 2 ** resumes, resume.maxBackoffMs);
      if (deadline - Date.now() <= pause) {
        throw error;
      }
      resumes += 1;
      options.onResume?.(ConnectError.from(error));
      if (changed || lostJob) {
        await sink.restart();
      }
      method = lostJob ? "animate" : "watch";
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}
