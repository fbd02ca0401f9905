// What a payment PIN must be (shared/paycode/shared/credentials.py, the same rule): 6 digits,
// not one repeated, not a run up or down, not a short pattern repeated, not a common shape.
export const PIN_DIGITS = 6;
const COMMON_PINS = new Set(['112233', '123321', '147258', '159753', '258369', '369258', '147852', '520520', '131420']);

/** 'format' | 'run' | 'common' | null (acceptable). */
export function pinProblem(pin) {
  if (typeof pin !== 'string' || !/^[0-9]{6}$/.test(pin)) return 'format';
  const steps = new Set();
  for (let i = 1; i < pin.length; i++) steps.add((Number(pin[i]) - Number(pin[i - 1]) + 10) % 10);
  if (steps.size === 1 && (steps.has(0) || steps.has(1) || steps.has(9))) return 'run';
  if (pin.slice(0, 2).repeat(3) === pin || pin.slice(0, 3).repeat(2) === pin || COMMON_PINS.has(pin)) return 'common';
  return null;
}
