// Type-aware linting: the rules that catch floating promises and unsafe `any` need the type checker.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

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
  {
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
