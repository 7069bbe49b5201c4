// `cairn members`: the cluster's members and leader (GET /v1/cluster), adding a node as a
// learner, removing one, and handing leadership to another voter.

import { setTimeout as sleep } from "node:timers/promises";
import type { ClusterStatus } from "../../client/client.js";
import { type Command, CommandError, formatJson, formatTable, runGroup } from "./common.js";

/** How long transfer-leader waits to see the new leader before it says the transfer did not finish. */
const TRANSFER_WAIT_MS = 10_000;
const TRANSFER_POLL_MS = 100;

const list: Command = {
  spec: {
    path: "members list",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: "List the cluster's members with their roles, as the node asked sees them, and the leader and term.",
    action: "list the cluster's members",
    flags: [],
    example: "cairn members list --addr 127.0.0.1:8502",
    permission: "operator:read",
  },
  async run(ctx) {
    const status = await ctx.client().operator.cluster();
    if (ctx.global.json) {
      ctx.out(formatJson(status));
      return;
    }
    ctx.out(`${summaryLine(status)}\n`);
    ctx.out(formatTable(["ID", "PEER ADDRESS", "ROLE", "MATCH"], status.members.map((m) => [m.id, m.peerAddress, m.role, m.match === null ? "-" : String(m.match)])));
  },
};

function summaryLine(s: ClusterStatus): string {
  const leader = s.leader === "" ? "no leader (an election is under way)" : `leader ${s.leader}`;
  return `${leader}, term ${s.term}, commit index ${s.commitIndex}, applied index ${s.appliedIndex} (as node ${s.id} sees it)`;
}

const add: Command = {
  spec: {
    path: "members add",
    args: "ID PEER_ADDRESS",
    argsMin: 2,
    argsMax: 2,
    summary: "Add node ID, reachable by its peers at PEER_ADDRESS (HOST:PORT), as a learner; the leader makes it a voter once it has caught up.\n" +
      "Start the node with `cairn server --join` to have it add itself instead.",
    action: "add the member",
    flags: [],
    example: "cairn members add n4 10.0.0.4:8701",
    permission: "operator:write",
    hints: { 409: "a node of that id is a member already; remove it first to add it again" },
  },
  async run(ctx) {
    const [id, peerAddress] = ctx.parsed.positionals;
    await ctx.client().operator.addMember(id, peerAddress);
    if (ctx.global.json) ctx.out(formatJson({ id, peerAddress, role: "learner" }));
    else ctx.out(`added ${id} (${peerAddress}) as a learner; the leader promotes it to voter once it has caught up\n`);
  },
};

const remove: Command = {
  spec: {
    path: "members remove",
    args: "ID",
    argsMin: 1,
    argsMax: 1,
    summary: "Remove node ID from the cluster. A leader that removes itself hands leadership over first.",
    action: "remove the member",
    flags: [],
    example: "cairn members remove n4",
    permission: "operator:write",
    hints: { 404: "cairn members list shows the members' ids" },
  },
  async run(ctx) {
    const [id] = ctx.parsed.positionals;
    await ctx.client().operator.removeMember(id);
    if (ctx.global.json) ctx.out(formatJson({ removed: id }));
    else ctx.out(`removed ${id}\n`);
  },
};

const transferLeader: Command = {
  spec: {
    path: "members transfer-leader",
    args: "ID",
    argsMin: 1,
    argsMax: 1,
    summary: `Hand leadership to voter ID, and wait (up to ${TRANSFER_WAIT_MS / 1000}s) until it leads.`,
    action: "transfer leadership",
    flags: [],
    example: "cairn members transfer-leader n2",
    permission: "operator:write",
    hints: { 400: "only a voter can lead: cairn members list shows each member's role" },
  },
  async run(ctx) {
    const [to] = ctx.parsed.positionals;
    const operator = ctx.client().operator;
    await operator.transferLeadership(to);
    const deadlineMs = Date.now() + TRANSFER_WAIT_MS;
    let status = await operator.cluster();
    while (status.leader !== to) {
      if (Date.now() >= deadlineMs) {
        throw new CommandError(`leadership transfer to ${to} started, but ${to} did not lead within ${TRANSFER_WAIT_MS / 1000}s (leader now: ${status.leader || "none"}); ` +
          "it may be behind or unreachable: see cairn members list");
      }
      await sleep(TRANSFER_POLL_MS);
      status = await operator.cluster();
    }
    if (ctx.global.json) ctx.out(formatJson({ leader: status.leader, term: status.term }));
    else ctx.out(`${to} leads now (term ${status.term})\n`);
  },
};

export const MEMBERS_COMMANDS: readonly Command[] = [list, add, remove, transferLeader];

export function runMembers(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runGroup("members", "The cluster's members and its leader.", MEMBERS_COMMANDS, argv, env);
}
