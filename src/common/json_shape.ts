// Strict decoding of JSON that a replicated format holds (the CA's and the key/value store's
// snapshots): every field of a record is checked against a table of its kinds, and a field the
// table does not name is refused, so a damaged or foreign document raises CodecError naming the
// field instead of becoming a value that is only half right.

import { CodecError } from "./codec.js";

/**
 * What one field may hold. Whole numbers are safe integers >= 0: indexes and milliseconds. An
 * array's items are the caller's to check, with a table of their own.
 */
export type FieldKind = "string" | "string|null" | "whole" | "whole|null" | "boolean" | "array";

/** Every field of T, with its kind. */
export type FieldKinds<T> = { readonly [K in keyof T]-?: FieldKind };

/** Parses `text` as JSON; a syntax error becomes CodecError naming `what`. */
export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new CodecError(`${what} is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export function jsonArray(value: unknown, path: string): readonly unknown[] {
  if (!Array.isArray(value)) throw new CodecError(`${path}: expected an array, got ${kindOf(value)}`);
  return value;
}

export function jsonObject(value: unknown, path: string): Readonly<Record<string, unknown>> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new CodecError(`${path}: expected an object, got ${kindOf(value)}`);
  return value as Readonly<Record<string, unknown>>;
}

/** `value` as a T whose every field has the kind `kinds` gives it, and no other field. */
export function jsonRecord<T>(value: unknown, kinds: FieldKinds<T>, path: string): T {
  const o = jsonObject(value, path);
  for (const key of Object.keys(o)) {
    if (!Object.hasOwn(kinds, key)) throw new CodecError(`${path}.${key}: not a field this build knows`);
  }
  for (const [key, kind] of Object.entries<FieldKind>(kinds)) {
    if (!fits(o[key], kind)) throw new CodecError(`${path}.${key}: expected ${kind}, got ${kindOf(o[key])}`);
  }
  return o as T;
}

function fits(v: unknown, kind: FieldKind): boolean {
  switch (kind) {
    case "string":
      return typeof v === "string";
    case "string|null":
      return v === null || typeof v === "string";
    case "whole":
      return isWhole(v);
    case "whole|null":
      return v === null || isWhole(v);
    case "boolean":
      return typeof v === "boolean";
    case "array":
      return Array.isArray(v);
  }
}

function isWhole(v: unknown): boolean {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function kindOf(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "string" ? "a string" : typeof v === "number" ? `the number ${v}` : typeof v;
}
