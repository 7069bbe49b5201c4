// The `cairn` command: `server`, `dev` and `tls` run and prepare nodes; the rest are clients of a
// running cluster, one file per command group under commands/.

import { runAcl } from "./commands/acl.js";
import { runCa } from "./commands/ca.js";
import { runCert } from "./commands/cert.js";
import { runMembers } from "./commands/members.js";
import { runDeregister, runRegister } from "./commands/register.js";
import { runInstances, runServices } from "./commands/services.js";
import { runWatch } from "./commands/watch.js";
import { runSnapshot } from "./snapshot.js";

type ClientCommand = (argv: readonly string[], env: NodeJS.ProcessEnv) => Promise<number>;

/** Commands that talk to a running cluster: each returns its exit code. */
const CLIENT_COMMANDS: Readonly<Record<string, ClientCommand>> = {
  members: runMembers,
  services: runServices,
  instances: runInstances,
  register: runRegister,
  deregister: runDeregister,
  watch: runWatch,
  cert: runCert,
  ca: runCa,
  acl: runAcl,
  snapshot: runSnapshot,
};

const HELP_HEAD = `cairn: a service registry and workload CA

run and prepare nodes:
  server      run one node
  dev         run a local three-node cluster
  tls         make the peer CA and node certificates

talk to a cluster (each takes --help, --addr, --token, --ca-file and --json):
  members     list, add, remove, transfer-leader
  services    list, show
  instances   a service's instances
  register    register an instance (--heartbeat keeps its TTL check passing)
  deregister  remove an instance
  watch       tail registry changes live
  cert        issue, watch (keep svid.pem, svid-key.pem and bundle.pem fresh in a directory)
  ca          roots, rotate
  acl         bootstrap, token create, policy create
  snapshot    save, restore, inspect

"cairn <command> --help" shows a command's flags; docs/cli.md has an example of each.
`;

/**
 * `server`, `dev`, `tls` and the help. Their modules (the whole server) load only here: a client
 * command starts in a fraction of the time.
 */
async function runNodeCommand(command: string | undefined, rest: readonly string[]): Promise<void> {
  const { ConfigError, parseServerConfig, usage } = await import("./config.js");
  try {
    switch (command) {
      case "server": {
        const { runServer } = await import("./server.js");
        await runServer(parseServerConfig(rest));
        break;
      }
      case "dev": {
        const { runDev } = await import("./dev.js");
        await runDev(rest);
        break;
      }
      case "tls": {
        const { runTls } = await import("./tls.js");
        runTls(rest);
        break;
      }
      case undefined:
      case "help":
      case "--help":
      case "-h": {
        const { TLS_USAGE } = await import("./tls.js");
        process.stdout.write(`${HELP_HEAD}\n${usage()}\n${TLS_USAGE}`);
        break;
      }
      default:
        process.stderr.write(`cairn: unknown command "${command}"; "cairn --help" lists the commands\n`);
        process.exit(2);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`cairn: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

const [command, ...rest] = process.argv.slice(2);
const clientCommand = command !== undefined && Object.hasOwn(CLIENT_COMMANDS, command) ? CLIENT_COMMANDS[command] : undefined;
if (clientCommand !== undefined) {
  // Explicitly: a command that is done must not wait on an idle keep-alive socket or a library timer.
  process.exit(await clientCommand(rest, process.env));
}
await runNodeCommand(command, rest);
