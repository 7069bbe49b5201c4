// `cairn snapshot ...` as its own process, for tests: the command's module run as bin/cairn runs
// it, with the process's arguments and environment, exiting with its code.

import { runSnapshot } from "../../src/cli/snapshot.js";

process.exitCode = await runSnapshot(process.argv.slice(2), process.env);
