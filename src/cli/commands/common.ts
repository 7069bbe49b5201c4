// What every client command of `cairn` shares: the global flags (--addr, --token, --token-file,
// --ca-file, --json, --help) and their environment variables, flag parsing, the client they make,
// output (tables for people, JSON for scripts), and the one place that turns a failure into
// "cairn: could not <what> (HTTP 403: Permission denied ...); <what to do>" and an exit code.
//
// Exit codes: 0 done, 1 the command failed (the cluster refused or could not be reached), 2 the
// command line was wrong (its help follows the message).

import { readFileSync } from "node:fs";
import { CairnClient, CairnProtocolError, CairnRequestError, CairnUnavailableError } from "../../client/client.js";
import { normalizeEndpoints } from "../../client/transport.js";
import { errorMessage } from "../../common/errors.js";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Where a command goes when neither --addr nor CAIRN_HTTP_ADDR says: node1 of `cairn dev`. */
export const DEFAULT_ADDR = "127.0.0.1:8501";

/** Bounds how many arguments one command reads: none has a use for thousands. */
const ARGS_MAX = 1024;
/** A token or CA file larger than this is not one. */
const CREDENTIAL_FILE_BYTES_MAX = 1024 * 1024;
/** Request attempts across the nodes given: a few, so a dead --addr is reported in well under a second. */
const ATTEMPTS_PER_NODE = 2;
const ATTEMPTS_MIN = 3;

/** The command line was wrong: exit 2, with the command's help. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The command failed for a reason it states in full (what was wrong and what to do): exit 1. */
export class CommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CommandError";
  }
}

export interface FlagSpec {
  /** With its dashes: "--name". */
  readonly name: string;
  /** The value's placeholder in help ("NAME"); absent for a switch. */
  readonly value?: string;
  /** May be given more than once (each adds a value); a comma-separated list adds several. */
  readonly repeat?: true;
  readonly help: string;
}

export interface CommandSpec {
  /** The words after `cairn`: "members list". */
  readonly path: string;
  /** Positional arguments as help shows them: "ID PEER_ADDRESS". */
  readonly args: string;
  readonly argsMin: number;
  readonly argsMax: number;
  readonly summary: string;
  /** Finishes "cairn: could not ...": "list the cluster's members". */
  readonly action: string;
  readonly flags: readonly FlagSpec[];
  /** Shown in help and docs/cli.md. */
  readonly example: string;
  /** The ACL permission the command needs, for the advice on a 403: "operator:read". */
  readonly permission?: string;
  /** Advice by HTTP status, where this command knows better than the general advice. */
  readonly hints?: Readonly<Partial<Record<number, string>>>;
}

export const GLOBAL_FLAGS: readonly FlagSpec[] = [
  { name: "--addr", value: "ADDR", help: `a node's HTTP address, HOST:PORT or an http(s):// URL; several, comma separated, to fail over (env CAIRN_HTTP_ADDR; default ${DEFAULT_ADDR})` },
  { name: "--token", value: "SECRET", help: "ACL token (env CAIRN_TOKEN)" },
  { name: "--token-file", value: "FILE", help: "file holding the ACL token (env CAIRN_TOKEN_FILE), such as cairn dev's data/bootstrap-token" },
  { name: "--ca-file", value: "FILE", help: "PEM CA that signed the nodes' HTTPS certificates (env CAIRN_CACERT)" },
  { name: "--json", help: "print JSON for scripts instead of tables" },
  { name: "--help", help: "show this help" },
];

export interface GlobalOptions {
  readonly endpoints: readonly string[];
  readonly token: string | undefined;
  /** Where the token came from, for advice: "--token", "CAIRN_TOKEN", ... */
  readonly tokenSource: string | undefined;
  readonly caPem: string | undefined;
  readonly json: boolean;
}

export interface ParsedCommand {
  readonly positionals: readonly string[];
  /** Every value of a flag, by name with its dashes; a switch holds "true". */
  readonly flags: ReadonlyMap<string, readonly string[]>;
}

export interface CommandContext {
  readonly global: GlobalOptions;
  readonly parsed: ParsedCommand;
  /** The client, made on first use (a command that fails its checks first never makes one). */
  client(): CairnClient;
  /** stdout, for results. */
  out(text: string): void;
  /** stderr, for progress and diagnostics that a script piping stdout must not receive. */
  note(text: string): void;
}

export type CommandAction = (ctx: CommandContext) => Promise<number | void>;

export interface Command {
  readonly spec: CommandSpec;
  readonly run: CommandAction;
}

// ---------------------------------------------------------------- flags

/** One flag's value, when given (the last one wins). */
export function flagValue(parsed: ParsedCommand, name: string): string | undefined {
  const values = parsed.flags.get(name);
  return values === undefined ? undefined : values[values.length - 1];
}

export function flagValues(parsed: ParsedCommand, name: string): string[] {
  return (parsed.flags.get(name) ?? []).flatMap((v) => v.split(",")).map((v) => v.trim()).filter((v) => v !== "");
}

export function flagSet(parsed: ParsedCommand, name: string): boolean {
  return parsed.flags.has(name);
}

export function requiredFlag(parsed: ParsedCommand, name: string, why: string): string {
  const value = flagValue(parsed, name);
  if (value === undefined || value === "") throw new UsageError(`${name} is required: ${why}`);
  return value;
}

/** A whole number in [min, max], or a usage error naming the flag. */
export function integerFlag(parsed: ParsedCommand, name: string, min: number, max: number): number | undefined {
  const text = flagValue(parsed, name);
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${name} must be a whole number from ${min} to ${max}, not "${text}"`);
  return n;
}

/**
 * Flags as `--name value` or `--name=value`, switches as `--name`, anything else positional; `--`
 * ends the flags. A flag the command does not take is a usage error.
 */
export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[]): ParsedCommand {
  if (argv.length > ARGS_MAX) throw new UsageError(`at most ${ARGS_MAX} arguments`);
  const byName = new Map(specs.map((s) => [s.name, s]));
  const positionals: string[] = [];
  const flags = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === "-h") {
      flags.set("--help", ["true"]);
      continue;
    }
    if (!arg.startsWith("--")) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const spec = byName.get(name);
    if (spec === undefined) throw new UsageError(`unknown flag ${name}`);
    let value: string;
    if (spec.value === undefined) {
      if (eq > 0) throw new UsageError(`${name} is a switch and takes no value; give it alone`);
      value = "true";
    } else if (eq > 0) {
      value = arg.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith("--") && next.length > 2)) throw new UsageError(`${name} needs a value: ${name} ${spec.value}`);
      value = next;
      i++;
    }
    const values = flags.get(name) ?? [];
    if (spec.repeat === undefined && values.length > 0) throw new UsageError(`${name} was given twice; give it once`);
    values.push(value);
    flags.set(name, values);
  }
  return { positionals, flags };
}

/** Turns an address as a user writes it (HOST:PORT, or an http(s):// base URL) into a base URL. */
export function endpointOf(addr: string, source: string): string {
  const trimmed = addr.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
  try {
    return normalizeEndpoints([withScheme])[0];
  } catch (err) {
    throw new UsageError(`${source} "${addr}" is not a node address: ${errorMessage(err).replace(/^endpoints: /, "")}; give HOST:PORT or http(s)://HOST:PORT`);
  }
}

function readCredentialFile(path: string, source: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UsageError(`${source} ${path}: cannot read the ${what}: ${errorMessage(err)}`);
  }
  if (text.length > CREDENTIAL_FILE_BYTES_MAX) throw new UsageError(`${source} ${path}: ${text.length} bytes is too large for a ${what}`);
  return text;
}

/** The global flags, each from its flag, else its environment variable, else its default. */
export function resolveGlobals(parsed: ParsedCommand, env: NodeJS.ProcessEnv): GlobalOptions {
  const fromEnv = (name: string): string | undefined => (env[name] === undefined || env[name] === "" ? undefined : env[name]);
  const addrFlag = flagValue(parsed, "--addr");
  const addrSource = addrFlag !== undefined ? "--addr" : fromEnv("CAIRN_HTTP_ADDR") !== undefined ? "CAIRN_HTTP_ADDR" : "the default address";
  const addr = addrFlag ?? fromEnv("CAIRN_HTTP_ADDR") ?? DEFAULT_ADDR;
  const endpoints = addr.split(",").filter((a) => a.trim() !== "").map((a) => endpointOf(a, addrSource));
  if (endpoints.length === 0) throw new UsageError(`${addrSource} is empty: give a node's address, such as ${DEFAULT_ADDR}`);

  const tokenFlag = flagValue(parsed, "--token");
  const tokenFileFlag = flagValue(parsed, "--token-file");
  if (tokenFlag !== undefined && tokenFileFlag !== undefined) throw new UsageError("give --token or --token-file, not both");
  let token: string | undefined;
  let tokenSource: string | undefined;
  if (tokenFlag !== undefined) [token, tokenSource] = [tokenFlag, "--token"];
  else if (tokenFileFlag !== undefined) [token, tokenSource] = [readCredentialFile(tokenFileFlag, "--token-file", "token"), `--token-file ${tokenFileFlag}`];
  else if (fromEnv("CAIRN_TOKEN") !== undefined) [token, tokenSource] = [fromEnv("CAIRN_TOKEN"), "CAIRN_TOKEN"];
  else if (fromEnv("CAIRN_TOKEN_FILE") !== undefined) {
    const file = fromEnv("CAIRN_TOKEN_FILE") as string;
    [token, tokenSource] = [readCredentialFile(file, "CAIRN_TOKEN_FILE", "token"), `CAIRN_TOKEN_FILE ${file}`];
  }
  token = token?.trim();
  if (token !== undefined && /[\r\n]/.test(token)) throw new UsageError(`the token from ${tokenSource} spans several lines; a token is one line`);

  const caFlag = flagValue(parsed, "--ca-file");
  const caPath = caFlag ?? fromEnv("CAIRN_CACERT");
  const caSource = caFlag !== undefined ? "--ca-file" : "CAIRN_CACERT";
  const caPem = caPath === undefined ? undefined : readCredentialFile(caPath, caSource, "CA certificate");
  if (caPem !== undefined && !caPem.includes("-----BEGIN CERTIFICATE-----")) throw new UsageError(`${caSource} ${caPath} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);

  return { endpoints, token: token === "" ? undefined : token, tokenSource, caPem, json: flagSet(parsed, "--json") };
}

export function makeClient(global: GlobalOptions): CairnClient {
  return new CairnClient({
    endpoints: global.endpoints,
    ...(global.token === undefined ? {} : { token: global.token }),
    ...(global.caPem === undefined ? {} : { tls: { ca: global.caPem } }),
    attemptsMax: Math.max(ATTEMPTS_MIN, global.endpoints.length * ATTEMPTS_PER_NODE),
  });
}

// ---------------------------------------------------------------- output

/** Columns padded to their widest cell, two spaces apart, as kubectl and consul print them. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

export function formatJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Key: value lines, the keys aligned, as `consul acl token read` prints a token. */
export function formatFields(entries: readonly (readonly [string, string])[]): string {
  const width = Math.max(...entries.map(([k]) => k.length)) + 1;
  return entries.map(([k, v]) => `${`${k}:`.padEnd(width)} ${v}`).join("\n") + "\n";
}

// ---------------------------------------------------------------- help

function flagLines(flags: readonly FlagSpec[]): string {
  const names = flags.map((f) => `${f.name}${f.value === undefined ? "" : ` ${f.value}`}${f.repeat === undefined ? "" : " ..."}`);
  const width = Math.max(...names.map((n) => n.length));
  return flags.map((f, i) => `  ${names[i].padEnd(width)}  ${f.help}`).join("\n");
}

export function commandHelp(spec: CommandSpec): string {
  const own = spec.flags.length === 0 ? "" : `\nflags:\n${flagLines(spec.flags)}\n`;
  return `usage: cairn ${spec.path}${spec.args === "" ? "" : ` ${spec.args}`}${spec.flags.length === 0 ? "" : " [flags]"}\n\n${spec.summary}\n${own}` +
    `\nglobal flags:\n${flagLines(GLOBAL_FLAGS)}\n\nexample:\n  ${spec.example.split("\n").join("\n  ")}\n`;
}

export function groupHelp(group: string, summary: string, commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => c.spec.path.length));
  return `usage: cairn ${group} <command> [flags]\n\n${summary}\n\ncommands:\n` +
    commands.map((c) => `  cairn ${c.spec.path.padEnd(width)}  ${c.spec.summary.split("\n")[0]}`).join("\n") +
    `\n\n"cairn ${group} <command> --help" shows a command's flags and an example.\n`;
}

// ---------------------------------------------------------------- running

/** Runs one command: parses, checks, acts; every failure becomes a message and an exit code. */
export async function runCommand(command: Command, argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const { spec } = command;
  let global: GlobalOptions | undefined;
  try {
    const parsed = parseFlags(argv, [...spec.flags, ...GLOBAL_FLAGS]);
    if (flagSet(parsed, "--help")) {
      process.stdout.write(commandHelp(spec));
      return EXIT_OK;
    }
    const count = parsed.positionals.length;
    if (count < spec.argsMin || count > spec.argsMax) {
      const unexpected = count > spec.argsMax ? `unexpected argument "${parsed.positionals[spec.argsMax]}"` : `missing ${spec.args.split(" ").slice(count).join(" ")}`;
      throw new UsageError(unexpected);
    }
    const resolved = resolveGlobals(parsed, env);
    global = resolved;
    let client: CairnClient | undefined;
    const ctx: CommandContext = {
      global: resolved,
      parsed,
      client: () => (client ??= makeClient(resolved)),
      out: (text) => process.stdout.write(text),
      note: (text) => process.stderr.write(text),
    };
    return (await command.run(ctx)) ?? EXIT_OK;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`cairn ${spec.path}: ${err.message}\n\n${commandHelp(spec)}`);
      return EXIT_USAGE;
    }
    process.stderr.write(`${failureMessage(spec, err, global)}\n`);
    return EXIT_FAILURE;
  }
}

/** Runs `cairn <group> <command> ...`: the command named by the leading words, or the group's help. */
export async function runGroup(group: string, summary: string, commands: readonly Command[], argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const words = argv.filter((a) => !a.startsWith("-"));
  // The longest command path that the leading words spell ("acl token create" before "acl token").
  const match = [...commands]
    .sort((a, b) => b.spec.path.length - a.spec.path.length)
    .find((c) => {
      const path = c.spec.path.split(" ").slice(1);
      return path.every((w, i) => argv[i] === w);
    });
  if (match !== undefined) return runCommand(match, argv.slice(match.spec.path.split(" ").length - 1), env);
  const help = groupHelp(group, summary, commands);
  if (words.length === 0 && (argv.includes("--help") || argv.includes("-h"))) {
    process.stdout.write(help);
    return EXIT_OK;
  }
  const asked = words.length === 0 ? "no command" : `unknown command "cairn ${group} ${words.slice(0, 2).join(" ")}"`;
  process.stderr.write(`cairn ${group}: ${asked}\n\n${help}`);
  return EXIT_USAGE;
}

// ---------------------------------------------------------------- failures

/** TLS verification failures, as Node names them in an error's code. */
const TLS_TRUST_CODES = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|DEPTH_ZERO|ERR_TLS/;

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

function tokenAdvice(spec: CommandSpec, global: GlobalOptions | undefined): string {
  const permission = spec.permission ?? "this permission";
  if (global?.token === undefined) return `no token was given: pass one that has ${permission} with --token, --token-file or CAIRN_TOKEN`;
  return `the token from ${global.tokenSource} lacks ${permission}: use one whose policy grants it (cairn acl policy create, cairn acl token create)`;
}

function adviceFor(status: number, spec: CommandSpec, global: GlobalOptions | undefined): string {
  const own = spec.hints?.[status];
  if (own !== undefined) return own;
  if (status === 400) return `check the arguments: cairn ${spec.path} --help`;
  if (status === 401 || status === 403) return tokenAdvice(spec, global);
  if (status === 404) return "check the name or id";
  if (status === 409) return "the cluster is busy with another change of this kind; retry once it is done";
  if (status === 429) return "the node is limiting the rate of requests; retry in a moment";
  return "retry shortly; if it persists, look at the node's log";
}

function unreachableAdvice(err: CairnUnavailableError, global: GlobalOptions | undefined): string {
  const failures = err.failures.join("; ");
  if (TLS_TRUST_CODES.test(failures)) return "the node's HTTPS certificate is not trusted: pass the CA that signed it with --ca-file or CAIRN_CACERT";
  if (/ECONNRESET|other side closed|HPE_|socket hang up|wrong version number/i.test(failures)) return "the node may serve HTTPS or the other way round: check the scheme of --addr (https:// or http://)";
  if (/: 503 /.test(failures)) return "the cluster has no leader or cannot take the request now; retry shortly, and check that a majority of its nodes run (cairn members list)";
  const where = global === undefined ? "" : ` at ${global.endpoints.join(", ")}`;
  return `is a Cairn node listening${where}? Point --addr or CAIRN_HTTP_ADDR at one`;
}

/** "cairn: could not <what> (<why>); <what to do>". */
export function failureMessage(spec: CommandSpec, err: unknown, global: GlobalOptions | undefined): string {
  const what = `cairn: could not ${spec.action}`;
  if (err instanceof CommandError) return `cairn: ${err.message}`;
  if (err instanceof CairnRequestError) return `${what} (HTTP ${err.status}: ${oneLine(err.body.error)}); ${adviceFor(err.status, spec, global)}`;
  if (err instanceof CairnUnavailableError) {
    const last = err.failures[err.failures.length - 1] ?? "no attempt was made";
    return `${what} (no node answered; last: ${oneLine(last)}); ${unreachableAdvice(err, global)}`;
  }
  if (err instanceof CairnProtocolError) return `${what}: ${err.message}`;
  return `${what}: ${errorMessage(err)}`;
}

/** Longer than any wait between a long-running command's requests: it only holds the process open. */
const KEEP_ALIVE_INTERVAL_MS = 60 * 60 * 1000;

/**
 * Resolves on the first SIGINT or SIGTERM (Ctrl-C), for commands that run until stopped, or with
 * undefined once `until` aborts (the command ended on its own). Until then the process stays up,
 * even while the client's own timers (unref'd, as a library's should be) are all that is pending.
 */
export function untilStopped(until?: AbortSignal): Promise<NodeJS.Signals | undefined> {
  return new Promise((resolve) => {
    const keepAlive = setInterval(() => undefined, KEEP_ALIVE_INTERVAL_MS);
    const finish = (signal: NodeJS.Signals | undefined): void => {
      clearInterval(keepAlive);
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      until?.removeEventListener("abort", ended);
      resolve(signal);
    };
    const stop = (signal: NodeJS.Signals): void => finish(signal);
    const ended = (): void => finish(undefined);
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    if (until?.aborted === true) ended();
    else until?.addEventListener("abort", ended, { once: true });
  });
}
