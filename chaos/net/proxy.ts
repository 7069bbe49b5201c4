// The chaos network for machines without namespaces: every node listens on 127.0.0.1 on ports of
// its own, and node `from` dials node `to` through a link proxy of its own (from, to), which the
// server learns from --peer-via. The proxies run in the runner's process. Clients reach the nodes
// directly, so no fault between nodes touches them.

import { freePort } from "../../test/support/cluster.js";
import { LinkProxy } from "./link_proxy.js";
import { type ChaosNetwork, type LinkFault, type NodeAddresses, checkKnownId, checkLinkFault } from "./network.js";

const LOOPBACK = "127.0.0.1";

interface ProxyNode {
  readonly addresses: NodeAddresses;
  readonly peerPort: number;
}

export class ProxyNetwork implements ChaosNetwork {
  readonly kind = "proxy";
  private closed = false;

  private constructor(
    readonly ids: readonly string[],
    readonly reason: string,
    private readonly nodes: ReadonlyMap<string, ProxyNode>,
    /** The proxy node `from` dials node `to` through, by "from to". */
    private readonly links: ReadonlyMap<string, LinkProxy>,
  ) {}

  static async create(opts: { ids: readonly string[]; seed: number; reason: string }): Promise<ProxyNetwork> {
    const nodes = new Map<string, ProxyNode>();
    for (const id of opts.ids) {
      const http = `${LOOPBACK}:${await freePort()}`;
      const grpc = `${LOOPBACK}:${await freePort()}`;
      const peerPort = await freePort();
      const peer = `${LOOPBACK}:${peerPort}`;
      nodes.set(id, { peerPort, addresses: { id, http, grpc, listenPeer: peer, advertisePeer: peer, listenHttp: http, listenGrpc: grpc } });
    }
    const links = new Map<string, LinkProxy>();
    try {
      let linkIndex = 0;
      for (const from of opts.ids) {
        for (const to of opts.ids) {
          if (from === to) continue;
          const target = nodes.get(to) as ProxyNode;
          // Port 0: the proxy holds its port for the whole run, so no other process can take it.
          const proxy = await LinkProxy.start({
            listenHost: LOOPBACK,
            listenPort: 0,
            targetHost: LOOPBACK,
            targetPort: target.peerPort,
            targetId: to,
            dialerOf: () => from,
            seed: (opts.seed + linkIndex++) >>> 0,
          });
          links.set(linkKey(from, to), proxy);
        }
      }
    } catch (err) {
      await Promise.all([...links.values()].map((l) => l.close()));
      throw err;
    }
    return new ProxyNetwork(opts.ids, opts.reason, nodes, links);
  }

  addresses(id: string): NodeAddresses {
    checkKnownId(this.ids, id);
    return (this.nodes.get(id) as ProxyNode).addresses;
  }

  serverArgs(id: string): string[] {
    checkKnownId(this.ids, id);
    const via = this.ids.filter((to) => to !== id).map((to) => `${to}=${LOOPBACK}:${this.link(id, to).port}`);
    return via.length === 0 ? [] : ["--peer-via", via.join(",")];
  }

  wrap(id: string, command: string, args: readonly string[]): { command: string; args: string[] } {
    checkKnownId(this.ids, id);
    return { command, args: [...args] };
  }

  cut(from: string, to: string): Promise<void> {
    this.checkPair(from, to);
    // Both proxies between the pair carry bytes from -> to: (from, to) upstream, (to, from) in its answers.
    this.link(from, to).cut(from, to);
    this.link(to, from).cut(from, to);
    return Promise.resolve();
  }

  degrade(from: string, to: string, fault: LinkFault): Promise<void> {
    this.checkPair(from, to);
    checkLinkFault(fault);
    this.link(from, to).degrade(from, to, fault);
    this.link(to, from).degrade(from, to, fault);
    return Promise.resolve();
  }

  heal(): Promise<void> {
    for (const proxy of this.links.values()) proxy.heal();
    return Promise.resolve();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.links.values()].map((l) => l.close()));
  }

  /** For tests: the proxy node `from` dials node `to` through. */
  link(from: string, to: string): LinkProxy {
    const proxy = this.links.get(linkKey(from, to));
    if (proxy === undefined) throw new Error(`no link proxy from ${from} to ${to}: both must be distinct nodes of this network (${this.ids.join(", ")})`);
    return proxy;
  }

  private checkPair(from: string, to: string): void {
    checkKnownId(this.ids, from);
    checkKnownId(this.ids, to);
    if (from === to) throw new Error(`cannot cut or degrade node ${from}'s link to itself`);
  }
}

function linkKey(from: string, to: string): string {
  return `${from} ${to}`;
}
