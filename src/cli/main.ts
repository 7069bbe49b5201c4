// The `cairn` command.

import { ConfigError, parseServerConfig, usage } from "./config.js";
import { runDev } from "./dev.js";
import { runServer } from "./server.js";
import { TLS_USAGE, runTls } from "./tls.js";

const [command, ...rest] = process.argv.slice(2);

try {
  switch (command) {
    case "server":
      await runServer(parseServerConfig(rest));
      break;
    case "dev":
      await runDev(rest);
      break;
    case "tls":
      runTls(rest);
      break;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`cairn: a service registry and workload CA\n\ncommands:\n  server   run one node\n  dev      run a local three-node cluster\n  tls      make the peer CA and node certificates\n\n${usage()}\n${TLS_USAGE}`);
      break;
    default:
      process.stderr.write(`cairn: unknown command "${command}"; try "cairn server", "cairn dev" or "cairn tls"\n`);
      process.exit(2);
  }
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`cairn: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
