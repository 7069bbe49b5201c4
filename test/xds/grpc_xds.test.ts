// The real proxyless client, @grpc/grpc-js with @grpc/grpc-js-xds, against a three-node cluster:
// `xds:///echo` reaches the registered instances, stops reaching one that fails its check or is
// deregistered, and keeps following changes after the Cairn node it is attached to is killed
// (its bootstrap's one server_uri names all three nodes). The client runs in a child process,
// since the xDS library reads its bootstrap once per process.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";
import { JsonLinesProcess } from "../support/json_lines.js";
import { type EchoServer, startEcho } from "./echo.js";

const fixturePath = fileURLToPath(new URL("./fixtures/xds_client.js", import.meta.url));
const CLIENT_ID = "xds-e2e-client";
/** How long a change may take to reach the client's calls. */
const CONVERGE_MS = 10_000;
const CALLS_PER_PROBE = 12;

interface CallsReply {
  readonly reached: string[];
  readonly errors: string[];
}

/** The fixture process: one JSON line in, one JSON line out. */
class XdsClientProcess {
  private constructor(private readonly process: JsonLinesProcess) {}

  static start(serverUri: string, target: string): XdsClientProcess {
    const bootstrap = {
      xds_servers: [{ server_uri: serverUri, channel_creds: [{ type: "insecure" }], server_features: ["xds_v3"] }],
      node: { id: CLIENT_ID, cluster: "tests", locality: {} },
    };
    return new XdsClientProcess(JsonLinesProcess.start(fixturePath, [target], { GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(bootstrap) }));
  }

  calls(n: number, timeoutMs = 20_000): Promise<CallsReply> {
    return this.process.request<CallsReply>({ calls: n }, timeoutMs);
  }

  kill(): void {
    this.process.kill();
  }
}

async function http(node: ProcessNode, method: string, path: string, body?: unknown): Promise<void> {
  const res = await fetch(node.url(path), { method, ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }) });
  assert.ok(res.ok, `${method} ${path} on ${node.info.id}: ${res.status} ${await res.text()}`);
}

const register = (node: ProcessNode, echo: EchoServer): Promise<void> =>
  http(node, "POST", "/v1/registry/instances", { name: "echo", id: echo.name, address: "127.0.0.1", port: echo.port, checks: [{ ttl: "10m", status: "passing" }] });

/** The node whose log shows the client's stream open and not yet closed. */
function attachedNode(cluster: ProcessCluster): ProcessNode | undefined {
  const attached = cluster.running().filter((n) => {
    let open = 0;
    for (const line of n.stdout.split("\n")) {
      if (!line.includes(CLIENT_ID)) continue;
      const entry = JSON.parse(line) as { msg: string; client?: string };
      if (entry.client !== CLIENT_ID) continue;
      if (entry.msg === "xDS stream opened") open++;
      if (entry.msg === "xDS stream closed") open--;
    }
    return open > 0;
  });
  return attached.length === 1 ? attached[0] : undefined;
}

void describe("proxyless gRPC (@grpc/grpc-js-xds) against a Cairn cluster", () => {
  let cluster: ProcessCluster;
  let client: XdsClientProcess;
  const echoes: EchoServer[] = [];

  before(async () => {
    cluster = await ProcessCluster.start(3);
    await cluster.agreedLeader();
    for (const name of ["echo-a", "echo-b", "echo-c"]) echoes.push(await startEcho(name));
    const [a, b] = echoes;
    await register(cluster.nodes[0], a);
    await register(cluster.nodes[1], b);
    const serverUri = `ipv4:${cluster.nodes.map((n) => n.info.grpc).join(",")}`;
    client = XdsClientProcess.start(serverUri, "xds:///echo");
  });

  after(async () => {
    client?.kill();
    for (const e of echoes) e.close();
    await cluster?.close();
  });

  /** Probes until the calls reach exactly `expected` (and fail none), or fails after CONVERGE_MS. */
  async function reachesExactly(expected: string[]): Promise<void> {
    let last: CallsReply | undefined;
    await waitFor(async () => {
      last = await client.calls(CALLS_PER_PROBE);
      const reached = [...new Set(last.reached)].sort();
      return last.errors.length === 0 && JSON.stringify(reached) === JSON.stringify([...expected].sort()) ? true : undefined;
    }, CONVERGE_MS, () => `calls should reach ${expected.join(", ")}; the last probe: ${JSON.stringify(last)}`);
  }

  void test("xds:///echo reaches both registered instances", async () => {
    await reachesExactly(["echo-a", "echo-b"]);
  });

  void test("an instance whose check fails stops receiving calls, and gets them again once it passes", async () => {
    const started = Date.now();
    await http(cluster.nodes[2], "PUT", `/v1/registry/checks/${encodeURIComponent("service:echo-b")}`, { status: "critical" });
    await reachesExactly(["echo-a"]);
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
    await http(cluster.nodes[2], "PUT", `/v1/registry/checks/${encodeURIComponent("service:echo-b")}`, { status: "passing" });
    await reachesExactly(["echo-a", "echo-b"]);
  });

  void test("after the Cairn node the client is attached to is killed, the client follows changes made through the others", async () => {
    const attached = await waitFor(() => Promise.resolve(attachedNode(cluster)), CONVERGE_MS, () => "no node shows the client's stream open");
    await attached.kill9();
    const survivor = cluster.running()[0];
    await cluster.agreedLeader();
    const [a, , c] = echoes;
    await register(survivor, c);
    await reachesExactly(["echo-a", "echo-b", "echo-c"]);
    const moved = await waitFor(() => Promise.resolve(attachedNode(cluster)), CONVERGE_MS, () => "the client's stream is open on no surviving node");
    assert.notEqual(moved.info.id, attached.info.id);

    await http(survivor, "DELETE", `/v1/registry/instances/${a.name}`);
    await reachesExactly(["echo-b", "echo-c"]);
  });
});
