// The Animate stream in typed events, and a sink that checks the streamed file against the result. Both are
// I/O-free: the caller says where bytes go (a file in Node, a SourceBuffer in a browser).
import { sha256 } from "@noble/hashes/sha2.js";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type AnimateResponse,
  type AnimateResult,
  type VideoHeader,
  VideoFormat,
  type WatchAnimationResponse,
} from "./gen/imagewire/animate/v1/animate_pb.js";

/** One event of the Animate stream: `{ case: "progress" | "header" | "chunk" | "result", value }`. */
export type AnimateEvent = Exclude<AnimateResponse["event"], { case: undefined }>;

/**
 * The events of an Animate (or WatchAnimation: the same events) call's responses; a response carrying no event is
 * a protocol error.
 */
export async function* animateEvents(
  responses: AsyncIterable<{ event: AnimateResponse["event"] | WatchAnimationResponse["event"] }>,
): AsyncGenerator<AnimateEvent> {
  for await (const response of responses) {
    if (response.event.case === undefined) {
      throw new ConnectError("an animate response carried no event", Code.DataLoss);
    }
    yield response.event;
  }
}

/** Where a VideoSink puts the bytes, in order; a returned promise is awaited before the next chunk. */
export type ByteWriter = (bytes: Uint8Array) => void | Promise<void>;

/** Empties what a VideoSink wrote (a file truncated to 0 bytes), for a download that starts the video over. */
export type ByteEraser = () => void | Promise<void>;

/**
 * A stream continuing a sink's bytes came from a server whose provenance key differs from that of the stream
 * the bytes came from: its bytes may not continue them (code Aborted; a download starts the video over).
 */
export class ProvenanceChanged extends ConnectError {
  constructor(message: string) {
    super(message, Code.Aborted);
    this.name = "ProvenanceChanged";
  }

  // ConnectError's own test accepts any ConnectError-shaped value, which would make every one a ProvenanceChanged.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return value instanceof Error && value.name === "ProvenanceChanged";
  }
}

/**
 * Follows an Animate stream: keeps the header, writes each chunk in order through `write` and, at the result,
 * checks the byte count and SHA-256 of everything written. Any break in the contract (a chunk before the
 * header or out of order, a result that does not match) throws a ConnectError with code DataLoss. `provenance`
 * is the provenance key of the server the bytes came from (each stream's first event says it); a stream from a
 * server of another key throws ProvenanceChanged before any of its bytes are written. `erase`, where given, lets
 * the sink start over (`restart`).
 */
export class VideoSink {
  header: VideoHeader | undefined;
  result: AnimateResult | undefined;
  provenance = "";
  private written = 0n;
  private digest = sha256.create();

  constructor(private readonly write: ByteWriter, private readonly erase?: ByteEraser) {}

  /** The bytes written so far. */
  get bytesWritten(): bigint {
    return this.written;
  }

  /** Consume one event; returns the verified result once the final event arrives. */
  async feed(event: AnimateEvent): Promise<AnimateResult | undefined> {
    if (this.result !== undefined) {
      throw dataLoss(`a ${event.case} event after the result`);
    }
    switch (event.case) {
      case "job":
        this.follow(event.value.provenanceKey);
        break;
      case "header":
        this.header = event.value;
        break;
      case "chunk": {
        const { data, offset } = event.value;
        if (this.header === undefined) {
          throw dataLoss("a video chunk before the header");
        }
        if (offset !== this.written) {
          throw dataLoss(`a chunk at offset ${offset}, expected ${this.written}`);
        }
        await this.write(data);
        this.digest.update(data);
        this.written += BigInt(data.length);
        break;
      }
      case "result":
        this.check(event.value);
        this.result = event.value;
        break;
    }
    return this.result;
  }

  /** Empty what was written: the video will be streamed again from its first byte (from any server). */
  async restart(): Promise<void> {
    if (this.erase === undefined) {
      throw new ConnectError("the video must start over, and this sink cannot erase what it wrote", Code.Aborted);
    }
    await this.erase();
    this.written = 0n;
    this.digest = sha256.create();
    this.provenance = "";
    this.header = undefined;
  }

  private follow(provenance: string): void {
    if (provenance && this.provenance && provenance !== this.provenance && this.written > 0n) {
      throw new ProvenanceChanged(`the stream comes from a server of provenance ${provenance}, but the ` +
        `${this.written} bytes received came from one of provenance ${this.provenance}: its bytes may not continue them`);
    }
    this.provenance = provenance || this.provenance;
  }

  /** The verified result; throws DataLoss when the stream ended before it. */
  finish(): AnimateResult {
    if (this.result === undefined) {
      throw dataLoss("the stream ended without a result");
    }
    return this.result;
  }

  private check(result: AnimateResult): void {
    const digest = this.digest.digest();
    if (result.totalBytes !== this.written || !sameBytes(result.sha256, digest)) {
      throw dataLoss(`received ${this.written} bytes (sha256 ${hex(digest)}) but the result says ` +
        `${result.totalBytes} bytes (sha256 ${hex(result.sha256)})`);
    }
  }
}

/** The full MIME type of the header's video, for `MediaSource.isTypeSupported` and `addSourceBuffer`. */
export function mediaType(header: VideoHeader): string {
  return header.codecs ? `${header.mimeType}; codecs="${header.codecs}"` : header.mimeType;
}

// What the server writes at the default size (1024x576): libx264's High profile at level 3.1, and VP9
// profile 0 at level 3.1, 8 bits. A smaller request gets a lower level, which any player of these plays too.
const PLAYABLE = [
  { format: VideoFormat.MP4_H264, type: 'video/mp4; codecs="avc1.64001f"' },
  { format: VideoFormat.WEBM_VP9, type: 'video/webm; codecs="vp09.00.31.08"' },
] as const;

/**
 * The format to request from a player that can tell which types it plays (`MediaSource.isTypeSupported` in a
 * browser): fragmented MP4/H.264 where it plays, else WebM/VP9; undefined when it plays neither.
 */
export function playableFormat(isTypeSupported: (type: string) => boolean): VideoFormat | undefined {
  return PLAYABLE.find(({ type }) => isTypeSupported(type))?.format;
}

function dataLoss(message: string): ConnectError {
  return new ConnectError(message, Code.DataLoss);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}

/** Bytes as lower-case hexadecimal (as `sha256sum` prints a digest). */
export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
