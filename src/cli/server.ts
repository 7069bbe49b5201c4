// `cairn server`: one node of a cluster.

import { createHash } from "node:crypto";
import { join as joinPath } from "node:path";
import { pino, type Logger } from "pino";
import { buildHttpServer } from "../api/http.js";
import { type JoinReply } from "../api/cluster/routes.js";
import { startPublicGrpc } from "../api/grpc.js";
import { addTrustBundleService } from "../api/ca/bundle_grpc.js";
import { addWatchService } from "../api/watch/grpc.js";
import { addXdsService, type XdsService } from "../api/xds/service.js";
import { startWorkloadApi, type WorkloadApi } from "../api/ca/workload.js";
import { CertificateAuthority, caDefaults } from "../ca/authority.js";
import { listAuthorizer, openAuthorizer, tokenAuthorizer } from "../ca/authorizer.js";
import { AclService } from "../acl/acl.js";
import { AclState } from "../acl/state.js";
import { KeySealer, parseKek } from "../ca/seal.js";
import { CaState } from "../ca/state.js";
import { KvStateMachine } from "../kv/kv.js";
import { Registry } from "../registry/registry.js";
import { RegistryState } from "../registry/state.js";
import { ClusterStateMachine } from "../state/cluster.js";
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
  let sealer: KeySealer;
  try {
    sealer = new KeySealer(cfg.ca.kek === undefined ? undefined : parseKek(cfg.ca.kek.raw, cfg.ca.kek.source));
  } catch (err) {
    logger.fatal(errorMessage(err));
    throw err;
  }
  const tickMs = cfg.tickMs ?? driverDefaults.tickMs;
  const network = new PeerTransport({
    selfId: cfg.id,
    clusterId,
    listen: formatHostPort(cfg.peer),
    logger: logger.child({ component: "transport" }),
    peerVia: cfg.peerVia,
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
    stateMachine: new ClusterStateMachine({ kv, registry: registryState, ca: caState, acl: aclState }),
    logger: logger.child({ component: "raft" }),
    tickMs,
    ...(cfg.leaderWaitMs === undefined ? {} : { leaderWaitMs: cfg.leaderWaitMs }),
    ...(cfg.snapshotEntries === undefined ? {} : { snapshotEntries: cfg.snapshotEntries }),
    ...(cfg.catchUpEntries === undefined ? {} : { raft: { catchUpEntries: cfg.catchUpEntries } }),
    ...(plantedBug?.driver === undefined ? {} : { plantedBug: plantedBug.driver }),
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

  const http = buildHttpServer({ driver, kv, registry, ca, acl, clusterId, datacenter: cfg.datacenter, nodeAddress, logger: logger.child({ component: "http" }) });
  await http.listen({ host: cfg.http.host, port: cfg.http.port });
  let xds: XdsService | undefined;
  const grpcServer = await startPublicGrpc(formatHostPort(cfg.grpc), () => driver.leader !== "", logger.child({ component: "grpc" }), (server) => {
    addTrustBundleService(server, ca);
    addWatchService(server, registry, logger.child({ component: "watch" }));
    xds = addXdsService(server, { state: registryState, views: registry.views, logger: logger.child({ component: "xds" }), controlPlaneId: cfg.id });
  }, acl);
  logger.info({ methods: Object.fromEntries(grpcServer.methods) }, "public gRPC methods and the ACL rule each needs");
  let workload: WorkloadApi | undefined;
  if (cfg.ca.workloadSocket !== undefined) {
    const authorizer = listAuthorizer(cfg.ca.workloadIdentities);
    try {
      workload = await startWorkloadApi({ socketPath: cfg.ca.workloadSocket, authority: ca, authorizer, identities: cfg.ca.workloadIdentities, logger: logger.child({ component: "workload-api" }) });
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
      await workload?.close();
      ca.stop();
      registry.stop();
      xds?.close();
      await grpcServer.stop();
      await driver.stop();
      process.exit(0);
    })();
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
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
