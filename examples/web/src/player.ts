// Plays a video while its bytes arrive: Media Source Extensions, one SourceBuffer fed chunk by chunk. Where the
// browser cannot play the exact type progressively, the bytes are kept and played as one file at the end.

/** Resolves at the next `name` event of `target`; rejects at its next "error" event. */
function next(target: EventTarget, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (event: Event): void => {
      target.removeEventListener(name, done);
      target.removeEventListener("error", done);
      if (event.type === "error") reject(new Error(`the media pipeline failed (${name})`));
      else resolve();
    };
    target.addEventListener(name, done);
    target.addEventListener("error", done);
  });
}

export class StreamingPlayer {
  private source: MediaSource | undefined;
  private buffer: SourceBuffer | undefined;
  private readonly kept: Uint8Array[] = [];
  private url = "";
  private started = false;
  /** Whether the video plays while it streams (MSE), rather than once complete. */
  progressive = false;

  constructor(private readonly video: HTMLVideoElement) {}

  /** Prepare for a video of `type` (a MIME type with its RFC 6381 codecs). */
  async open(type: string): Promise<void> {
    this.reset();
    this.progressive = typeof MediaSource !== "undefined" && MediaSource.isTypeSupported(type);
    if (!this.progressive) return;
    const source = new MediaSource();
    this.source = source;
    this.url = URL.createObjectURL(source);
    this.video.src = this.url;
    await next(source, "sourceopen");
    this.buffer = source.addSourceBuffer(type);
  }

  /** Add the next bytes of the file; resolves once the browser has taken them (so a slow decoder slows the
   * reader, and through gRPC flow control, the server). */
  async append(bytes: Uint8Array): Promise<void> {
    if (this.buffer === undefined) {
      this.kept.push(bytes);
      return;
    }
    const appended = next(this.buffer, "updateend");
    // A copy that owns its own ArrayBuffer: appendBuffer takes a BufferSource, not a view of a shared one.
    this.buffer.appendBuffer(bytes.slice());
    await appended;
    if (!this.started) {
      this.started = true;
      // Muted autoplay is allowed; a refusal only means the user presses play.
      this.video.play().catch(() => undefined);
    }
  }

  /** The file is complete. */
  async end(mimeType: string): Promise<void> {
    if (this.source !== undefined && this.source.readyState === "open") {
      this.source.endOfStream();
      return;
    }
    if (!this.progressive) {
      this.url = URL.createObjectURL(new Blob(this.kept as BlobPart[], { type: mimeType }));
      this.video.src = this.url;
      this.video.play().catch(() => undefined);
    }
  }

  /** Forget the current video. */
  reset(): void {
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = "";
    this.started = false;
    this.source = undefined;
    this.buffer = undefined;
    this.kept.length = 0;
    this.video.removeAttribute("src");
    this.video.load();
  }
}
