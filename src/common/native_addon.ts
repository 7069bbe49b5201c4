// Loads one of Cairn's native addons (native/<name>, built by `npm run build` through
// native/build) and checks that it exports the functions its wrapper calls.

import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { errorMessage } from "./errors.js";

/** Loads native/<name>'s addon and returns it once every one of `functions` is there; throws with how to build it otherwise. */
export function loadNativeAddon<const F extends string>(name: string, functions: readonly F[]): Record<F, (...args: never[]) => unknown> {
  // From dist/src/common/ to the repository root, where native/ sits beside dist/.
  const path = fileURLToPath(new URL(`../../../native/${name}/build/Release/${name}.node`, import.meta.url));
  let loaded: unknown;
  try {
    loaded = createRequire(import.meta.url)(path);
  } catch (err) {
    throw new Error(`cannot load the native addon ${path} (${errorMessage(err).split("\n")[0]}); build it with \`npm run build\` (it needs a C compiler, make and python3)`, { cause: err });
  }
  const exports = (loaded ?? {}) as Record<string, unknown>;
  const missing = functions.filter((f) => typeof exports[f] !== "function");
  if (missing.length > 0) throw new Error(`${path} does not export ${missing.join(", ")}: rebuild it with \`npm run build\``);
  return exports as Record<F, (...args: never[]) => unknown>;
}
