// `cairn server`: one node of a cluster.

import { X509Certificate, createHash, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Server as HttpsServer } from "node:https";
import { hostname, networkInterfaces } from "node:os";
import { join as joinPath } from "node:path";
import { pino, type Logger } from "pino";
import { buildHttpServer } from "../api/http.js";
import { grpcMetricsInterceptor } from "../api/metrics.js";
import { NodeMetrics, registryMetrics, streamMetrics } from "../metrics/metrics.js";
import { RateLimiter } from "../api/rate_limit.js";
import { CsrIssuePool } from "../ca/csr_pool.js";
import { type JoinReply } from "../api/cluster/routes.js";
import { startPublicGrpc } from "../api/grpc.js";
import { type PublicTlsMaterial, grpcServerCredentials, httpsSecureContext, rotatingGrpcServerCredentials } from "../api/tls.js";
import { AutoTlsCertificate, publicNamesOf } from "../api/tls_auto.js";
import { type PeerCredentials, TlsFileError, readPeerCredentials } from "../tls/files.js";
import { addTrustBundleService } from "../api/ca/bundle_grpc.js";
import { addWatchService } from "../api/watch/grpc.js";
import { addXdsService, type XdsService } from "../api/xds/service.js";
import { SecretsModule } from "../api/xds/secrets.js";
import { startWorkloadApi, type WorkloadApi } from "../api/ca/workload.js";
import { AuditLog, accessorOf, setAccessorResolver } from "../audit/audit.js";
import { CertificateAuthority, caDefaults, issuedOrigin } from "../ca/authority.js";
import { openAuthorizer, tokenAuthorizer, workloadRuleAuthorizer } from "../ca/authorizer.js";
import { ruleIdentities } from "../ca/workload_rules.js";
import { LeafCache } from "../ca/leaves.js";
import { AclService } from "../acl/acl.js";
import { AclState } from "../acl/state.js";
import { IntentionsService } from "../intentions/intentions.js";
import { IntentionsState } from "../intentions/state.js";
import { KeySealer, parseKek, parseKekList } from "../ca/seal.js";
import { CaState } from "../ca/state.js";
import { KvStateMachine } from "../kv/kv.js";
import { Registry } from "../registry/registry.js";
import { RegistryState } from "../registry/state.js";
import { ClusterStateMachine } from "../state/cluster.js";
import { SnapshotService } from "../state/snapshots.js";
import { RaftDriver } from "../raft/node/driver.js";
import { driverDefaults } from "../raft/node/settings.js";
import { PeerTransport } from "../raft/transport/transport.js";
import { LevelLogStorage, StorageCorruptionError } from "../raft/storage/leveldb.js";
import { formatHostPort, parseHostPort, type ServerConfig } from "./config.js";
import { errorMessage } from "../common/errors.js";
import { PLANTED_BUG_ENV, plantedBugFromEnv } from "./planted_bugs.js";

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const CLUSTER_ID_META = "clusterId";

export async function runServer(cfg: ServerConfig): Promise<void> {
  const logger = pino({ level: cfg.logLevel, base: { node: cfg.id } });
  const plantedBug = plantedBugFromEnv();
  if (plantedBug !== undefined) {
    logger.warn({ plantedBug: plantedBug.name }, `${PLANTED_BUG_ENV} plants a bug in this server (${plantedBug.description}): for chaos tests only, never in production`);
  }
  const peerTls = peerCredentialsOrExit(cfg, logger);
  const fileTls = publicTlsOrExit(cfg, logger);
  let storage: LevelLogStorage;
  let clusterId: string;
  let joinPeers: Map<string, string> | undefined;
  try {
    storage = await LevelLogStorage.open(joinPath(cfg.dataDir, "raft"));
    const known = await storage.getMeta(CLUSTER_ID_META);
    if (known !== undefined) {
      clusterId = textDecoder.decode(known);
    } else if (cfg.join !== undefined) {
      const reply = await requestJoin(cfg, logger);
      clusterId = reply.clusterId;
      joinPeers = new Map(Object.entries(reply.members));
    } else if (cfg.initialCluster !== undefined) {
      clusterId = cfg.clusterId ?? deriveClusterId(cfg.initialCluster);
    } else {
      throw new Error(`${cfg.dataDir} holds no cluster yet: give --initial-cluster to form one or --join to join one`);
    }
    await storage.putMeta(CLUSTER_ID_META, textEncoder.encode(clusterId));
  } catch (err) {
    exitIfCorrupt(err, logger);
    throw err;
  }

  const kv = new KvStateMachine();
  const registryState = new RegistryState(cfg.watchWindowEvents === undefined ? {} : { eventsMax: cfg.watchWindowEvents });
  const caState = new CaState();
  const aclState = new AclState();
  const intentionsState = new IntentionsState();
  const clusterState = new ClusterStateMachine({ kv, registry: registryState, ca: caState, acl: aclState, intentions: intentionsState });
  let sealer: KeySealer;
  try {
    sealer = new KeySealer(
      cfg.ca.kek === undefined ? undefined : parseKek(cfg.ca.kek.raw, cfg.ca.kek.source),
      cfg.ca.previousKeks.flatMap((given) => parseKekList(given.raw, given.source)),
    );
  } catch (err) {
    // A KEK that does not parse, or previous KEKs that clash, are the operator's to fix: say so, without a stack trace.
    logger.fatal(errorMessage(err));
    process.stderr.write(`cairn: ${errorMessage(err)}\n`);
    process.exit(2);
  }
  const tickMs = cfg.tickMs ?? driverDefaults.tickMs;
  // First, so that every part can report to it from its start.
  const metrics = new NodeMetrics();
  const network = new PeerTransport({
    selfId: cfg.id,
    clusterId,
    listen: formatHostPort(cfg.peer),
    logger: logger.child({ component: "transport" }),
    peerVia: cfg.peerVia,
    ...(peerTls === undefined ? {} : { tls: peerTls }),
    // Links between followers are idle until an election needs them; a link still backing off
    // from an earlier outage would drop the vote requests that end this one. So retry often.
    limits: { backoffMaxMs: Math.max(100, 4 * tickMs) },
  });
  const driver = new RaftDriver({
    id: cfg.id,
    network,
    ...(cfg.initialCluster === undefined ? {} : { initialCluster: cfg.initialCluster }),
    ...(joinPeers === undefined ? {} : { joinPeers }),
    storage,
    stateMachine: clusterState,
    logger: logger.child({ component: "raft" }),
    tickMs,
    ...(cfg.leaderWaitMs === undefined ? {} : { leaderWaitMs: cfg.leaderWaitMs }),
    ...(cfg.snapshotEntries === undefined ? {} : { snapshotEntries: cfg.snapshotEntries }),
    ...(cfg.catchUpEntries === undefined ? {} : { raft: { catchUpEntries: cfg.catchUpEntries } }),
    ...(plantedBug?.driver === undefined ? {} : { plantedBug: plantedBug.driver }),
    observer: metrics.raft,
  });
  try {
    await driver.start();
  } catch (err) {
    exitIfCorrupt(err, logger);
    throw err;
  }
  driver.onFatal(() => process.exit(1));
  // Consul's node address: where others reach this node (never a wildcard like 0.0.0.0).
  const nodeAddress = parseHostPort("--advertise-peer", cfg.advertisePeer).host;
  const registry = new Registry({
    driver,
    state: registryState,
    nodeName: cfg.id,
    nodeAddress,
    logger: logger.child({ component: "registry" }),
    ...(plantedBug?.watchHub === undefined ? {} : { watch: { plantedBug: plantedBug.watchHub } }),
    ...(cfg.deregisterCriticalMinMs === undefined ? {} : { deregisterCriticalMinMs: cfg.deregisterCriticalMinMs }),
  });
  registry.start();
  const acl = new AclService(aclState, driver, { enabled: cfg.acl.enabled, defaultPolicy: cfg.acl.defaultPolicy });
  if (!cfg.acl.enabled) logger.warn("ACLs are off (--acl off): every request is allowed, and anyone who reaches this node may register, deregister, rotate the CA or get any certificate");
  else logger.info({ defaultPolicy: cfg.acl.defaultPolicy, bootstrapped: aclState.bootstrapIndex !== 0 }, "ACLs are on; PUT /v1/acl/bootstrap makes the first management token if none exists");
  const intentions = new IntentionsService(intentionsState, driver, { defaultAllow: cfg.intentionsDefaultAllow });
  logger.info({ intentionsDefault: cfg.intentionsDefaultAllow ? "allow" : "deny" }, "intentions: a call between services that no intention covers is decided by this default (--intentions-default)");
  const ca = new CertificateAuthority({
    driver,
    state: caState,
    sealer,
    authorizer: cfg.acl.enabled
      ? tokenAuthorizer({ mayWriteService: (token, service) => acl.tryResolve(token)?.permissions.allows("service", "write", service) ?? false })
      : openAuthorizer,
    settings: { trustDomain: cfg.ca.trustDomain, keyType: cfg.ca.keyType, leafTtlDefaultMs: caDefaults.leafTtlDefaultMs, leafTtlMaxMs: cfg.ca.leafTtlMaxMs },
    logger: logger.child({ component: "ca" }),
  });
  ca.start();
  let xds: XdsService | undefined;
  // What the metrics read at scrape time; the xDS server's counts exist once the public gRPC server has started.
  metrics.raft.read(driver);
  registryMetrics(metrics.registry, { state: registryState, blockingQueries: () => registry.waiters.waiting });
  streamMetrics(metrics.registry, { watches: registry.watches.stats, xds: () => xds?.stats });
  metrics.ca.read(caState);
  // Before --tls auto asks for this node's certificate, so that one is counted too.
  ca.onIssued(metrics.ca.certificateIssued);
  // Audit records name the token's accessor, never its secret; an unknown secret is recorded as anonymous.
  setAccessorResolver((secret) => acl.tryResolve(secret)?.accessorId);
  const auditFile = cfg.auditLog ?? joinPath(cfg.dataDir, "audit.log");
  let audit: AuditLog;
  try {
    audit = new AuditLog(auditFile, cfg.id);
  } catch (err) {
    const message = `cannot open the audit log ${auditFile}: ${errorMessage(err)}; fix its directory's permissions or give --audit-log another file`;
    logger.fatal(message);
    process.stderr.write(`cairn: ${message}\n`);
    process.exit(2);
  }
  ca.onIssued((issued) => audit.certificate({
    spiffeId: issued.spiffeId,
    serial: issued.serialHex,
    notAfter: new Date(issued.notAfterMs).toISOString(),
    rootId: issued.rootId,
    accessor: accessorOf(issued.caller?.token),
    origin: issuedOrigin(issued),
  }));
  logger.info({ file: auditFile }, "audit log: every write and issued certificate is recorded here");

  // --tls auto: the public ports open once the cluster's CA has signed this node's certificate.
  const autoTls = cfg.publicTls.mode === "auto" ? startAutoTls(cfg, ca, logger) : undefined;
  const publicTls = autoTls === undefined ? fileTls : await firstAutoTlsOrExit(autoTls, driver, logger);
  const csrIssuer = new CsrIssuePool(cfg.csrPool, logger.child({ component: "csr-pool" }));
  const rateLimiter = new RateLimiter(cfg.rateLimits);
  metrics.api.readRateLimits(rateLimiter.refusals);
  const snapshots = new SnapshotService({ driver, state: clusterState, clusterId, ca, logger: logger.child({ component: "snapshot" }) });
  // One leaf per service on this node, whoever asks: Consul's leaf route and SDS hand out the same one.
  const leaves = new LeafCache(ca, cfg.datacenter);
  const http = buildHttpServer({
    driver, kv, registry, ca, acl, intentions, clusterId, snapshots, datacenter: cfg.datacenter, nodeAddress, logger: logger.child({ component: "http" }),
    leaves,
    rateLimiter,
    metrics,
    metricsOpen: cfg.metricsOpen,
    csrIssuer,
    limits: cfg.httpLimits,
    audit,
    ...(publicTls === undefined ? {} : { tls: publicTls }),
  });
  logger.info({ rateLimits: cfg.rateLimits, csrPool: cfg.csrPool }, "rate limits on writes and signing, and how many workers check CSRs and sign their leaves");
  await http.listen({ host: cfg.http.host, port: cfg.http.port });
  logger.info({ url: `${publicTls === undefined ? "http" : "https"}://${formatHostPort(cfg.http)}/ui/` }, "web dashboard");
  // Renewals and root rotations reach the running HTTPS server: new handshakes get the new certificate and client CA.
  autoTls?.onChange((material) => (http.server as unknown as HttpsServer).setSecureContext(httpsSecureContext(material)));
  const grpcServer = await startPublicGrpc(formatHostPort(cfg.grpc), () => driver.leader !== "", logger.child({ component: "grpc" }), (server) => {
    addTrustBundleService(server, ca);
    addWatchService(server, registry, logger.child({ component: "watch" }));
    const secrets = new SecretsModule({ authority: ca, leaves, rateLimiter, logger: logger.child({ component: "sds" }) });
    xds = addXdsService(server, {
      state: registryState, views: registry.views, logger: logger.child({ component: "xds" }), controlPlaneId: cfg.id,
      mesh: { trustDomain: ca.trustDomain, intentions }, modules: [secrets],
    });
  }, acl, autoTls !== undefined ? rotatingGrpcServerCredentials(autoTls) : publicTls === undefined ? undefined : grpcServerCredentials(publicTls),
  [grpcMetricsInterceptor(metrics.api)]);
  logger.info({ methods: Object.fromEntries(grpcServer.methods) }, "public gRPC methods and the ACL rule each needs");
  let workload: WorkloadApi | undefined;
  if (cfg.ca.workloadSocket !== undefined) {
    const { workloadRules: rules, workloadSocketMode: socketMode } = cfg.ca;
    const authorizer = workloadRuleAuthorizer(rules);
    if (rules.some((r) => r.selector.kind === "any") && (socketMode & 0o002) !== 0) {
      logger.warn({ socketMode: socketMode.toString(8) }, "--workload-identities hands its identities to every caller, and --workload-socket-mode lets every local user connect: any process on this host can fetch them; use --workload-attest rules instead");
    }
    try {
      workload = await startWorkloadApi({ socketPath: cfg.ca.workloadSocket, socketMode, authority: ca, authorizer, identities: ruleIdentities(rules), logger: logger.child({ component: "workload-api" }) });
    } catch (err) {
      // A misconfigured socket is the operator's to fix: say so and stop, without a stack trace.
      const message = `cannot serve the Workload API on ${cfg.ca.workloadSocket}: ${errorMessage(err)}`;
      logger.fatal(message);
      process.stderr.write(`cairn: ${message}\n`);
      process.exit(2);
    }
    logger.info({ socket: cfg.ca.workloadSocket, endpoint: `unix://${cfg.ca.workloadSocket}`, authorizer: authorizer.description }, "SPIFFE Workload API listening; point workloads at it with SPIFFE_ENDPOINT_SOCKET");
  }
  logger.info({ http: formatHostPort(cfg.http), grpc: formatHostPort(cfg.grpc), peer: cfg.advertisePeer, clusterId }, "cairn node ready");

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    void (async () => {
      await http.close();
      autoTls?.stop();
      await csrIssuer.close();
      await workload?.close();
      ca.stop();
      registry.stop();
      xds?.close();
      await grpcServer.stop();
      await driver.stop();
      audit.close();
      process.exit(0);
    })();
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

/** Says what was wrong and exits 2: a start-up problem is the operator's to fix, not a crash. */
function exitWith(message: string, logger: Logger): never {
  logger.fatal(message);
  process.stderr.write(`cairn: ${message}\n`);
  process.exit(2);
}

/**
 * The node's peer credentials, read and checked; undefined only under --peer-insecure. Without
 * either, the node refuses to start: anyone who reaches a plaintext peer port can vote and
 * append to the Raft log.
 */
function peerCredentialsOrExit(cfg: ServerConfig, logger: Logger): PeerCredentials | undefined {
  if (cfg.peerInsecure) {
    logger.warn(
      { peerInsecure: true },
      "INSECURE: --peer-insecure is set, so peer traffic is plaintext and this node accepts Raft messages, votes and forwarded writes from ANYONE who reaches its peer port; use it only on a trusted network, never in production",
    );
    return undefined;
  }
  if (cfg.peerTls === undefined) {
    exitWith(
      "cairn server needs peer TLS credentials, so that only this cluster's nodes can reach its Raft peer port. Make them once:\n" +
        "  cairn tls ca create --dir tls\n" +
        `  cairn tls cert create --dir tls --node ${cfg.id} --ip ${parseHostPort("--advertise-peer", cfg.advertisePeer).host}   (once per node, with its id and peer address)\n` +
        "then start each node with its own pair and the shared CA:\n" +
        `  cairn server --peer-cert-file tls/${cfg.id}.pem --peer-key-file tls/${cfg.id}-key.pem --peer-ca-file tls/ca.pem ...\n` +
        "(or set CAIRN_PEER_CERT_FILE, CAIRN_PEER_KEY_FILE and CAIRN_PEER_CA_FILE). To run without them on a trusted network, give --peer-insecure.",
      logger,
    );
  }
  try {
    const creds = readPeerCredentials(cfg.peerTls, cfg.id);
    logger.info({ certFile: cfg.peerTls.certFile, caFile: cfg.peerTls.caFile }, "peer traffic is mutually authenticated with TLS");
    return creds;
  } catch (err) {
    if (err instanceof TlsFileError) exitWith(err.message, logger);
    throw err;
  }
}

/** --tls auto: this node's certificate from the cluster's CA, for the names its public ports are reached by. */
function startAutoTls(cfg: ServerConfig, ca: CertificateAuthority, logger: Logger): AutoTlsCertificate {
  const tls = cfg.publicTls;
  if (tls.mode !== "auto") throw new Error(`startAutoTls called with --tls ${tls.mode}`);
  const clientCa = !tls.verifyClient ? undefined : tls.clientCaFile === undefined ? "bundle" as const : readTlsFile("--tls-client-ca-file", tls.clientCaFile, logger);
  if (clientCa instanceof Buffer) {
    try {
      new X509Certificate(clientCa);
    } catch (err) {
      exitWith(`cannot use --tls-client-ca-file ${tls.clientCaFile ?? ""}: ${errorMessage(err)}`, logger);
    }
  }
  const names = publicNamesOf([cfg.http.host, cfg.grpc.host, parseHostPort("--advertise-peer", cfg.advertisePeer).host], {
    hostname: hostname(),
    interfaceAddresses: Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address)),
  });
  const autoTls = new AutoTlsCertificate({ authority: ca, nodeId: cfg.id, names, clientCa, logger: logger.child({ component: "tls-auto" }) });
  logger.info({
    spiffeId: autoTls.spiffeId, dnsNames: names.dnsNames, ips: names.ips,
    verifyClient: clientCa === undefined ? "no" : clientCa === "bundle" ? "an SVID of this cluster (its trust bundle)" : tls.clientCaFile,
  }, "public HTTP and gRPC serve TLS with a certificate from the cluster's own CA (--tls auto), renewed before expiry and on root rotation");
  return autoTls;
}

/** Waits for the first certificate; a signal meanwhile stops the node cleanly, since the usual shutdown is not installed yet. */
async function firstAutoTlsOrExit(autoTls: AutoTlsCertificate, driver: RaftDriver, logger: Logger): Promise<PublicTlsMaterial> {
  const onSignal = (signal: string): void => {
    logger.info({ signal }, "shutting down while waiting for this node's public TLS certificate");
    autoTls.stop();
    void driver.stop().finally(() => process.exit(0));
  };
  const onTerm = (): void => onSignal("SIGTERM");
  const onInt = (): void => onSignal("SIGINT");
  process.once("SIGTERM", onTerm);
  process.once("SIGINT", onInt);
  try {
    return await autoTls.first();
  } finally {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
  }
}

function readTlsFile(flag: string, path: string, logger: Logger): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    return exitWith(`cannot read ${flag} ${path}: ${errorMessage(err)}`, logger);
  }
}

/** The public ports' TLS material from files, or undefined for plaintext and for --tls auto (its material comes later, from the CA). */
function publicTlsOrExit(cfg: ServerConfig, logger: Logger): PublicTlsMaterial | undefined {
  const tls = cfg.publicTls;
  switch (tls.mode) {
    case "off":
    case "auto":
      return undefined;
    case "files": {
      const read = (flag: string, path: string): Buffer => readTlsFile(flag, path, logger);
      const certPem = read("--tls-cert-file", tls.certFile);
      const keyPem = read("--tls-key-file", tls.keyFile);
      const clientCaPem = tls.clientCaFile === undefined ? undefined : read("--tls-client-ca-file", tls.clientCaFile);
      try {
        // Fail at start, naming the files, rather than on every handshake.
        if (!new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem))) {
          exitWith(`--tls-key-file ${tls.keyFile} is not the key of --tls-cert-file ${tls.certFile}`, logger);
        }
        if (clientCaPem !== undefined) new X509Certificate(clientCaPem);
      } catch (err) {
        exitWith(`cannot use --tls-cert-file ${tls.certFile}, --tls-key-file ${tls.keyFile}${tls.clientCaFile === undefined ? "" : ` or --tls-client-ca-file ${tls.clientCaFile}`}: ${errorMessage(err)}`, logger);
      }
      logger.info({ certFile: tls.certFile, verifyClient: clientCaPem !== undefined }, "public HTTP and gRPC serve TLS");
      return { certPem, keyPem, clientCaPem };
    }
  }
}

/** A corrupt log is an operator's problem to fix, not a crash: say where, and exit with 2. */
function exitIfCorrupt(err: unknown, logger: Logger): void {
  if (!(err instanceof StorageCorruptionError)) return;
  logger.fatal({ path: err.path, index: err.index }, err.message);
  process.stderr.write(`cairn: ${err.message}\n`);
  process.exit(2);
}

/** Members of one initial cluster derive the same id; a node of another cluster is refused. */
function deriveClusterId(initialCluster: ReadonlyMap<string, string>): string {
  const canonical = [...initialCluster].sort(([a], [b]) => a.localeCompare(b)).map(([id, addr]) => `${id}=${addr}`).join(",");
  return createHash("sha256").update(canonical).digest("hex").slice(0, 16);
}

async function requestJoin(cfg: ServerConfig, logger: Logger): Promise<JoinReply> {
  const url = new URL("/v1/cluster/members", cfg.join);
  const deadline = Date.now() + 30_000;
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", ...(cfg.acl.token === undefined ? {} : { "x-consul-token": cfg.acl.token }) },
        body: JSON.stringify({ id: cfg.id, peerAddress: cfg.advertisePeer }),
      });
      const body = (await res.json()) as JoinReply & { error?: string };
      if (res.ok) return body;
      const hint = res.status === 403 ? " (joining needs a token with operator:write: give --token or CAIRN_TOKEN)" : "";
      if (res.status < 500 || Date.now() > deadline) throw new Error(`joining via ${cfg.join} failed: ${res.status} ${body.error ?? ""}${hint}`);
      logger.warn({ status: res.status, error: body.error, attempt }, "join not accepted yet; retrying");
    } catch (err) {
      if (Date.now() > deadline) throw err;
      logger.warn({ err: errorMessage(err), attempt }, "join request failed; retrying");
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 200 * attempt)));
  }
}
