/**
 * Small seeded pseudo-random numbers, so that a simulation is reproducible from its seed.
 * mulberry32: 32 bits of state, fast, and good enough for device noise (not for anything secret).
 */

/** A source of uniform numbers in [0, 1). */
export type Random = () => number;

/** mulberry32 seeded with the low 32 bits of `seed`. */
export function mulberry32(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/**
 * A seed for an independent stream derived from `seed` and `stream` (a device index, say), so that
 * one device's numbers do not depend on how many other devices there are or how they interleave.
 */
export function deriveSeed(seed: number, stream: number): number {
  // splitmix32-style mixing of the pair.
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul((stream + 1) >>> 0, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** Uniform in [min, max). */
export const uniform = (rng: Random, min: number, max: number): number => min + (max - min) * rng();

/** Uniform integer in [min, max]. */
export const integer = (rng: Random, min: number, max: number): number =>
  min + Math.floor(rng() * (max - min + 1));

/** True with probability `p`. */
export const chance = (rng: Random, p: number): boolean => rng() < p;

/** One element of a non-empty list. */
export const pick = <T>(rng: Random, items: readonly T[]): T => items[Math.floor(rng() * items.length)] as T;

/** Roughly normal noise with mean 0 and standard deviation `sd` (sum of uniforms). */
export const noise = (rng: Random, sd: number): number => (rng() + rng() + rng() - 1.5) * 2 * sd;

/** Round to `digits` decimals, as a device would after applying a SunSpec scale factor. */
export const round = (value: number, digits: number): number => {
  const f = 10 ** digits;
  const r = Math.round(value * f) / f;
  return Object.is(r, -0) ? 0 : r;
};
