// When to renew a certificate. Each holder renews at a random point of a window of the lifetime
// its certificate had left when it got it, so certificates issued together (a fleet that started
// together, every leaf after a root rotation) are not all renewed together.

/** Renew once between fractionMin and fractionMax of the lifetime left at issue has passed: 0 < fractionMin <= fractionMax < 1. */
export interface RenewalWindow {
  readonly fractionMin: number;
  readonly fractionMax: number;
}

/** SPIRE's form: `fraction` of the lifetime, ± `jitterFraction` of that (0.5 ± 0.1 renews between 45% and 55%). */
export function renewalWindowAround(fraction: number, jitterFraction: number): RenewalWindow {
  return { fractionMin: fraction * (1 - jitterFraction), fractionMax: fraction * (1 + jitterFraction) };
}

/**
 * When to renew a certificate that is valid until notAfterMs and was received at nowMs: a point
 * drawn uniformly from `window` by `random01`, in [0, 1). One already expired is due at once.
 */
export function renewalAtMs(nowMs: number, notAfterMs: number, window: RenewalWindow, random01: number): number {
  const fraction = window.fractionMin + (window.fractionMax - window.fractionMin) * random01;
  return nowMs + Math.max(0, notAfterMs - nowMs) * fraction;
}
