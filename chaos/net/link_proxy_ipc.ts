// The runner's handle on a link proxy that runs as a child process (inside a node's namespace in
// netns mode), and the messages both ends exchange over Node's IPC channel. Every message is
// decoded strictly on arrival: a malformed one is a bug in this harness, so it throws.

import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { errorMessage } from "../../src/common/errors.js";
import type { LinkFault } from "./network.js";

/** What the child is started with, as JSON in its one argument. */
export interface LinkProxyChildConfig {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly targetHost: string;
  readonly targetPort: number;
  readonly targetId: string;
  /** Node id by remote IP. */
  readonly dialers: Readonly<Record<string, string>>;
  readonly seed: number;
}

export type LinkProxyCommand =
  | { readonly seq: number; readonly op: "cut"; readonly from: string; readonly to: string }
  | { readonly seq: number; readonly op: "degrade"; readonly from: string; readonly to: string; readonly fault: LinkFault }
  | { readonly seq: number; readonly op: "heal" };

export type LinkProxyReport =
  | { readonly type: "ready"; readonly port: number }
  | { readonly type: "done"; readonly seq: number }
  | { readonly type: "failed"; readonly seq: number; readonly message: string };

/** The child's entry point, compiled beside this file. */
export const LINK_PROXY_MAIN_PATH = fileURLToPath(new URL("./link_proxy_main.js", import.meta.url));
/** How long the child may take to listen, and to answer one command. */
const CHILD_READY_TIMEOUT_MS = 10_000;
const COMMAND_TIMEOUT_MS = 5_000;
/** How long the child may take to exit once its channel is closed, before it is killed. */
const CHILD_EXIT_WAIT_MS = 2_000;
/** The tail of the child's stderr kept for error messages. */
const STDERR_TAIL_CHARS = 2_000;

export class LinkProxyChild {
  private nextSeq = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private stderrTail = "";
  private readonly exited: Promise<void>;
  private hasExited = false;

  private constructor(private readonly child: ChildProcess, private readonly name: string) {
    child.stderr?.on("data", (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString()).slice(-STDERR_TAIL_CHARS);
    });
    this.exited = new Promise((resolve) => child.once("exit", () => {
      this.hasExited = true;
      for (const waiter of this.pending.values()) waiter.reject(new Error(`${this.name} exited: ${this.stderrTail.trim()}`));
      this.pending.clear();
      resolve();
    }));
    child.on("message", (message: unknown) => {
      const report = decodeReport(message);
      if (report.type === "ready") return;
      const waiter = this.pending.get(report.seq);
      if (waiter === undefined) return;
      this.pending.delete(report.seq);
      if (report.type === "done") waiter.resolve();
      else waiter.reject(new Error(`${this.name}: ${report.message}`));
    });
  }

  /** Spawns the proxy with `launch` (which runs LINK_PROXY_MAIN_PATH with the config) and waits until it listens. */
  static async start(name: string, launch: { command: string; args: string[] }): Promise<LinkProxyChild> {
    const child = spawn(launch.command, launch.args, { stdio: ["ignore", "ignore", "pipe", "ipc"] });
    const handle = new LinkProxyChild(child, name);
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} did not listen within ${CHILD_READY_TIMEOUT_MS} ms: ${handle.stderrTail.trim()}`)), CHILD_READY_TIMEOUT_MS);
      child.on("message", (message: unknown) => {
        if (decodeReport(message).type !== "ready") return;
        clearTimeout(timer);
        resolve();
      });
      child.once("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot start ${name} (${launch.command}): ${err.message}`));
      });
      void handle.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`${name} exited before it listened: ${handle.stderrTail.trim() || "no output"}`));
      });
    });
    try {
      await ready;
    } catch (err) {
      await handle.close();
      throw err;
    }
    return handle;
  }

  cut(from: string, to: string): Promise<void> {
    return this.send({ seq: this.nextSeq++, op: "cut", from, to });
  }

  degrade(from: string, to: string, fault: LinkFault): Promise<void> {
    return this.send({ seq: this.nextSeq++, op: "degrade", from, to, fault });
  }

  heal(): Promise<void> {
    return this.send({ seq: this.nextSeq++, op: "heal" });
  }

  /** Closes the channel, which the child takes as its cue to exit; kills it if it lingers. Safe to call twice. */
  async close(): Promise<void> {
    // No pid: the spawn itself failed, and there is no process to wait for.
    if (this.hasExited || this.child.pid === undefined) return;
    if (this.child.connected) this.child.disconnect();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), CHILD_EXIT_WAIT_MS);
    await this.exited;
    clearTimeout(timer);
  }

  private send(command: LinkProxyCommand): Promise<void> {
    if (this.hasExited || !this.child.connected) return Promise.reject(new Error(`${this.name} is not running: ${this.stderrTail.trim()}`));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(command.seq);
        reject(new Error(`${this.name} did not answer ${command.op} within ${COMMAND_TIMEOUT_MS} ms`));
      }, COMMAND_TIMEOUT_MS);
      this.pending.set(command.seq, {
        resolve: () => { clearTimeout(timer); resolve(); },
        reject: (err) => { clearTimeout(timer); reject(err); },
      });
      this.child.send(command, (err) => {
        if (err === null) return;
        this.pending.delete(command.seq);
        clearTimeout(timer);
        reject(new Error(`cannot send ${command.op} to ${this.name}: ${errorMessage(err)}`));
      });
    });
  }
}

// ---------------------------------------------------------------- decoding

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error(`${what} must be an object, got ${JSON.stringify(value)}`);
  return value as Record<string, unknown>;
}

function field<T extends "string" | "number">(from: Record<string, unknown>, key: string, type: T, what: string): T extends "string" ? string : number {
  const value = from[key];
  if (typeof value !== type || (type === "number" && !Number.isFinite(value))) throw new Error(`${what}: "${key}" must be a ${type}, got ${JSON.stringify(value)}`);
  return value as T extends "string" ? string : number;
}

export function decodeChildConfig(text: string): LinkProxyChildConfig {
  const what = "link proxy config";
  const raw = record(JSON.parse(text), what);
  const dialersRaw = record(raw.dialers, `${what} dialers`);
  const dialers: Record<string, string> = {};
  for (const ip of Object.keys(dialersRaw)) dialers[ip] = field(dialersRaw, ip, "string", `${what} dialers`);
  return {
    listenHost: field(raw, "listenHost", "string", what),
    listenPort: field(raw, "listenPort", "number", what),
    targetHost: field(raw, "targetHost", "string", what),
    targetPort: field(raw, "targetPort", "number", what),
    targetId: field(raw, "targetId", "string", what),
    dialers,
    seed: field(raw, "seed", "number", what),
  };
}

export function decodeCommand(value: unknown): LinkProxyCommand {
  const what = "link proxy command";
  const raw = record(value, what);
  const seq = field(raw, "seq", "number", what);
  const op = field(raw, "op", "string", what);
  switch (op) {
    case "cut":
      return { seq, op, from: field(raw, "from", "string", what), to: field(raw, "to", "string", what) };
    case "degrade": {
      const fault = record(raw.fault, `${what} fault`);
      return {
        seq,
        op,
        from: field(raw, "from", "string", what),
        to: field(raw, "to", "string", what),
        fault: {
          delayMs: field(fault, "delayMs", "number", `${what} fault`),
          jitterMs: field(fault, "jitterMs", "number", `${what} fault`),
          lossPercent: field(fault, "lossPercent", "number", `${what} fault`),
        },
      };
    }
    case "heal":
      return { seq, op };
    default:
      throw new Error(`${what}: unknown op "${op}"`);
  }
}

function decodeReport(value: unknown): LinkProxyReport {
  const what = "link proxy report";
  const raw = record(value, what);
  const type = field(raw, "type", "string", what);
  switch (type) {
    case "ready":
      return { type, port: field(raw, "port", "number", what) };
    case "done":
      return { type, seq: field(raw, "seq", "number", what) };
    case "failed":
      return { type, seq: field(raw, "seq", "number", what), message: field(raw, "message", "string", what) };
    default:
      throw new Error(`${what}: unknown type "${type}"`);
  }
}
