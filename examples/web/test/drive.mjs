// Drives the page in Debian's Chromium (playwright-core, no browser download) for tests/test_web_page.py: one
// JSON command per line on stdin, one JSON reply per line on stdout, so the Python test decides when the
// servers move on and checks what a person would see.
//
//   {"do": "open", "url": U}          load the page and wait until it is wired up ("without": a MIME type
//                                     prefix the browser is to claim it cannot play)
//   {"do": "api", "url": U}           type a base URL into the API field
//   {"do": "pick", "path": P}         choose an image; replies once its caption (or an error) shows
//   {"do": "animate"}                 press Animate; replies once the video shows a decoded frame, or the run ended
//   {"do": "finish", "frames": N}     replies once the run ended and, if it succeeded, N frames were decoded
//   {"do": "screenshot", "path": P}   a PNG of the page as it is
//   {"do": "close"}
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const BROWSER = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TIMEOUT_MS = Number(process.env.DRIVE_TIMEOUT_MS ?? 60_000);
// The machine has no network but loopback: no background connections, updates, sync or QUIC probes.
const ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage"];

const browser = await chromium.launch({ executablePath: BROWSER, headless: true, args: ARGS, timeout: TIMEOUT_MS });
const page = await browser.newPage({ viewport: { width: 1000, height: 760 } });
page.setDefaultTimeout(TIMEOUT_MS);
// Uncaught exceptions in the page: the test requires none (errors must be shown on the page instead).
const pageErrors = [];
page.on("pageerror", (error) => pageErrors.push(String(error)));

/** What a person sees, plus the video's decoded-frame count. */
function snapshot() {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id)?.textContent ?? "";
    const video = document.getElementById("video");
    const error = document.getElementById("error");
    return {
      caption: text("caption"),
      captionState: document.body.dataset.caption ?? "",
      animation: document.body.dataset.animation ?? "",
      status: text("status"),
      progress: document.getElementById("progress").value,
      error: error.hidden ? "" : error.textContent,
      frames: video.getVideoPlaybackQuality().totalVideoFrames,
      previews: Number(document.body.dataset.previews ?? 0),
      ended: video.ended,
    };
  });
}

const ended = "document.body.dataset.animation === 'done' || document.body.dataset.animation === 'error'";
const commands = {
  async open({ url, without }) {
    if (without) {
      // Stands in for a browser that cannot play `without` (a Chromium built without H.264, say).
      await page.addInitScript((type) => {
        const plays = MediaSource.isTypeSupported.bind(MediaSource);
        MediaSource.isTypeSupported = (asked) => !asked.startsWith(type) && plays(asked);
      }, without);
    }
    await page.goto(url);
    await page.waitForSelector("body[data-ready=true]");
  },
  async api({ url }) {
    await page.fill("#api", url);
  },
  async pick({ path }) {
    await page.evaluate(() => delete document.body.dataset.caption);
    await page.setInputFiles("#image", path);
    await page.waitForFunction("['done', 'error'].includes(document.body.dataset.caption)");
  },
  async animate() {
    await page.evaluate(() => delete document.body.dataset.animation);
    await page.click("#animate");
    await page.waitForFunction(
      `document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames > 0 || ${ended}`);
  },
  async finish({ frames }) {
    await page.waitForFunction(ended);
    if (await page.evaluate(() => document.body.dataset.animation === "done")) {
      await page.waitForFunction(
        (n) => document.getElementById("video").getVideoPlaybackQuality().totalVideoFrames >= n, frames);
    }
  },
  async screenshot({ path }) {
    await page.screenshot({ path });
  },
};

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.do === "close") break;
  let reply;
  try {
    await commands[command.do](command);
    reply = { ok: true, ...(await snapshot()), pageErrors };
  } catch (error) {
    reply = { ok: false, failure: String(error), ...(await snapshot().catch(() => ({}))), pageErrors };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
}
await browser.close();
