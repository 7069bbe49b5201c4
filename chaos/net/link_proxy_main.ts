// A link proxy as a process of its own, so it can run inside a node's namespace (started with
// `ip netns exec`) and outlive the node's server across kill -9 and restart. It takes its config
// as JSON in argv[2], says "ready" over the IPC channel once it listens, answers each command,
// and exits when the channel closes: a runner that dies takes its proxies with it.

import { errorMessage } from "../../src/common/errors.js";
import { LinkProxy } from "./link_proxy.js";
import { type LinkProxyCommand, type LinkProxyReport, decodeChildConfig, decodeCommand } from "./link_proxy_ipc.js";

function report(message: LinkProxyReport): void {
  process.send?.(message);
}

function apply(proxy: LinkProxy, command: LinkProxyCommand): void {
  switch (command.op) {
    case "cut":
      proxy.cut(command.from, command.to);
      return;
    case "degrade":
      proxy.degrade(command.from, command.to, command.fault);
      return;
    case "heal":
      proxy.heal();
      return;
  }
}

async function main(): Promise<void> {
  if (process.send === undefined) throw new Error("link_proxy_main must be started with an IPC channel (stdio 'ipc'), by LinkProxyChild");
  const config = decodeChildConfig(process.argv[2] ?? "");
  const dialers = new Map(Object.entries(config.dialers));
  const proxy = await LinkProxy.start({ ...config, dialerOf: (ip) => dialers.get(ip) });
  process.on("message", (message: unknown) => {
    const command = decodeCommand(message);
    try {
      apply(proxy, command);
      report({ type: "done", seq: command.seq });
    } catch (err) {
      report({ type: "failed", seq: command.seq, message: errorMessage(err) });
    }
  });
  process.once("disconnect", () => {
    void proxy.close().finally(() => process.exit(0));
  });
  report({ type: "ready", port: proxy.port });
}

main().catch((err: unknown) => {
  process.stderr.write(`link proxy: ${errorMessage(err)}\n`);
  process.exit(1);
});
