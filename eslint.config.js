// Type-aware linting: the rules that catch floating promises and unsafe `any` need the type checker.
import { readdirSync } from "node:fs";
import { join, sep } from "node:path";
import js from "@eslint/js";
import tseslint from "typescript-eslint";

// The layers of ARCHITECTURE.md, held by no-restricted-imports. The rule sees a specifier as it is
// written, so where "../ca/" leads depends on how deep the importing file sits below src/: each
// layer rule is made once per depth, up to the deepest file under src/ (read when the config
// loads, so a new, deeper folder is covered without an edit here). Packages and node: modules are
// not limited by these rules.
const SRC_DEPTH_MAX = Math.max(1, ...readdirSync(join(import.meta.dirname, "src"), { recursive: true })
  .filter((p) => p.endsWith(".ts"))
  .map((p) => p.split(sep).length - 1));

/** Files of src/<folder>, one config per depth; `regexAt` gets the "../" run that climbs back to src/. */
function perDepth(folder, regexAt, message) {
  return Array.from({ length: SRC_DEPTH_MAX }, (_, i) => ({
    files: [`src/${folder}/${"*/".repeat(i)}*.ts`],
    rules: { "no-restricted-imports": ["error", { patterns: [{ regex: regexAt(`(?:\\.\\./){${i + 1}}`), message }] }] },
  }));
}

/** src/<folder> imports, from src/, only itself and `allowed`: anything that climbs to src/ and enters another folder (or climbs out) is refused. */
function importsOnly(folder, allowed, message) {
  return perDepth(folder, (toSrc) => `^${toSrc}(?!(?:${[folder, ...allowed].join("|")})/)`, message);
}

/** src/<folder> imports nothing from the src/ folders in `denied`. */
function importsNone(folder, denied, message) {
  return perDepth(folder, (toSrc) => `^${toSrc}(?:${denied.join("|")})/`, message);
}

/** The replicated state machines; none imports another (the server wires them through an interface the asker declares). */
const STATE_MACHINES = ["registry", "ca", "acl", "intentions"];

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "data/", "eslint.config.js"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": [
        "error",
        // node:test registers tests from these calls; the runner awaits them itself.
        { allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["test", "describe", "it", "suite"] }] },
      ],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      "@typescript-eslint/switch-exhaustiveness-check": ["error", { considerDefaultExhaustiveForUnions: true }],
      eqeqeq: ["error", "always"],
    },
  },
  ...STATE_MACHINES.flatMap((machine) => importsNone(machine, [...STATE_MACHINES.filter((m) => m !== machine), "api", "cli", "client"],
    `src/${machine} is a state machine: it imports no other state machine (the server wires them through an interface the one that asks declares), nor src/api, src/cli or src/client above it.`)),
  ...importsOnly("client", ["common"],
    "src/client is the library a service embeds: it imports only src/client and src/common, and knows the server through the HTTP API's shapes (src/client/types.ts), never its modules."),
  ...importsOnly("common", [], "src/common holds small pieces with no domain: it imports nothing from the other src folders."),
  ...importsOnly("raft", ["common"], "src/raft is below the state machines and the API: it imports only src/raft and src/common."),
  {
    // The web dashboard runs in the browser, which loads its modules as they are (no bundler):
    // it imports only its own files, and knows the server only through the HTTP API.
    files: ["src/ui/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [
        { regex: "^(?!\\./)", message: "src/ui runs in the browser: it imports only src/ui (./...), never packages, node: modules or the server's code." },
      ] }],
    },
  },
  {
    // After the layer rules, so that for src/raft/core this stricter rule is the one that applies.
    // The Raft core is pure: it imports only itself and never reaches for time, randomness or I/O.
    // Time is tick(), randomness is the injected RandomSource; that is what lets a seed replay a run.
    files: ["src/raft/core/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [
        { regex: "^(?!\\./)", message: "src/raft/core imports only src/raft/core (./...): no packages, node: modules or other layers." },
      ] }],
      "no-restricted-globals": ["error",
        ...["setTimeout", "setInterval", "setImmediate", "clearTimeout", "clearInterval", "clearImmediate",
          "queueMicrotask", "process", "performance", "fetch", "require", "Buffer", "crypto"]
          .map((name) => ({ name, message: "the Raft core is pure: time is tick(), I/O belongs to the driver" })),
      ],
      "no-restricted-properties": ["error",
        { object: "Math", property: "random", message: "randomness enters the core only through the injected RandomSource" },
        { object: "Date", property: "now", message: "the core has no clock: time is tick()" },
      ],
      "no-restricted-syntax": ["error",
        { selector: "NewExpression[callee.name='Date']", message: "the core has no clock: time is tick()" },
        { selector: "ImportExpression", message: "the core loads nothing at run time" },
      ],
    },
  },
);
