// `cairn snapshot save|restore|inspect`: back up a running cluster to a file, restore one into a
// cluster, and read one offline. Human-readable output by default, `--json` for scripts; a
// progress bar on stderr while a file moves (plain lines when stderr is not a terminal).

import { rename, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import { request as httpsRequest } from "node:https";
import { errorMessage } from "../common/errors.js";
import { SNAPSHOT_RESTORE_BYTES_MAX } from "../state/restore.js";
import type { BackupSection, SectionSummary } from "../state/sections.js";
import { type SnapshotHeader, type SnapshotHeaderJson, checkSnapshotFile, snapshotHeaderJson } from "../state/snapshot_file.js";
import { Progress, type ProgressStream, formatBytes } from "./progress.js";

/** Where the commands go without --addr or CAIRN_HTTP_ADDR: node1 of `cairn dev`. */
const DEFAULT_ADDR = "http://127.0.0.1:8501";
/** A restore's body goes out in pieces of this size, each counted by the progress bar. */
const UPLOAD_PIECE_BYTES = 256 * 1024;
/**
 * A request whose socket is silent this long is abandoned. A restore's answer comes only once
 * the cluster has committed every chunk, so this is far longer than any one Raft write.
 */
const RESPONSE_IDLE_TIMEOUT_MS = 10 * 60 * 1000;
/** A JSON answer (an error, a restore's summary) is read up to this many bytes: enough for any, never a whole snapshot. */
const ANSWER_BYTES_MAX = 64 * 1024;
/** The snapshot file holds CA keys (sealed only under a KEK) and token hashes: only its owner may read it. */
const SNAPSHOT_FILE_MODE = 0o600;

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

export const SNAPSHOT_USAGE = `cairn snapshot: back up and restore a cluster's whole state (registry, CA, ACLs, key/value)

  cairn snapshot save FILE       save a consistent snapshot from any node into FILE (mode 0600)
  cairn snapshot restore FILE    restore FILE into the cluster, through Raft, on every node
  cairn snapshot inspect FILE    print FILE's header and what each section holds (offline)

flags:
  --addr URL       the node to ask (env CAIRN_HTTP_ADDR; default ${DEFAULT_ADDR}); host:port means http://
  --token SECRET   ACL token with operator:write (env CAIRN_TOKEN)
  --force          restore: take a snapshot taken from another cluster (its id differs)
  --json           print the answer as JSON
  -h, --help       this help
`;

/** Where a command writes; process.stdout and process.stderr unless a caller gives others. */
export interface SnapshotIo {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: ProgressStream;
}

interface Flags {
  readonly command: "save" | "restore" | "inspect";
  readonly file: string;
  readonly addr: URL;
  readonly token: string | undefined;
  readonly force: boolean;
  readonly json: boolean;
}

class UsageError extends Error {}

/** Runs `cairn snapshot ...` with `argv` (the words after "snapshot"); answers the exit code. */
export async function runSnapshot(argv: readonly string[], env: NodeJS.ProcessEnv, io: SnapshotIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let flags: Flags | "help";
  try {
    flags = parseFlags(argv, env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`cairn snapshot: ${err.message}\n\n${SNAPSHOT_USAGE}`);
    return EXIT_USAGE;
  }
  if (flags === "help") {
    io.stdout.write(SNAPSHOT_USAGE);
    return EXIT_OK;
  }
  try {
    switch (flags.command) {
      case "save":
        return await save(flags, io);
      case "restore":
        return await restore(flags, io);
      case "inspect":
        return inspect(flags, io);
    }
  } catch (err) {
    io.stderr.write(`cairn snapshot ${flags.command}: ${errorMessage(err)}\n`);
    return EXIT_FAILED;
  }
}

function parseFlags(argv: readonly string[], env: NodeJS.ProcessEnv): Flags | "help" {
  const [command, ...rest] = argv;
  if (command === undefined || command === "help" || command === "--help" || command === "-h") return "help";
  if (command !== "save" && command !== "restore" && command !== "inspect") {
    throw new UsageError(`unknown command "${command}": use save, restore or inspect`);
  }
  const files: string[] = [];
  let addr = env.CAIRN_HTTP_ADDR;
  let token = env.CAIRN_TOKEN;
  let force = false;
  let json = false;
  for (let i = 0; i < rest.length; i++) {
    const word = rest[i];
    const eq = word.indexOf("=");
    const name = word.startsWith("--") && eq > 0 ? word.slice(0, eq) : word;
    const value = (): string => {
      if (name !== word) return word.slice(eq + 1);
      const next = rest[++i];
      if (next === undefined) throw new UsageError(`${name} needs a value`);
      return next;
    };
    switch (name) {
      case "-h":
      case "--help":
        return "help";
      case "--addr":
        addr = value();
        break;
      case "--token":
        token = value();
        break;
      case "--force":
        if (command !== "restore") throw new UsageError("--force applies to restore only");
        force = true;
        break;
      case "--json":
        json = true;
        break;
      default:
        if (word.startsWith("-")) throw new UsageError(`unknown flag ${word}`);
        files.push(word);
    }
  }
  if (files.length !== 1) throw new UsageError(`${command} takes one FILE, not ${files.length === 0 ? "none" : files.join(" ")}`);
  return { command, file: files[0], addr: parseAddr(addr ?? DEFAULT_ADDR), token: token === "" ? undefined : token, force, json };
}

function parseAddr(text: string): URL {
  const withScheme = /^[a-z]+:\/\//i.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new UsageError(`--addr "${text}" is not an address like http://127.0.0.1:8501`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UsageError(`--addr "${text}" must be http:// or https://`);
  return url;
}

// ---------------------------------------------------------------- save

async function save(flags: Flags, io: SnapshotIo): Promise<number> {
  const res = await send(flags, "GET", "/v1/snapshot");
  if (res.statusCode !== 200) return await refused(res, flags, io);
  const lengthHeader = res.headers["content-length"];
  const totalBytes = lengthHeader === undefined ? undefined : Number(lengthHeader);
  const progress = new Progress({ label: "saving snapshot", totalBytes, stream: io.stderr });
  const chunks: Buffer[] = [];
  let received = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      received += chunk.byteLength;
      progress.update(received);
    }
  } catch (err) {
    progress.abandon();
    throw new Error(`the snapshot stopped arriving after ${received} bytes: ${errorMessage(err)}`, { cause: err });
  }
  progress.finish();
  const file = Buffer.concat(chunks);
  // What arrived is checked whole before it becomes FILE: a cut connection must not leave a file that looks like a backup.
  const checked = checkSnapshotFile(file);
  const partial = `${flags.file}.partial-${process.pid}`;
  await writeFile(partial, file, { mode: SNAPSHOT_FILE_MODE, flush: true });
  await rename(partial, flags.file);
  if (flags.json) {
    io.stdout.write(`${JSON.stringify({ file: flags.file, fileBytes: file.byteLength, snapshot: snapshotHeaderJson(checked.header), sections: sectionsJson(checked.sections) }, null, 2)}\n`);
  } else {
    const h = checked.header;
    io.stdout.write(`Saved ${flags.file} (${formatBytes(file.byteLength)}): index ${h.index} (term ${h.term}) of cluster ${h.clusterId}, served by node ${h.nodeId}\n`);
    io.stdout.write(`  ${sectionsLine(checked.sections)}\n  sha256 ${h.bodySha256Hex}\n`);
  }
  return EXIT_OK;
}

// ---------------------------------------------------------------- restore

async function restore(flags: Flags, io: SnapshotIo): Promise<number> {
  const file = readSnapshotFile(flags.file);
  // Checked here first: a damaged file is refused at once, without sending it anywhere.
  const checked = checkSnapshotFile(file);
  if (checked.header.bodyBytes > SNAPSHOT_RESTORE_BYTES_MAX) {
    throw new Error(`${flags.file} holds ${formatBytes(checked.header.bodyBytes)} of state, more than a restore takes (${formatBytes(SNAPSHOT_RESTORE_BYTES_MAX)})`);
  }
  const progress = new Progress({ label: "sending snapshot", totalBytes: file.byteLength, stream: io.stderr });
  let res: IncomingMessage;
  try {
    res = await send(flags, "PUT", `/v1/snapshot${flags.force ? "?force" : ""}`, {
      body: file,
      onSent: (bytes) => {
        progress.update(bytes);
        if (bytes === file.byteLength) progress.finish("waiting for the cluster to commit the restore on every node...");
      },
    });
  } finally {
    progress.abandon();
  }
  if (res.statusCode !== 200) return await refused(res, flags, io);
  const answer = decodeRestoreAnswer((await readBody(res, ANSWER_BYTES_MAX)).toString("utf8"));
  if (flags.json) {
    io.stdout.write(`${JSON.stringify({ file: flags.file, ...answer }, null, 2)}\n`);
  } else {
    const from = answer.snapshot;
    io.stdout.write(`Restored ${flags.file} at index ${answer.index}${answer.forced ? " (forced: the snapshot is of another cluster)" : ""}: ` +
      `every node now holds the state of cluster ${from.clusterId} at its index ${from.index}, taken ${from.takenAt}\n`);
    io.stdout.write(`  ${answer.sections.map((s) => `${s.name}: ${summaryText(s.summary)}`).join("; ")}\n`);
  }
  return EXIT_OK;
}

interface RestoreAnswer {
  readonly index: number;
  readonly snapshot: SnapshotHeaderJson;
  readonly sections: readonly { readonly name: string; readonly summary: SectionSummary }[];
  readonly chunks: number;
  readonly forced: boolean;
}

/** The node's answer to a restore, checked for what this command prints. */
function decodeRestoreAnswer(text: string): RestoreAnswer {
  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch {
    throw new Error(`the node answered the restore with something that is not JSON: ${text.slice(0, 200)}`);
  }
  const a = answer as Partial<RestoreAnswer> | null;
  if (a === null || typeof a.index !== "number" || typeof a.snapshot?.clusterId !== "string" || !Array.isArray(a.sections) || typeof a.forced !== "boolean") {
    throw new Error(`the node's answer to the restore lacks its index, snapshot, sections or forced: ${text.slice(0, 200)}`);
  }
  return a as RestoreAnswer;
}

// ---------------------------------------------------------------- inspect

function inspect(flags: Flags, io: SnapshotIo): number {
  const file = readSnapshotFile(flags.file);
  const { header, sections } = checkSnapshotFile(file);
  if (flags.json) {
    io.stdout.write(`${JSON.stringify({ file: flags.file, fileBytes: file.byteLength, snapshot: snapshotHeaderJson(header), sections: sectionsJson(sections) }, null, 2)}\n`);
    return EXIT_OK;
  }
  io.stdout.write(inspectText(flags.file, file.byteLength, header, sections));
  return EXIT_OK;
}

/** `inspect`'s human-readable answer: the header, then a table of the sections. */
export function inspectText(path: string, fileBytes: number, h: SnapshotHeader, sections: readonly BackupSection[]): string {
  const facts: [string, string][] = [
    ["File", `${path} (${formatBytes(fileBytes)})`],
    ["Format", `version ${h.formatVersion}`],
    ["Cluster", h.clusterId],
    ["Index", `${h.index} (term ${h.term})`],
    ["Taken", `${new Date(h.takenAtMs).toISOString()} by node ${h.nodeId}`],
    ["Body", `${formatBytes(h.bodyBytes)}, SHA-256 ${h.bodySha256Hex} (verified)`],
  ];
  const rows = [["Section", "Size", "Contents"], ...sections.map((s) => [s.name, formatBytes(s.bytes.byteLength), summaryText(s.summary)])];
  return `${columns(facts)}\n${columns(rows)}`;
}

// ---------------------------------------------------------------- output

function sectionsJson(sections: readonly BackupSection[]): { name: string; bytes: number; summary: SectionSummary }[] {
  return sections.map((s) => ({ name: s.name, bytes: s.bytes.byteLength, summary: s.summary }));
}

function sectionsLine(sections: readonly BackupSection[]): string {
  return sections.map((s) => `${s.name}: ${summaryText(s.summary)}`).join("; ");
}

/** {services: 3, trustDomain: "cairn.local"} as "3 services, trust domain cairn.local". */
export function summaryText(summary: SectionSummary): string {
  return Object.entries(summary).map(([key, value]) => {
    if (typeof value === "string") return `${key.replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`)} ${value}`;
    const one = key.endsWith("ies") ? `${key.slice(0, -3)}y` : key.endsWith("s") ? key.slice(0, -1) : key;
    return `${value} ${value === 1 ? one : key}`;
  }).join(", ");
}

/** Rows as left-aligned columns, two spaces apart. */
function columns(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, cell.length); });
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join("  ")).join("\n") + "\n";
}

// ---------------------------------------------------------------- HTTP

function readSnapshotFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read ${path}: ${errorMessage(err)}`, { cause: err });
  }
}

/** A request to the node; resolves with its answer once the headers arrive. `onSent` counts the body bytes handed to the socket. */
function send(flags: Flags, method: string, path: string, upload?: { readonly body: Buffer; readonly onSent: (bytes: number) => void }): Promise<IncomingMessage> {
  const url = new URL(path, flags.addr);
  const headers: OutgoingHttpHeaders = {
    ...(flags.token === undefined ? {} : { "x-consul-token": flags.token }),
    ...(upload === undefined ? {} : { "content-type": "application/octet-stream", "content-length": upload.body.byteLength }),
  };
  const requestOf = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = requestOf(url, { method, headers }, resolve);
    req.setTimeout(RESPONSE_IDLE_TIMEOUT_MS, () => req.destroy(new Error(`${url.host} sent nothing for ${RESPONSE_IDLE_TIMEOUT_MS / 1000} s`)));
    req.on("error", (err) => reject(new Error(`cannot reach ${url.origin}: ${errorMessage(err)} (is a cairn node listening there? give --addr or CAIRN_HTTP_ADDR)`)));
    if (upload === undefined) {
      req.end();
      return;
    }
    const { body, onSent } = upload;
    let at = 0;
    const writeMore = (): void => {
      while (at < body.byteLength) {
        const end = Math.min(body.byteLength, at + UPLOAD_PIECE_BYTES);
        const sentThrough = end;
        const more = req.write(body.subarray(at, end), () => onSent(sentThrough));
        at = end;
        if (!more) {
          req.once("drain", writeMore);
          return;
        }
      }
      req.end();
    };
    writeMore();
  });
}

/** A non-200 answer: its error on stderr (or as JSON), and the exit code. */
async function refused(res: IncomingMessage, flags: Flags, io: SnapshotIo): Promise<number> {
  const text = (await readBody(res, ANSWER_BYTES_MAX)).toString("utf8");
  let message = text.trim();
  try {
    const parsed = JSON.parse(text) as { error?: unknown };
    if (typeof parsed.error === "string") message = parsed.error;
  } catch {
    // Not JSON: the text itself is the message.
  }
  const status = res.statusCode ?? 0;
  const hint = status === 403 ? " (give a token with operator:write: --token or CAIRN_TOKEN)" : "";
  if (flags.json) io.stdout.write(`${JSON.stringify({ status, error: message })}\n`);
  io.stderr.write(`cairn snapshot ${flags.command}: ${flags.addr.host} answered ${status}: ${message}${hint}\n`);
  return EXIT_FAILED;
}

async function readBody(res: IncomingMessage, bytesMax: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    if (total + chunk.byteLength > bytesMax) {
      chunks.push(chunk.subarray(0, bytesMax - total));
      res.destroy();
      break;
    }
    chunks.push(chunk);
    total += chunk.byteLength;
  }
  return Buffer.concat(chunks);
}

