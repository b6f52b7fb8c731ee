// The page: pick an image and see its caption; press Animate and watch the video play while it is generated.
// It talks gRPC-Web to the base URL in the "API" field (from ?api=..., else this page's own origin, for a page
// served by the proxy itself). Other query parameters named after AnimateRequest fields (num_frames=8, seed=7)
// are sent with every animation; the page's Segments and Smoother motion fields set segments and interpolate (a
// query parameter of the same name fills the field).
import {
  animate, animateEvents, callFailure, clients, fromJson, mediaType, playableFormat, textFields, VideoSink,
} from "@imagewire/client";
import { webTransport } from "@imagewire/client/web";
import { describe, fraction } from "./progress.js";
import { StreamingPlayer } from "./player.js";

const CAPTION_TIMEOUT_MS = 60_000;
const ANIMATE_TIMEOUT_MS = 900_000;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found as T;
}

const ui = {
  api: element<HTMLInputElement>("api"),
  image: element<HTMLInputElement>("image"),
  preview: element<HTMLImageElement>("preview"),
  caption: element<HTMLElement>("caption"),
  segments: element<HTMLInputElement>("segments"),
  interpolate: element<HTMLSelectElement>("interpolate"),
  animate: element<HTMLButtonElement>("animate"),
  progress: element<HTMLProgressElement>("progress"),
  status: element<HTMLElement>("status"),
  video: element<HTMLVideoElement>("video"),
  error: element<HTMLElement>("error"),
};
const player = new StreamingPlayer(ui.video);
const query = new URLSearchParams(location.search);
const requestFields = textFields([...query].filter(([name]) => name !== "api"));
let image: Uint8Array | undefined;

ui.api.value = query.get("api") ?? location.origin;
ui.segments.value = query.get("segments") ?? ui.segments.value;
ui.interpolate.value = query.get("interpolate") ?? ui.interpolate.value;

/** The request fields the page's own inputs set. */
function formFields(): { segments: number; interpolate: number } {
  return { segments: Number(ui.segments.value) || 1, interpolate: Number(ui.interpolate.value) || 1 };
}

/** What a person should read about a failed call. */
function explain(error: unknown): string {
  const failure = callFailure(error);
  // fetch itself failed: nothing answered at that address (or the browser refused the cross-origin call).
  if (failure.error.cause instanceof TypeError) {
    return `Cannot reach the server at ${ui.api.value}: is it running, and does it allow this page's origin?`;
  }
  switch (failure.status) {
    case "INVALID_ARGUMENT":
      return `The server refused the request: ${failure.message}`;
    case "RESOURCE_EXHAUSTED":
      return `The server is busy: ${failure.message}. Try again in a moment.`;
    case "UNAVAILABLE":
      return `The service is unavailable: ${failure.message}. Try again in a moment.`;
    case "DEADLINE_EXCEEDED":
      return "The server took too long.";
    default:
      return `${failure.status}: ${failure.message}`;
  }
}

function showError(error: unknown): void {
  ui.error.textContent = explain(error);
  ui.error.hidden = false;
}

function api() {
  return clients(webTransport(ui.api.value));
}

async function captionImage(): Promise<void> {
  const file = ui.image.files?.[0];
  if (file === undefined) return;
  ui.error.hidden = true;
  ui.preview.src = URL.createObjectURL(file);
  image = new Uint8Array(await file.arrayBuffer());
  // Picking the same file again (after changing the API, say) captions it again.
  ui.image.value = "";
  ui.animate.disabled = false;
  ui.caption.textContent = "Captioning…";
  document.body.dataset.caption = "pending";
  try {
    const response = await api().caption.caption({ image }, { timeoutMs: CAPTION_TIMEOUT_MS });
    ui.caption.textContent = response.text;
    document.body.dataset.caption = "done";
  } catch (error) {
    ui.caption.textContent = "";
    showError(error);
    document.body.dataset.caption = "error";
  }
}

/** A generation preview (an animated image of the video so far) as the video's poster, until frames play; none
 * clears it. The page counts them in data-previews. */
function showPreview(preview: animate.Preview | undefined): void {
  if (ui.video.poster) URL.revokeObjectURL(ui.video.poster);
  ui.video.removeAttribute("poster");
  if (preview === undefined) {
    document.body.dataset.previews = "0";
    return;
  }
  ui.video.poster = URL.createObjectURL(new Blob([preview.image.slice()], { type: preview.mimeType }));
  document.body.dataset.previews = String(Number(document.body.dataset.previews ?? "0") + 1);
}

async function animateImage(): Promise<void> {
  if (image === undefined) return;
  const format = playableFormat((type) => typeof MediaSource !== "undefined" && MediaSource.isTypeSupported(type));
  ui.error.hidden = true;
  ui.animate.disabled = true;
  ui.progress.value = 0;
  ui.status.textContent = "Starting";
  player.reset(); // the last run's video and previews go before this one's first bytes arrive
  showPreview(undefined);
  document.body.dataset.animation = "running";
  const sink = new VideoSink((bytes) => player.append(bytes));
  try {
    const request = {
      ...fromJson(animate.AnimateRequestSchema, requestFields), ...formFields(), image, format: format ?? 0,
    };
    const stream = api().animate.animate(request, { timeoutMs: ANIMATE_TIMEOUT_MS });
    for await (const event of animateEvents(stream)) {
      if (event.case === "header") await player.open(mediaType(event.value));
      if (event.case === "preview") showPreview(event.value);
      if (event.case === "progress") {
        ui.progress.value = fraction(event.value);
        ui.status.textContent = describe(event.value);
      }
      await sink.feed(event);
    }
    const result = sink.finish();
    await player.end(sink.header?.mimeType ?? "");
    ui.progress.value = 1;
    const header = sink.header;
    ui.status.textContent = `Done: ${header?.numFrames} frames of ${header && mediaType(header)} ` +
      `at ${header?.fps} fps, ` +
      `${result.totalBytes} bytes, seed ${result.seed}` +
      (player.progressive ? "" : " (this browser plays it only once complete)");
    document.body.dataset.animation = "done";
  } catch (error) {
    player.reset();
    ui.status.textContent = "";
    showError(error);
    document.body.dataset.animation = "error";
  } finally {
    ui.animate.disabled = false;
  }
}

ui.image.addEventListener("change", () => void captionImage());
ui.animate.addEventListener("click", () => void animateImage());
// The test (and a curious reader) can tell the page is wired up.
document.body.dataset.ready = "true";
