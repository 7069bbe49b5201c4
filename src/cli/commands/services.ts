// `cairn services list|show` and `cairn instances`: what the registry holds, read linearizably
// through the client library.

import type { HealthFilter, HealthStatus, Instance } from "../../client/client.js";
import { type Command, CommandError, UsageError, flagValue, formatJson, formatTable, runCommand, runGroup } from "./common.js";

const HEALTH_FILTERS: readonly HealthFilter[] = ["passing", "notCritical", "all"];

const list: Command = {
  spec: {
    path: "services list",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: "List the services your token may read, with their tags and how many instances each has.",
    action: "list the services",
    flags: [],
    example: "cairn services list --json",
    permission: "service:read",
  },
  async run(ctx) {
    const services = await ctx.client().services();
    if (ctx.global.json) ctx.out(formatJson(services));
    else ctx.out(formatTable(["NAME", "INSTANCES", "TAGS"], services.map((s) => [s.name, String(s.instances), s.tags.join(",")])));
  },
};

function countByStatus(instances: readonly Instance[]): Record<HealthStatus, number> {
  const counts: Record<HealthStatus, number> = { passing: 0, warning: 0, critical: 0 };
  for (const i of instances) counts[i.status]++;
  return counts;
}

const show: Command = {
  spec: {
    path: "services show",
    args: "NAME",
    argsMin: 1,
    argsMax: 1,
    summary: "Show one service: its tags, its instances' health, and every check of every instance.",
    action: "show the service",
    flags: [],
    example: "cairn services show web",
  },
  async run(ctx) {
    const [name] = ctx.parsed.positionals;
    const instances = await ctx.client().instances(name, { health: "all" });
    if (instances.length === 0) {
      throw new CommandError(`service ${name} has no instances, or your token may not read it; cairn services list shows the services it may read`);
    }
    const tags = [...new Set(instances.flatMap((i) => i.tags))].sort();
    const counts = countByStatus(instances);
    if (ctx.global.json) {
      ctx.out(formatJson({ name, tags, health: counts, instances }));
      return;
    }
    ctx.out(`service ${name}: ${instances.length} instance(s), ${counts.passing} passing, ${counts.warning} warning, ${counts.critical} critical; tags: ${tags.join(",") || "none"}\n`);
    const rows = instances.flatMap((i) => i.checks.length === 0
      ? [[i.id, `${i.address}:${i.port}`, "-", "-", i.status, ""]]
      : i.checks.map((c) => [i.id, `${i.address}:${i.port}`, c.id, c.kind, c.status, c.output]));
    ctx.out(formatTable(["INSTANCE", "ADDRESS", "CHECK", "KIND", "STATUS", "OUTPUT"], rows));
  },
};

const instances: Command = {
  spec: {
    path: "instances",
    args: "SERVICE",
    argsMin: 1,
    argsMax: 1,
    summary: "List a service's instances: where they are and how healthy.",
    action: "list the instances",
    flags: [{ name: "--health", value: "FILTER", help: "passing (every check passing), notCritical, or all (default)" }],
    example: "cairn instances web --health passing",
  },
  async run(ctx) {
    const [service] = ctx.parsed.positionals;
    const health = flagValue(ctx.parsed, "--health") ?? "all";
    if (!(HEALTH_FILTERS as readonly string[]).includes(health)) throw new UsageError(`--health must be one of ${HEALTH_FILTERS.join(", ")}, not "${health}"`);
    const found = await ctx.client().instances(service, { health: health as HealthFilter });
    if (ctx.global.json) {
      ctx.out(formatJson(found));
      return;
    }
    ctx.out(formatTable(["ID", "ADDRESS", "STATUS", "NODE", "ZONE", "TAGS"],
      found.map((i) => [i.id, `${i.address}:${i.port}`, i.status, i.node, i.zone || "-", i.tags.join(",")])));
  },
};

export const SERVICES_COMMANDS: readonly Command[] = [list, show];
export const INSTANCES_COMMAND: Command = instances;

export function runServices(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runGroup("services", "The services in the registry.", SERVICES_COMMANDS, argv, env);
}

export function runInstances(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runCommand(instances, argv, env);
}
