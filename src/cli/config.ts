// Server configuration from flags, environment variables (CAIRN_*) and a JSON config file, in
// that order of precedence. Every problem is reported with the setting, the value and the fix.

import { readFileSync } from "node:fs";
import { type HttpLimits, httpLimitDefaults, resolveHttpLimits } from "../api/limits.js";
import { caDefaults } from "../ca/authority.js";
import { CA_KEY_TYPES, type CaKeyType } from "../ca/keys.js";
import { validateTrustDomain } from "../ca/spiffe.js";
import { type WorkloadRule, everyCallerRules, parseWorkloadRules } from "../ca/workload_rules.js";
import { formatGoDuration, parseGoDuration } from "../common/duration.js";
import { errorMessage } from "../common/errors.js";
import { driverDefaults } from "../raft/node/settings.js";
import type { PeerCredentialPaths } from "../tls/files.js";
import { type BucketLimit, RATE_PER_SECOND_MAX, type RateLimitSettings, rateLimitDefaults } from "../api/rate_limit.js";
import { CSR_WORKERS_MAX, type CsrPoolSettings, INFLIGHT_MAX_LIMIT, csrPoolDefaults } from "../ca/csr_pool.js";

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
  /** The node's peer credentials; undefined when none were given (runServer refuses that unless peerInsecure). */
  readonly peerTls: PeerCredentialPaths | undefined;
  /** --peer-insecure: plaintext peer traffic that trusts any caller, for a trusted network only. */
  readonly peerInsecure: boolean;
  readonly publicTls: PublicTlsConfig;
  /** Token buckets per token and per address on writes and on certificate signing. */
  readonly rateLimits: RateLimitSettings;
  /** Where CSR signatures are checked (worker threads) and how many may be in flight. */
  readonly csrPool: CsrPoolSettings;
  /** Bounds on what an HTTP client may send and hold; each absent one takes its default. */
  readonly httpLimits: Partial<HttpLimits>;
  /** The audit log's file; undefined: audit.log in the data directory. */
  readonly auditLog: string | undefined;
  readonly acl: AclConfig;
  /** --metrics-open: GET /metrics needs no token; with ACLs on it otherwise needs operator:read. */
  readonly metricsOpen: boolean;
  /** --intentions-default: whether a call no intention covers is allowed (deny when ACLs are on, allow when off). */
  readonly intentionsDefaultAllow: boolean;
}

export interface AclConfig {
  /** On by default: every request is checked against ACL tokens. */
  readonly enabled: boolean;
  readonly defaultPolicy: "allow" | "deny";
  /** The token a joining node presents (it needs operator:write); never logged. */
  readonly token: string | undefined;
}

/**
 * TLS on the public HTTP and gRPC ports. "files": the operator's certificate and key. "auto": a
 * certificate for this node from the cluster's own CA, renewed before it expires. With
 * clientCaFile, every client must present a certificate that chains to it; with auto and
 * verifyClient but no clientCaFile, one that chains to the cluster's own trust bundle (an SVID).
 */
export type PublicTlsConfig =
  | { readonly mode: "off" }
  | { readonly mode: "files"; readonly certFile: string; readonly keyFile: string; readonly clientCaFile: string | undefined }
  | { readonly mode: "auto"; readonly verifyClient: boolean; readonly clientCaFile: string | undefined };

export interface CaConfig {
  readonly trustDomain: string;
  readonly keyType: CaKeyType;
  readonly leafTtlMaxMs: number;
  /** The key-encryption key as given (base64 or hex), from CAIRN_CA_KEK or the file; never logged. */
  readonly kek: { readonly raw: Uint8Array; readonly source: string } | undefined;
  /**
   * KEKs being rotated out, as given (one or more per source, see parseKekList): they unseal CA
   * keys sealed before the current KEK was set, never seal. From CAIRN_CA_KEK_PREVIOUS and/or
   * --ca-kek-previous-file; never logged.
   */
  readonly previousKeks: readonly { readonly raw: Uint8Array; readonly source: string }[];
  /** Where the SPIFFE Workload API listens (a Unix socket path), if anywhere. */
  readonly workloadSocket: string | undefined;
  /** The socket file's permission bits (who may connect at all). */
  readonly workloadSocketMode: number;
  /** Who on the Workload API socket holds which SPIFFE ID: --workload-identities (every caller), then --workload-attest. */
  readonly workloadRules: readonly WorkloadRule[];
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
  /** A switch: given alone (--flag) it is "true"; --flag=false, env and file values say true or false. */
  readonly bare?: true;
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
  { flag: "--ca-kek-previous-file", env: "CAIRN_CA_KEK_PREVIOUS_FILE", key: "caKekPreviousFile", help: "file holding KEKs being rotated out, one per line: they unseal CA keys sealed before, never seal (see docs/security.md); or put them in CAIRN_CA_KEK_PREVIOUS" },
  { flag: "--workload-socket", env: "CAIRN_WORKLOAD_SOCKET", key: "workloadSocket", help: "Unix socket path for the SPIFFE Workload API (off when unset)" },
  { flag: "--workload-identities", env: "CAIRN_WORKLOAD_IDENTITIES", key: "workloadIdentities", help: "SPIFFE IDs the Workload API socket hands out to every caller, comma-separated (unattested; prefer --workload-attest)" },
  { flag: "--workload-attest", env: "CAIRN_WORKLOAD_ATTEST", key: "workloadAttest", help: "who on the Workload API socket holds which SPIFFE ID, by the caller's uid or gid (SO_PEERCRED): uid:1000=spiffe://TD/ns/NS/svc/SVC,gid:50=...; see docs/workload-attestation.md" },
  { flag: "--workload-socket-mode", env: "CAIRN_WORKLOAD_SOCKET_MODE", key: "workloadSocketMode", help: "permission bits of the Workload API socket, octal (default 0770; 0777 lets every local user connect and be attested)" },
  { flag: "--peer-cert-file", env: "CAIRN_PEER_CERT_FILE", key: "peerCertFile", help: "this node's peer certificate (PEM), from cairn tls cert create" },
  { flag: "--peer-key-file", env: "CAIRN_PEER_KEY_FILE", key: "peerKeyFile", help: "the private key of --peer-cert-file (PEM)" },
  { flag: "--peer-ca-file", env: "CAIRN_PEER_CA_FILE", key: "peerCaFile", help: "the peer CA (PEM): peers must present a certificate it issued" },
  { flag: "--peer-insecure", env: "CAIRN_PEER_INSECURE", key: "peerInsecure", bare: true, help: "run peer traffic in plaintext, trusting any caller (trusted networks only)" },
  { flag: "--tls", env: "CAIRN_TLS", key: "tls", help: "public HTTP and gRPC TLS: off (default), or auto for a certificate from the cluster's own CA; --tls-cert-file implies files" },
  { flag: "--tls-cert-file", env: "CAIRN_TLS_CERT_FILE", key: "tlsCertFile", help: "certificate (PEM) to serve HTTPS and gRPC over TLS with" },
  { flag: "--tls-key-file", env: "CAIRN_TLS_KEY_FILE", key: "tlsKeyFile", help: "the private key of --tls-cert-file (PEM)" },
  { flag: "--tls-client-ca-file", env: "CAIRN_TLS_CLIENT_CA_FILE", key: "tlsClientCaFile", help: "CA (PEM) that client certificates must chain to; needs --tls-verify-client (with --tls auto, the default is the cluster's trust bundle)" },
  { flag: "--tls-verify-client", env: "CAIRN_TLS_VERIFY_CLIENT", key: "tlsVerifyClient", bare: true, help: "refuse HTTP and gRPC clients without a certificate from --tls-client-ca-file (with --tls auto and no file: without an SVID from this cluster)" },
  { flag: "--rate-limit-write-token", env: "CAIRN_RATE_LIMIT_WRITE_TOKEN", key: "rateLimitWriteToken", help: `writes per second each token may make, and its burst: RATE[,BURST] (default ${bucketText(rateLimitDefaults.write.perToken)}); past it 429 with Retry-After` },
  { flag: "--rate-limit-write-address", env: "CAIRN_RATE_LIMIT_WRITE_ADDRESS", key: "rateLimitWriteAddress", help: `writes per second from each remote address, with or without a token: RATE[,BURST] (default ${bucketText(rateLimitDefaults.write.perAddress)})` },
  { flag: "--rate-limit-sign-token", env: "CAIRN_RATE_LIMIT_SIGN_TOKEN", key: "rateLimitSignToken", help: `certificates per second each token may ask for (POST /v1/ca/sign, Consul's leaf): RATE[,BURST] (default ${bucketText(rateLimitDefaults.sign.perToken)})` },
  { flag: "--rate-limit-sign-address", env: "CAIRN_RATE_LIMIT_SIGN_ADDRESS", key: "rateLimitSignAddress", help: `certificates per second from each remote address: RATE[,BURST] (default ${bucketText(rateLimitDefaults.sign.perAddress)})` },
  { flag: "--rate-limit-buckets", env: "CAIRN_RATE_LIMIT_BUCKETS", key: "rateLimitBuckets", help: `rate-limit buckets kept per class for tokens and for addresses, least recently used dropped first (default ${rateLimitDefaults.bucketsMax})` },
  { flag: "--csr-verify-workers", env: "CAIRN_CSR_VERIFY_WORKERS", key: "csrVerifyWorkers", help: `worker threads that check CSR signatures and sign their certificates off the event loop; 0 does both on it (default ${csrPoolDefaults.workers} here: the cores but one, at most 4)` },
  { flag: "--csr-inflight-max", env: "CAIRN_CSR_INFLIGHT_MAX", key: "csrInflightMax", help: `CSRs being checked at once, at most; past it 503 with Retry-After (default ${csrPoolDefaults.inflightMax})` },
  { flag: "--http-max-header-bytes", env: "CAIRN_HTTP_MAX_HEADER_BYTES", key: "httpMaxHeaderBytes", help: `largest request line and headers, in bytes; larger is answered 431 (default ${httpLimitDefaults.headerBytesMax})` },
  { flag: "--http-headers-timeout", env: "CAIRN_HTTP_HEADERS_TIMEOUT", key: "httpHeadersTimeout", help: `a request's headers must arrive within this, or 408 (Go duration, default ${formatGoDuration(httpLimitDefaults.headersTimeoutMs)})` },
  { flag: "--http-request-timeout", env: "CAIRN_HTTP_REQUEST_TIMEOUT", key: "httpRequestTimeout", help: `a whole request, headers and body, must arrive within this, or 408; answers are not bounded (Go duration, default ${formatGoDuration(httpLimitDefaults.requestReceiveTimeoutMs)})` },
  { flag: "--http-keepalive-idle", env: "CAIRN_HTTP_KEEPALIVE_IDLE", key: "httpKeepaliveIdle", help: `close a keep-alive connection idle this long (Go duration, default ${formatGoDuration(httpLimitDefaults.keepAliveIdleMs)})` },
  { flag: "--http-max-conns-per-client", env: "CAIRN_HTTP_MAX_CONNS_PER_CLIENT", key: "httpMaxConnsPerClient", help: `open HTTP connections one address may hold; past it, 429 and close; 0: no cap (default ${httpLimitDefaults.connectionsPerClientMax}, as Consul's)` },
  { flag: "--audit-log", env: "CAIRN_AUDIT_LOG", key: "auditLog", help: "file the audit log (every write and issued certificate, JSON lines) is appended to (default DATA/audit.log)" },
  { flag: "--acl", env: "CAIRN_ACL", key: "acl", help: "on (default) or off: check every request against ACL tokens (PUT /v1/acl/bootstrap makes the first)" },
  { flag: "--acl-default-policy", env: "CAIRN_ACL_DEFAULT_POLICY", key: "aclDefaultPolicy", help: "deny (default) or allow: what a token may do where its rules say nothing" },
  { flag: "--intentions-default", env: "CAIRN_INTENTIONS_DEFAULT", key: "intentionsDefault", help: "allow or deny: what a call between services is decided when no intention covers it (default deny with ACLs on, allow with --acl off)" },
  { flag: "--metrics-open", env: "CAIRN_METRICS_OPEN", key: "metricsOpen", bare: true, help: "serve GET /metrics to anyone, without a token (with ACLs on it needs operator:read otherwise); for a scraper on a trusted network" },
  { flag: "--token", env: "CAIRN_TOKEN", key: "token", help: "ACL token this node presents to join a cluster with --join (needs operator:write)" },
  { flag: "--config", env: "CAIRN_CONFIG", key: "config", help: "JSON file with any of the settings above, keyed as camelCase" },
];

export function usage(): string {
  const lines = SETTINGS.map((s) => `  ${(s.bare === true ? s.flag : `${s.flag} VALUE`).padEnd(28)} ${s.help} [env ${s.env}]`);
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
    // A switch never takes the next argument: "--peer-insecure --id n1" must not read "--id".
    const value = setting.bare === true ? (inline ?? "true") : (inline ?? argv[++i]);
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
      const bare = SETTINGS.some((s) => s.key === k && s.bare === true);
      if (bare ? typeof v !== "boolean" : typeof v !== "string" && typeof v !== "number") {
        throw new ConfigError(`config file ${configPath}: "${k}" must be ${bare ? "true or false" : "a string or number"}`);
      }
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
  const peerTls = parsePeerTls(get);
  const peerInsecure = parseSwitch(get, "peerInsecure");
  if (peerTls !== undefined && peerInsecure) throw new ConfigError("give either peer credentials (--peer-cert-file, --peer-key-file, --peer-ca-file) or --peer-insecure, not both");
  const publicTls = parsePublicTls(get, parseSwitch(get, "tlsVerifyClient"));
  const rateLimits = parseRateLimits(get);
  const csrPool = parseCsrPool(get);
  const httpLimits = parseHttpLimits(get);
  const aclText = get("acl") ?? "on";
  if (aclText !== "on" && aclText !== "off") throw new ConfigError(`--acl must be on or off, not "${aclText}"`);
  const defaultPolicy = get("aclDefaultPolicy") ?? "deny";
  if (defaultPolicy !== "allow" && defaultPolicy !== "deny") throw new ConfigError(`--acl-default-policy must be deny or allow, not "${defaultPolicy}"`);
  const acl: AclConfig = { enabled: aclText === "on", defaultPolicy, token: get("token") };
  // As Consul: with ACLs on, a mesh is closed until intentions open it; with them off, it is open.
  const intentionsDefault = get("intentionsDefault") ?? (acl.enabled ? "deny" : "allow");
  if (intentionsDefault !== "allow" && intentionsDefault !== "deny") throw new ConfigError(`--intentions-default must be allow or deny, not "${intentionsDefault}"`);
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
    peerTls,
    peerInsecure,
    publicTls,
    rateLimits,
    csrPool,
    httpLimits,
    auditLog: get("auditLog"),
    acl,
    intentionsDefaultAllow: intentionsDefault === "allow",
    metricsOpen: parseSwitch(get, "metricsOpen"),
  };
}

function settingFor(key: string): Setting {
  const s = SETTINGS.find((x) => x.key === key);
  if (s === undefined) throw new Error(`no setting has the key ${key}`);
  return s;
}

/** A switch's value, from "true"/"1" or "false"/"0" wherever it was set. */
function parseSwitch(get: (key: string) => string | undefined, key: string): boolean {
  const text = get(key);
  if (text === undefined) return false;
  if (text === "true" || text === "1") return true;
  if (text === "false" || text === "0") return false;
  const s = settingFor(key);
  throw new ConfigError(`${s.flag} (or ${s.env}) is a switch: true, false, 1 or 0, not "${text}"`);
}

/** The three peer files together, or none (runServer then asks for them or --peer-insecure). */
function parsePeerTls(get: (key: string) => string | undefined): PeerCredentialPaths | undefined {
  const certFile = get("peerCertFile");
  const keyFile = get("peerKeyFile");
  const caFile = get("peerCaFile");
  if (certFile === undefined && keyFile === undefined && caFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined || caFile === undefined) {
    const missing = [["peerCertFile", certFile], ["peerKeyFile", keyFile], ["peerCaFile", caFile]].filter(([, v]) => v === undefined).map(([k]) => settingFor(k as string).flag);
    throw new ConfigError(`peer TLS needs all of --peer-cert-file, --peer-key-file and --peer-ca-file; ${missing.join(" and ")} ${missing.length === 1 ? "is" : "are"} missing`);
  }
  return { certFile, keyFile, caFile };
}

function parsePublicTls(get: (key: string) => string | undefined, verifyClient: boolean): PublicTlsConfig {
  const mode = get("tls");
  const certFile = get("tlsCertFile");
  const keyFile = get("tlsKeyFile");
  const clientCaFile = get("tlsClientCaFile");
  if (mode !== undefined && mode !== "off" && mode !== "auto") throw new ConfigError(`--tls must be off or auto, not "${mode}"; to serve your own certificate give --tls-cert-file and --tls-key-file`);
  if ((certFile === undefined) !== (keyFile === undefined)) throw new ConfigError("give --tls-cert-file and --tls-key-file together");
  // With auto, the cluster's own trust bundle is the client CA unless a file is given.
  if (mode === "auto" && certFile === undefined) {
    if (clientCaFile !== undefined && !verifyClient) throw new ConfigError("--tls-client-ca-file is given without --tls-verify-client; add it to require client certificates from that CA");
    return { mode: "auto", verifyClient, clientCaFile };
  }
  if (verifyClient !== (clientCaFile !== undefined)) {
    throw new ConfigError(verifyClient
      ? "--tls-verify-client needs --tls-client-ca-file: the CA client certificates must chain to"
      : "--tls-client-ca-file is given without --tls-verify-client; add it to require client certificates from that CA");
  }
  if (certFile !== undefined && keyFile !== undefined) {
    if (mode !== undefined) throw new ConfigError(`--tls ${mode} and --tls-cert-file do not go together: the files already say to serve TLS with them`);
    return { mode: "files", certFile, keyFile, clientCaFile };
  }
  if (verifyClient) throw new ConfigError("--tls-verify-client needs TLS on the public ports: give --tls-cert-file and --tls-key-file, or --tls auto");
  return { mode: "off" };
}

function bucketText(limit: BucketLimit): string {
  return `${limit.ratePerSecond},${limit.burst}`;
}

/** RATE[,BURST]: a rate per second above 0 (fractions allowed) and a whole burst of at least 1; the burst defaults to twice the rate. */
export function parseBucketLimit(flag: string, text: string): BucketLimit {
  const match = /^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:,\s*([0-9]+)\s*)?$/.exec(text);
  const ratePerSecond = match === null ? Number.NaN : Number(match[1]);
  const burst = match?.[2] === undefined ? Math.max(1, Math.ceil(2 * ratePerSecond)) : Number(match[2]);
  if (match === null || !(ratePerSecond > 0 && ratePerSecond <= RATE_PER_SECOND_MAX) || !(burst >= 1 && burst <= 2 * RATE_PER_SECOND_MAX)) {
    throw new ConfigError(`${flag} must be RATE or RATE,BURST: requests per second above 0 (at most ${RATE_PER_SECOND_MAX}) and a whole burst of at least 1, like "50" or "50,100"; not "${text}"`);
  }
  return { ratePerSecond, burst };
}

function parseRateLimits(get: (key: string) => string | undefined): RateLimitSettings {
  const bucket = (key: string, flag: string, fallback: BucketLimit): BucketLimit => {
    const text = get(key);
    return text === undefined ? fallback : parseBucketLimit(flag, text);
  };
  const d = rateLimitDefaults;
  const bucketsText = get("rateLimitBuckets");
  return {
    write: { perToken: bucket("rateLimitWriteToken", "--rate-limit-write-token", d.write.perToken), perAddress: bucket("rateLimitWriteAddress", "--rate-limit-write-address", d.write.perAddress) },
    sign: { perToken: bucket("rateLimitSignToken", "--rate-limit-sign-token", d.sign.perToken), perAddress: bucket("rateLimitSignAddress", "--rate-limit-sign-address", d.sign.perAddress) },
    bucketsMax: bucketsText === undefined ? d.bucketsMax : positiveInt("--rate-limit-buckets", bucketsText),
  };
}

function parseCsrPool(get: (key: string) => string | undefined): CsrPoolSettings {
  const workersText = get("csrVerifyWorkers");
  const workers = workersText === undefined ? csrPoolDefaults.workers : wholeNumber("--csr-verify-workers", workersText);
  if (workers > CSR_WORKERS_MAX) throw new ConfigError(`--csr-verify-workers must be at most ${CSR_WORKERS_MAX}, not ${workers}`);
  const inflightText = get("csrInflightMax");
  const inflightMax = inflightText === undefined ? csrPoolDefaults.inflightMax : positiveInt("--csr-inflight-max", inflightText);
  if (inflightMax > INFLIGHT_MAX_LIMIT) throw new ConfigError(`--csr-inflight-max must be at most ${INFLIGHT_MAX_LIMIT}, not ${inflightMax}`);
  return { workers, inflightMax };
}

/** The HTTP limits given, checked against each other as the server will check them. */
function parseHttpLimits(get: (key: string) => string | undefined): Partial<HttpLimits> {
  const duration = (key: string, flag: string): number | undefined => {
    const text = get(key);
    if (text === undefined) return undefined;
    const ms = parseGoDuration(text);
    if (ms === undefined || ms < 1) throw new ConfigError(`${flag} must be a duration of at least 1ms like "10s", not "${text}"`);
    return Math.ceil(ms);
  };
  const headerBytes = get("httpMaxHeaderBytes");
  const conns = get("httpMaxConnsPerClient");
  const limits: Partial<HttpLimits> = {
    ...(headerBytes === undefined ? {} : { headerBytesMax: positiveInt("--http-max-header-bytes", headerBytes) }),
    ...optional("headersTimeoutMs", duration("httpHeadersTimeout", "--http-headers-timeout")),
    ...optional("requestReceiveTimeoutMs", duration("httpRequestTimeout", "--http-request-timeout")),
    ...optional("keepAliveIdleMs", duration("httpKeepaliveIdle", "--http-keepalive-idle")),
    ...(conns === undefined ? {} : { connectionsPerClientMax: wholeNumber("--http-max-conns-per-client", conns) }),
  };
  try {
    resolveHttpLimits(limits);
  } catch (err) {
    throw new ConfigError(`HTTP limits: ${errorMessage(err)}; adjust --http-headers-timeout, --http-request-timeout or --http-max-header-bytes`);
  }
  return limits;
}

function optional<K extends string>(key: K, value: number | undefined): Partial<Record<K, number>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, number>);
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
  const previousKeks = parsePreviousKeks(get("caKekPreviousFile"), env.CAIRN_CA_KEK_PREVIOUS, readBytes);
  if (previousKeks.length > 0 && kek === undefined) {
    throw new ConfigError("previous KEKs (--ca-kek-previous-file or CAIRN_CA_KEK_PREVIOUS) were given without a current one: give the new KEK with CAIRN_CA_KEK or --ca-kek-file as well");
  }
  const workloadIdentities = (get("workloadIdentities") ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  const ruleProblem = (flag: string, err: unknown): ConfigError => new ConfigError(`${flag}: ${errorMessage(err)}`);
  let workloadRules: WorkloadRule[];
  try {
    workloadRules = everyCallerRules(workloadIdentities, trustDomain);
  } catch (err) {
    throw ruleProblem("--workload-identities", err);
  }
  try {
    workloadRules = [...workloadRules, ...parseWorkloadRules(get("workloadAttest") ?? "", trustDomain)];
  } catch (err) {
    throw ruleProblem("--workload-attest", err);
  }
  const modeText = get("workloadSocketMode");
  const workloadSocketMode = modeText === undefined ? workloadSocketDefaults.mode : parseSocketMode(modeText);
  return { trustDomain, keyType: keyType as CaKeyType, leafTtlMaxMs, kek, previousKeks, workloadSocket: get("workloadSocket"), workloadSocketMode, workloadRules };
}

/** Both sources of previous KEKs may be given: a rotation may be staged in either. */
function parsePreviousKeks(file: string | undefined, envText: string | undefined, readBytes: (path: string) => Uint8Array): CaConfig["previousKeks"] {
  const keks: { raw: Uint8Array; source: string }[] = [];
  if (file !== undefined) {
    try {
      keks.push({ raw: readBytes(file), source: `--ca-kek-previous-file ${file}` });
    } catch (err) {
      throw new ConfigError(`cannot read --ca-kek-previous-file ${file}: ${errorMessage(err)}`);
    }
  }
  if (envText !== undefined && envText !== "") keks.push({ raw: new TextEncoder().encode(envText), source: "CAIRN_CA_KEK_PREVIOUS" });
  return keks;
}

export const workloadSocketDefaults = {
  /** Owner and group may connect; others may not. */
  mode: 0o770,
} as const;

/** Permission bits in octal, as chmod takes them: "0770", "770" or "0o770". */
function parseSocketMode(text: string): number {
  const m = /^(?:0o?)?([0-7]{1,3})$/.exec(text.trim());
  if (m === null) throw new ConfigError(`--workload-socket-mode must be octal permission bits like 0770 or 0777, not "${text}"`);
  return parseInt(m[1], 8);
}
