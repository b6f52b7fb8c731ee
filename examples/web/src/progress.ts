// How far an animation has come, as a fraction for the progress bar and a line for people.
import { animate } from "@imagewire/client";

const { Stage } = animate;

// The share of the whole each phase ends at: denoising is most of the work; decoding and encoding go together.
const ENDS: Partial<Record<animate.Stage, [number, number]>> = {
  [Stage.ENCODE_IMAGE]: [0, 0.05],
  [Stage.DENOISE]: [0.05, 0.7],
  [Stage.DECODE]: [0.7, 1],
  [Stage.ENCODE_VIDEO]: [0.7, 1],
};

const WORDS: Partial<Record<animate.Stage, string>> = {
  [Stage.ENCODE_IMAGE]: "Reading the image",
  [Stage.DENOISE]: "Denoising",
  [Stage.DECODE]: "Decoding frames",
  [Stage.ENCODE_VIDEO]: "Encoding frames",
};

/** The fraction of the whole generation done (0 to 1) when `progress` arrives: a video of several segments goes
 * through the stages once per segment, each segment an equal share. */
export function fraction(progress: animate.Progress): number {
  const span = ENDS[progress.stage];
  if (span === undefined || progress.total === 0) return 0;
  const [start, end] = span;
  const within = start + (end - start) * Math.min(1, progress.step / progress.total);
  const segments = Math.max(1, progress.segments);
  return (Math.max(1, progress.segment) - 1 + within) / segments;
}

/** A line saying where the generation is. */
export function describe(progress: animate.Progress): string {
  if (progress.stage === Stage.QUEUED) {
    return progress.step === 1 ? "Next in line" : `Waiting: ${progress.step} of ${progress.total} in line`;
  }
  const words = WORDS[progress.stage] ?? "Working";
  const segment = progress.segments > 1 ? `Segment ${progress.segment} of ${progress.segments}: ` : "";
  return segment + (progress.total ? `${words} ${progress.step}/${progress.total}` : words);
}
