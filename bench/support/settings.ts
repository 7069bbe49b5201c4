// What every benchmark reads its settings with, and how it summarises repeated rounds.

/** A whole-number setting from the environment, bounded; a bad value stops the run and says what to give. */
export function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  const v = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name}=${raw}: give a whole number from ${min} to ${max}`);
  return v;
}

/** One of `choices` from the environment; the first is the default. */
export function envChoice<T extends string>(name: string, choices: readonly T[]): T {
  const v = process.env[name] ?? choices[0];
  if (!choices.includes(v as T)) throw new RangeError(`${name}=${v}: give one of ${choices.join(", ")}`);
  return v as T;
}

/** The median (the mean of the middle two for an even count); the machine is noisy, so rounds are summarised by it. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
