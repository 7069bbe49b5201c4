// Who is at the other end of a connected Unix socket, as the kernel recorded it at connect():
// SO_PEERCRED, read by the native addon in native/peer_credentials (Node has no API for it).
// The addon is built by `npm run build` (native/build); it is loaded on first use, so a node that
// serves no Workload API never needs it.

import type { Socket } from "node:net";
import { loadNativeAddon } from "./native_addon.js";

/** The process that connected: its pid, effective uid and effective gid when it called connect(). */
export interface PeerCredentials {
  /** -1 where the platform does not report it (getpeereid outside Linux). */
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

interface PeerCredentialsAddon {
  peerCredentials(fd: number): unknown;
}

let addon: PeerCredentialsAddon | undefined;

function loadAddon(): PeerCredentialsAddon {
  addon ??= loadNativeAddon("peer_credentials", ["peerCredentials"]) as PeerCredentialsAddon;
  return addon;
}

/** Loads the addon now, so a node that will need it fails at start rather than at its first caller. */
export function ensurePeerCredentialsAvailable(): void {
  loadAddon();
}

/**
 * The credentials of the peer of `socket`, a connected Unix-domain socket. Throws when the socket
 * has no file descriptor (closed, or not a libuv pipe) or the kernel refuses (the error's `code`
 * is the errno name).
 */
export function peerCredentials(socket: Socket): PeerCredentials {
  // net.Socket keeps its libuv handle in `_handle`; its `fd` getter is the descriptor on Unix.
  // Undocumented but stable since Node 0.x, and the only way to reach the descriptor.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== "number" || !Number.isInteger(fd) || fd < 0) {
    throw new Error(`the connection has no file descriptor (got ${String(fd)}); it is closed or is not a Unix socket`);
  }
  return decodeCredentials(loadAddon().peerCredentials(fd));
}

function decodeCredentials(value: unknown): PeerCredentials {
  const v = value as { pid?: unknown; uid?: unknown; gid?: unknown } | null;
  const { pid, uid, gid } = v ?? {};
  const isId = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
  // A bug in the addon, not a bad request: the caller treats it as a refused connection.
  if (!isId(uid) || !isId(gid) || typeof pid !== "number" || !Number.isInteger(pid) || pid < -1) {
    throw new Error(`the peer-credentials addon answered ${JSON.stringify(value)}, not {pid, uid, gid}`);
  }
  return { pid, uid, gid };
}
