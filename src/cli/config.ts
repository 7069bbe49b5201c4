// Server configuration from flags, environment variables (CAIRN_*) and a JSON config file, in
// that order of precedence. Every problem is reported with the setting, the value and the fix.

import { readFileSync } from "node:fs";
import { caDefaults } from "../ca/authority.js";
import { CA_KEY_TYPES, type CaKeyType } from "../ca/keys.js";
import { parseSpiffeId, validateTrustDomain } from "../ca/spiffe.js";
import { formatGoDuration, parseGoDuration } from "../common/duration.js";
import { errorMessage } from "../common/errors.js";
import { driverDefaults } from "../raft/node/settings.js";

export interface ServerConfig {
  readonly id: string;
  readonly dataDir: string;
  readonly http: HostPort;
  readonly grpc: HostPort;
  readonly peer: HostPort;
  /** The peer address other nodes use to reach this one. */
  readonly advertisePeer: string;
  readonly initialCluster: ReadonlyMap<string, string> | undefined;
  /** Members to dial at another address than the one they advertise (a proxy or NAT between nodes); empty when unset. */
  readonly peerVia: ReadonlyMap<string, string>;
  readonly join: string | undefined;
  readonly clusterId: string | undefined;
  readonly logLevel: string;
  readonly tickMs: number | undefined;
  readonly snapshotEntries: number | undefined;
  readonly watchWindowEvents: number | undefined;
  readonly catchUpEntries: number | undefined;
  /** Consul's "datacenter": reported by /v1/agent/self and in catalog answers. */
  readonly datacenter: string;
  readonly deregisterCriticalMinMs: number | undefined;
  /** How long a write or linearizable read that meets an election waits for a leader (the driver's leaderWaitMs). */
  readonly leaderWaitMs: number | undefined;
  readonly ca: CaConfig;
  readonly acl: AclConfig;
}

export interface AclConfig {
  /** On by default: every request is checked against ACL tokens. */
  readonly enabled: boolean;
  readonly defaultPolicy: "allow" | "deny";
  /** The token a joining node presents (it needs operator:write); never logged. */
  readonly token: string | undefined;
}

export interface CaConfig {
  readonly trustDomain: string;
  readonly keyType: CaKeyType;
  readonly leafTtlMaxMs: number;
  /** The key-encryption key as given (base64 or hex), from CAIRN_CA_KEK or the file; never logged. */
  readonly kek: { readonly raw: Uint8Array; readonly source: string } | undefined;
  /** Where the SPIFFE Workload API listens (a Unix socket path), if anywhere. */
  readonly workloadSocket: string | undefined;
  /** The SPIFFE IDs the Workload API socket hands out. */
  readonly workloadIdentities: readonly string[];
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

interface Setting {
  readonly flag: string;
  readonly env: string;
  readonly key: string;
  readonly help: string;
}

const SETTINGS: readonly Setting[] = [
  { flag: "--id", env: "CAIRN_ID", key: "id", help: "node id (letters, digits, . _ -)" },
  { flag: "--data", env: "CAIRN_DATA", key: "data", help: "data directory" },
  { flag: "--http", env: "CAIRN_HTTP", key: "http", help: "HTTP API address HOST:PORT" },
  { flag: "--grpc", env: "CAIRN_GRPC", key: "grpc", help: "public gRPC address HOST:PORT" },
  { flag: "--peer", env: "CAIRN_PEER", key: "peer", help: "Raft peer address HOST:PORT to listen on" },
  { flag: "--advertise-peer", env: "CAIRN_ADVERTISE_PEER", key: "advertisePeer", help: "peer address others reach this node at (default: --peer)" },
  { flag: "--initial-cluster", env: "CAIRN_INITIAL_CLUSTER", key: "initialCluster", help: "founding members id=HOST:PORT,... (new cluster)" },
  { flag: "--peer-via", env: "CAIRN_PEER_VIA", key: "peerVia", help: "dial member ID at HOST:PORT instead of the address it advertises (for a proxy or NAT between nodes): ID=HOST:PORT,..." },
  { flag: "--join", env: "CAIRN_JOIN", key: "join", help: "HTTP address of a member of an existing cluster to join" },
  { flag: "--cluster-id", env: "CAIRN_CLUSTER_ID", key: "clusterId", help: "cluster id (default: derived from --initial-cluster)" },
  { flag: "--log-level", env: "CAIRN_LOG_LEVEL", key: "logLevel", help: "trace, debug, info, warn, error (default info)" },
  { flag: "--tick-ms", env: "CAIRN_TICK_MS", key: "tickMs", help: "Raft tick in ms; heartbeats every tick, election timeout 12 ticks (default 50)" },
  { flag: "--snapshot-entries", env: "CAIRN_SNAPSHOT_ENTRIES", key: "snapshotEntries", help: "compact the log every N applied entries (default 50000)" },
  { flag: "--watch-window", env: "CAIRN_WATCH_WINDOW", key: "watchWindowEvents", help: "registry events each node retains for watches to resume from (default 50000); older resumes get a reset" },
  { flag: "--catch-up-entries", env: "CAIRN_CATCH_UP_ENTRIES", key: "catchUpEntries", help: "entries kept below each snapshot so a lagging follower catches up without one (default 5000; 0 keeps none)" },
  { flag: "--datacenter", env: "CAIRN_DATACENTER", key: "datacenter", help: "datacenter name reported to Consul clients (default dc1)" },
  { flag: "--deregister-critical-min", env: "CAIRN_DEREGISTER_CRITICAL_MIN", key: "deregisterCriticalMin", help: "floor for DeregisterCriticalServiceAfter (Go duration, default 1m)" },
  { flag: "--leader-wait", env: "CAIRN_LEADER_WAIT", key: "leaderWait", help: `how long a write or consistent read waits out an election before answering 503 (Go duration, default ${formatGoDuration(driverDefaults.leaderWaitMs)}, as Consul's rpc_hold_timeout)` },
  { flag: "--trust-domain", env: "CAIRN_TRUST_DOMAIN", key: "trustDomain", help: `SPIFFE trust domain of a new cluster's CA (default ${caDefaults.trustDomain})` },
  { flag: "--ca-key-type", env: "CAIRN_CA_KEY_TYPE", key: "caKeyType", help: "key type of CA roots: ec-p256 (default), rsa-2048 or ed25519" },
  { flag: "--ca-leaf-ttl-max", env: "CAIRN_CA_LEAF_TTL_MAX", key: "caLeafTtlMax", help: "longest leaf certificate TTL a workload may ask for (Go duration, default 24h)" },
  { flag: "--ca-kek-file", env: "CAIRN_CA_KEK_FILE", key: "caKekFile", help: "file holding the 32-byte key that seals CA private keys (base64 or hex); or put the key itself in CAIRN_CA_KEK" },
  { flag: "--workload-socket", env: "CAIRN_WORKLOAD_SOCKET", key: "workloadSocket", help: "Unix socket path for the SPIFFE Workload API (off when unset)" },
  { flag: "--workload-identities", env: "CAIRN_WORKLOAD_IDENTITIES", key: "workloadIdentities", help: "SPIFFE IDs the Workload API socket hands out, comma-separated" },
  { flag: "--acl", env: "CAIRN_ACL", key: "acl", help: "on (default) or off: check every request against ACL tokens (PUT /v1/acl/bootstrap makes the first)" },
  { flag: "--acl-default-policy", env: "CAIRN_ACL_DEFAULT_POLICY", key: "aclDefaultPolicy", help: "deny (default) or allow: what a token may do where its rules say nothing" },
  { flag: "--token", env: "CAIRN_TOKEN", key: "token", help: "ACL token this node presents to join a cluster with --join (needs operator:write)" },
  { flag: "--config", env: "CAIRN_CONFIG", key: "config", help: "JSON file with any of the settings above, keyed as camelCase" },
];

export function usage(): string {
  const lines = SETTINGS.map((s) => `  ${`${s.flag} VALUE`.padEnd(28)} ${s.help} [env ${s.env}]`);
  return `usage: cairn server [flags]\n${lines.join("\n")}\n`;
}

/** What --id accepts; exported for tools that name nodes before starting them (the chaos network). */
export const ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;
/**
 * The longest --leader-wait: no longer than the longest blocking query (10m). A request held that
 * long has outlived any HTTP client's patience; a cluster without a leader for longer needs an operator.
 */
const LEADER_WAIT_MAX_MS = 10 * 60_000;
const LOG_LEVELS = new Set(["trace", "debug", "info", "warn", "error", "fatal", "silent"]);

export function parseHostPort(setting: string, value: string): HostPort {
  const at = value.lastIndexOf(":");
  const host = value.slice(0, at).replace(/^\[(.*)\]$/, "$1");
  const port = Number(value.slice(at + 1));
  if (at <= 0 || host === "" || !Number.isInteger(port) || port < 0 || port > 65535 || value.slice(at + 1) === "") {
    throw new ConfigError(`${setting} must be HOST:PORT with a port from 0 to 65535, not "${value}"`);
  }
  return { host, port };
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(":") ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** A list of ID=HOST:PORT entries, as --initial-cluster and --peer-via take them; `flag` names the setting in errors. */
function parseMemberAddresses(flag: string, value: string): Map<string, string> {
  const members = new Map<string, string>();
  for (const part of value.split(",").map((p) => p.trim()).filter((p) => p !== "")) {
    const eq = part.indexOf("=");
    const id = part.slice(0, eq);
    if (eq <= 0 || !ID_PATTERN.test(id)) throw new ConfigError(`${flag} entry "${part}" must be ID=HOST:PORT with a valid node id`);
    if (members.has(id)) throw new ConfigError(`${flag} names node ${id} twice`);
    members.set(id, formatHostPort(parseHostPort(`${flag} entry for ${id}`, part.slice(eq + 1))));
  }
  if (members.size === 0) throw new ConfigError(`${flag} must name at least one member`);
  return members;
}

function positiveInt(setting: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${setting} must be a positive whole number, not "${value}"`);
  return n;
}

function wholeNumber(setting: string, value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new ConfigError(`${setting} must be a whole number (0 or more), not "${value}"`);
  return n;
}

/** Reads the settings; `env` and `readFile` are injectable for tests. */
export function parseServerConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  readFile: (path: string) => string = (p) => readFileSync(p, "utf8"),
  readBytes: (path: string) => Uint8Array = (p) => readFileSync(p),
): ServerConfig {
  const fromFlags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    const setting = SETTINGS.find((s) => s.flag === flag);
    if (setting === undefined) throw new ConfigError(`unknown flag ${flag}\n${usage()}`);
    const value = inline ?? argv[++i];
    if (value === undefined || value.startsWith("--")) throw new ConfigError(`${flag} needs a value`);
    fromFlags.set(setting.key, value);
  }
  const fromEnv = new Map<string, string>();
  for (const s of SETTINGS) {
    const v = env[s.env];
    if (v !== undefined && v !== "") fromEnv.set(s.key, v);
  }
  const configPath = fromFlags.get("config") ?? fromEnv.get("config");
  const fromFile = new Map<string, string>();
  if (configPath !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFile(configPath));
    } catch (err) {
      throw new ConfigError(`cannot read config file ${configPath}: ${errorMessage(err)}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new ConfigError(`config file ${configPath} must hold a JSON object`);
    for (const [k, v] of Object.entries(parsed)) {
      if (!SETTINGS.some((s) => s.key === k) || k === "config") throw new ConfigError(`config file ${configPath}: unknown setting "${k}"`);
      if (typeof v !== "string" && typeof v !== "number") throw new ConfigError(`config file ${configPath}: "${k}" must be a string or number`);
      fromFile.set(k, String(v));
    }
  }
  const get = (key: string): string | undefined => fromFlags.get(key) ?? fromEnv.get(key) ?? fromFile.get(key);
  const required = (key: string): string => {
    const v = get(key);
    const s = SETTINGS.find((x) => x.key === key) as Setting;
    if (v === undefined) throw new ConfigError(`${s.flag} is required (or set ${s.env}): ${s.help}`);
    return v;
  };

  const id = required("id");
  if (!ID_PATTERN.test(id)) throw new ConfigError(`--id "${id}" must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  const peer = parseHostPort("--peer", required("peer"));
  const initialClusterText = get("initialCluster");
  const join = get("join");
  if (initialClusterText !== undefined && join !== undefined) {
    throw new ConfigError("give either --initial-cluster (to form a new cluster) or --join (to join one), not both");
  }
  const initialCluster = initialClusterText === undefined ? undefined : parseMemberAddresses("--initial-cluster", initialClusterText);
  if (initialCluster !== undefined && !initialCluster.has(id)) {
    throw new ConfigError(`--initial-cluster must include this node (${id}) with the peer address others reach it at`);
  }
  const peerViaText = get("peerVia");
  const peerVia = peerViaText === undefined ? new Map<string, string>() : parseMemberAddresses("--peer-via", peerViaText);
  if (peerVia.has(id)) throw new ConfigError(`--peer-via names this node (${id}); a node never dials itself, so remove that entry`);
  const advertiseText = get("advertisePeer");
  const advertisePeer = advertiseText !== undefined
    ? formatHostPort(parseHostPort("--advertise-peer", advertiseText))
    : initialCluster?.get(id) ?? formatHostPort(peer);
  const logLevel = get("logLevel") ?? "info";
  if (!LOG_LEVELS.has(logLevel)) throw new ConfigError(`--log-level must be one of ${[...LOG_LEVELS].join(", ")}, not "${logLevel}"`);
  if (join !== undefined && !/^https?:\/\/[^\s/]+/.test(join)) throw new ConfigError(`--join must be an HTTP address like http://127.0.0.1:8501, not "${join}"`);
  const datacenter = get("datacenter") ?? "dc1";
  if (!/^[a-zA-Z0-9_-]{1,64}$/.test(datacenter)) throw new ConfigError(`--datacenter "${datacenter}" must be 1-64 letters, digits, '_' or '-'`);
  const deregisterMinText = get("deregisterCriticalMin");
  const deregisterCriticalMinMs = deregisterMinText === undefined ? undefined : parseGoDuration(deregisterMinText);
  if (deregisterMinText !== undefined && deregisterCriticalMinMs === undefined) {
    throw new ConfigError(`--deregister-critical-min must be a duration like "1m" or "500ms", not "${deregisterMinText}"`);
  }
  const leaderWaitText = get("leaderWait");
  const leaderWaitMs = leaderWaitText === undefined ? undefined : parseLeaderWait(leaderWaitText);
  const tickMs = get("tickMs");
  const snapshotEntries = get("snapshotEntries");
  const watchWindowEvents = get("watchWindowEvents");
  const catchUpEntries = get("catchUpEntries");
  const ca = parseCaConfig(get, env, readBytes);
  const aclText = get("acl") ?? "on";
  if (aclText !== "on" && aclText !== "off") throw new ConfigError(`--acl must be on or off, not "${aclText}"`);
  const defaultPolicy = get("aclDefaultPolicy") ?? "deny";
  if (defaultPolicy !== "allow" && defaultPolicy !== "deny") throw new ConfigError(`--acl-default-policy must be deny or allow, not "${defaultPolicy}"`);
  const acl: AclConfig = { enabled: aclText === "on", defaultPolicy, token: get("token") };
  return {
    id,
    dataDir: required("data"),
    http: parseHostPort("--http", required("http")),
    grpc: parseHostPort("--grpc", required("grpc")),
    peer,
    advertisePeer,
    initialCluster,
    peerVia,
    join,
    clusterId: get("clusterId"),
    logLevel,
    tickMs: tickMs === undefined ? undefined : positiveInt("--tick-ms", tickMs),
    snapshotEntries: snapshotEntries === undefined ? undefined : positiveInt("--snapshot-entries", snapshotEntries),
    watchWindowEvents: watchWindowEvents === undefined ? undefined : positiveInt("--watch-window", watchWindowEvents),
    catchUpEntries: catchUpEntries === undefined ? undefined : wholeNumber("--catch-up-entries", catchUpEntries),
    datacenter,
    deregisterCriticalMinMs,
    leaderWaitMs,
    ca,
    acl,
  };
}

/** A Go duration from 1ms to LEADER_WAIT_MAX_MS, in whole milliseconds (the driver counts in them). */
function parseLeaderWait(text: string): number {
  const ms = parseGoDuration(text);
  if (ms === undefined || ms < 1 || ms > LEADER_WAIT_MAX_MS) {
    throw new ConfigError(`--leader-wait must be a duration from 1ms to ${formatGoDuration(LEADER_WAIT_MAX_MS)} like "7s" or "1500ms", not "${text}"`);
  }
  return Math.ceil(ms);
}

function parseCaConfig(get: (key: string) => string | undefined, env: NodeJS.ProcessEnv, readBytes: (path: string) => Uint8Array): CaConfig {
  const trustDomain = get("trustDomain") ?? caDefaults.trustDomain;
  const tdProblem = validateTrustDomain(trustDomain);
  if (tdProblem !== undefined) throw new ConfigError(`--trust-domain: ${tdProblem}`);
  const keyType = get("caKeyType") ?? caDefaults.keyType;
  if (!(CA_KEY_TYPES as readonly string[]).includes(keyType)) throw new ConfigError(`--ca-key-type must be one of ${CA_KEY_TYPES.join(", ")}, not "${keyType}"`);
  const ttlText = get("caLeafTtlMax");
  const leafTtlMaxMs = ttlText === undefined ? caDefaults.leafTtlMaxMs : parseGoDuration(ttlText);
  if (leafTtlMaxMs === undefined || leafTtlMaxMs < caDefaults.leafTtlDefaultMs) {
    throw new ConfigError(`--ca-leaf-ttl-max must be a duration of at least ${formatGoDuration(caDefaults.leafTtlDefaultMs)} (the default TTL), not "${ttlText}"`);
  }
  const kekFile = get("caKekFile");
  const kekEnv = env.CAIRN_CA_KEK;
  if (kekFile !== undefined && kekEnv !== undefined && kekEnv !== "") throw new ConfigError("give the CA key-encryption key either in CAIRN_CA_KEK or with --ca-kek-file, not both");
  let kek: CaConfig["kek"];
  if (kekFile !== undefined) {
    try {
      kek = { raw: readBytes(kekFile), source: `--ca-kek-file ${kekFile}` };
    } catch (err) {
      throw new ConfigError(`cannot read --ca-kek-file ${kekFile}: ${errorMessage(err)}`);
    }
  } else if (kekEnv !== undefined && kekEnv !== "") {
    kek = { raw: new TextEncoder().encode(kekEnv), source: "CAIRN_CA_KEK" };
  }
  const workloadIdentities = (get("workloadIdentities") ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const id of workloadIdentities) {
    try {
      if (parseSpiffeId(id).trustDomain !== trustDomain) throw new Error(`it is not in trust domain ${trustDomain}`);
    } catch (err) {
      throw new ConfigError(`--workload-identities: "${id}": ${errorMessage(err)}`);
    }
  }
  return { trustDomain, keyType: keyType as CaKeyType, leafTtlMaxMs, kek, workloadSocket: get("workloadSocket"), workloadIdentities };
}
