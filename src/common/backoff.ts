// Retry delays with jitter, for every loop in Cairn that retries: peer reconnects, client
// requests, watches and certificate renewals.

/**
 * Equal jitter: before retry n (1 for the first), wait a delay in [c/2, c), where
 * c = min(maxMs, baseMs * 2^(n-1)). Half is fixed, so retries never bunch at zero; half is random,
 * so many clients that failed together do not retry together.
 */
export function backoffDelayMs(retry: number, baseMs: number, maxMs: number, random: () => number): number {
  // The exponent is capped so that a long outage cannot overflow the ceiling into Infinity.
  const ceilingMs = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, retry - 1), 30));
  return ceilingMs / 2 + random() * (ceilingMs / 2);
}
