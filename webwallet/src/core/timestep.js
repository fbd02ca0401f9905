// Time steps (docs/spec.md §2): step = floor(unix_seconds / 30). Time is always a parameter;
// the wallet passes its own clock plus the offset it learned from the server (§9).
import { invalidArgument } from './errors.js';

export const STEP_SECONDS = 30;

/** The step that contains `unixSeconds` (a finite, non-negative number of seconds). */
export function stepOf(unixSeconds) {
  if (typeof unixSeconds !== 'number' || !Number.isFinite(unixSeconds) || unixSeconds < 0) {
    throw invalidArgument('time must be a finite, non-negative number of Unix seconds');
  }
  return Math.floor(unixSeconds / STEP_SECONDS);
}

/** First second of `step`. */
export function stepStartS(step) {
  return step * STEP_SECONDS;
}

/** How long a code made at `unixSeconds` keeps showing before the wallet refreshes it. */
export function secondsLeftInStep(unixSeconds) {
  return STEP_SECONDS - (unixSeconds - stepOf(unixSeconds) * STEP_SECONDS);
}
