// `cairn register` and `cairn deregister`: an instance in the registry, through the client
// library, which also sends a TTL check's first heartbeat (so the instance starts passing) and,
// with --heartbeat, keeps sending them until Ctrl-C, then deregisters, as a sidecar would.

import { type CheckInput, type RegisterInput, heartbeatIntervalMs } from "../../client/client.js";
import { parseGoDuration } from "../../common/duration.js";
import {
  type Command, EXIT_OK, type ParsedCommand, UsageError, flagSet, flagValue, flagValues, formatJson, integerFlag, requiredFlag, runCommand, untilStopped,
} from "./common.js";

const PORT_MAX = 65_535;

const register: Command = {
  spec: {
    path: "register",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: "Register an instance of a service (or replace the one with its id), with any number of checks.\n" +
      "A TTL check is sent one passing heartbeat; --heartbeat keeps it passing until Ctrl-C, then deregisters the instance.",
    action: "register the instance",
    flags: [
      { name: "--name", value: "SERVICE", help: "the service, a DNS label (required)" },
      { name: "--id", value: "ID", help: "the instance's id (default the service name)" },
      { name: "--address", value: "ADDRESS", help: "where to reach it (default the address of the node that takes the registration)" },
      { name: "--port", value: "PORT", help: "its port" },
      { name: "--tag", value: "TAG", repeat: true, help: "a tag; repeat or comma-separate for several" },
      { name: "--meta", value: "KEY=VALUE", repeat: true, help: "a metadata entry; repeat for several" },
      { name: "--zone", value: "ZONE", help: "its locality (availability zone)" },
      { name: "--ttl", value: "DURATION", help: "add a TTL check the instance must heartbeat within this long, a Go duration (30s)" },
      { name: "--http", value: "URL", help: "add an HTTP check: the leader GETs this URL (2xx passes, 429 warns)" },
      { name: "--tcp", value: "HOST:PORT", help: "add a TCP check: the leader connects" },
      { name: "--grpc", value: "HOST:PORT[/SERVICE]", help: "add a gRPC health check" },
      { name: "--interval", value: "DURATION", help: "how often the leader probes the HTTP, TCP and gRPC checks (default 10s)" },
      { name: "--timeout", value: "DURATION", help: "how long one probe may take (default 10s)" },
      { name: "--deregister-after", value: "DURATION", help: "remove the instance once a check has been critical this long (at least 1m)" },
      { name: "--heartbeat", help: "stay running: heartbeat the TTL check until Ctrl-C, then deregister" },
    ],
    example: "cairn register --name web --id web-1 --address 10.0.0.7 --port 8080 --tag v2 --ttl 30s --heartbeat",
    permission: "service:write on the service",
  },
  async run(ctx) {
    const input = registerInput(ctx.parsed);
    const ttl = flagValue(ctx.parsed, "--ttl");
    const heartbeat = flagSet(ctx.parsed, "--heartbeat");
    if (heartbeat && ttl === undefined) throw new UsageError("--heartbeat keeps a TTL check passing: give --ttl too");
    const registration = await ctx.client().register(input);
    if (!heartbeat) registration.stopHeartbeats();
    if (ctx.global.json) {
      ctx.out(formatJson({ id: registration.id, service: input.name, checkIds: registration.checkIds }));
    } else {
      const checks = registration.checkIds.length === 0 ? "no checks" : `checks ${registration.checkIds.join(", ")}`;
      ctx.out(`registered instance ${registration.id} of service ${input.name} (${checks})\n`);
    }
    if (!heartbeat) {
      if (ttl !== undefined) ctx.note(`its TTL check goes critical unless heartbeated within ${ttl}; --heartbeat keeps it passing\n`);
      return EXIT_OK;
    }
    const ttlMs = parseGoDuration(ttl as string) as number;
    ctx.note(`heartbeating ${registration.ttlCheckIds.join(", ")} about every ${Math.round(heartbeatIntervalMs(ttlMs, () => 0) / 100) / 10}s; Ctrl-C deregisters ${registration.id}\n`);
    await untilStopped();
    await registration.deregister();
    ctx.note(`deregistered ${registration.id}\n`);
    return EXIT_OK;
  },
};

function registerInput(parsed: ParsedCommand): RegisterInput {
  const name = requiredFlag(parsed, "--name", "the service the instance belongs to");
  const meta: Record<string, string> = {};
  for (const entry of parsed.flags.get("--meta") ?? []) {
    const eq = entry.indexOf("=");
    if (eq <= 0) throw new UsageError(`--meta "${entry}" must be KEY=VALUE`);
    meta[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  const interval = flagValue(parsed, "--interval");
  const timeout = flagValue(parsed, "--timeout");
  const deregisterAfter = flagValue(parsed, "--deregister-after");
  const probe = { ...(interval === undefined ? {} : { interval }), ...(timeout === undefined ? {} : { timeout }) };
  const common = deregisterAfter === undefined ? {} : { deregisterCriticalAfter: deregisterAfter };
  const ttl = flagValue(parsed, "--ttl");
  if (ttl !== undefined && parseGoDuration(ttl) === undefined) throw new UsageError(`--ttl "${ttl}" is not a Go duration such as 30s`);
  // The client heartbeats every check with a TTL: the one first, so alone it is service:<id>.
  const checks: CheckInput[] = ttl === undefined ? [] : [{ ttl, ...common }];
  for (const kind of ["http", "tcp", "grpc"] as const) {
    const target = flagValue(parsed, `--${kind}`);
    if (target !== undefined) checks.push({ [kind]: target, ...probe, ...common });
  }
  if ((interval !== undefined || timeout !== undefined) && checks.length === 0) throw new UsageError("--interval and --timeout pace probe checks: give --http, --tcp or --grpc too");
  const port = integerFlag(parsed, "--port", 0, PORT_MAX);
  const id = flagValue(parsed, "--id");
  const address = flagValue(parsed, "--address");
  const zone = flagValue(parsed, "--zone");
  const tags = flagValues(parsed, "--tag");
  return {
    name,
    ...(id === undefined ? {} : { id }),
    ...(address === undefined ? {} : { address }),
    ...(port === undefined ? {} : { port }),
    ...(tags.length === 0 ? {} : { tags }),
    ...(Object.keys(meta).length === 0 ? {} : { meta }),
    ...(zone === undefined ? {} : { zone }),
    checks,
  };
}

const deregister: Command = {
  spec: {
    path: "deregister",
    args: "ID",
    argsMin: 1,
    argsMax: 1,
    summary: "Remove instance ID and its checks from the registry.",
    action: "deregister the instance",
    flags: [],
    example: "cairn deregister web-1",
    permission: "service:write on the instance's service",
    hints: { 404: "cairn instances SERVICE lists the ids of a service's instances" },
  },
  async run(ctx) {
    const [id] = ctx.parsed.positionals;
    await ctx.client().deregister(id);
    if (ctx.global.json) ctx.out(formatJson({ deregistered: id }));
    else ctx.out(`deregistered ${id}\n`);
  },
};

export function runRegister(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runCommand(register, argv, env);
}

export function runDeregister(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runCommand(deregister, argv, env);
}

export const REGISTER_COMMANDS: readonly Command[] = [register, deregister];
