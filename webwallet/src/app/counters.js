// Which counter a new code uses (docs/spec.md §2, §9): counters per time step, persisted
// before the code is shown; the last STEPS_KEPT steps are remembered and everything older is
// below a floor, so a clock stepping back can never repeat a (step, counter). Pure: the caller
// stores the returned state in the same write as nothing else, before showing the code.
export const STEPS_KEPT = 8;

export class CounterExhausted extends Error {
  constructor(reason, retryAfterS) {
    super(`${reason}; next in ${Math.ceil(retryAfterS)} s`);
    this.code = 'counter_exhausted';
    this.reason = reason; // 'used' | 'behind'
    this.retryAfterS = retryAfterS;
  }
}

/** state = {counters: {step: nextCounter}, floor: step or -1}; returns {counter, state}. */
export function claimCounter(state, step, counterMax, stepSeconds, deviceNowS) {
  if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`bad step ${step}`);
  const counters = { ...(state.counters || {}) };
  let floor = Number.isInteger(state.floor) ? state.floor : -1;
  if (step <= floor) {
    throw new CounterExhausted('behind', (floor + 1) * stepSeconds - deviceNowS);
  }
  const counter = counters[step] ?? 0;
  if (counter > counterMax) {
    throw new CounterExhausted('used', (step + 1) * stepSeconds - deviceNowS);
  }
  counters[step] = counter + 1;
  const steps = Object.keys(counters).map(Number).sort((a, b) => a - b);
  for (const old of steps.slice(0, Math.max(0, steps.length - STEPS_KEPT))) {
    floor = Math.max(floor, old);
    delete counters[old];
  }
  return { counter, state: { counters, floor } };
}

/** A state read back from storage is believed only when it has this exact shape. */
export function validCounterState(state) {
  if (!state || typeof state !== 'object' || !Number.isInteger(state.floor)) return false;
  if (!state.counters || typeof state.counters !== 'object') return false;
  return Object.entries(state.counters).every(([step, next]) => /^\d+$/.test(step) && Number.isInteger(next) && next >= 0);
}
