// One ADS stream: what state-of-the-world and delta streams share. A stream owns one
// TypeSubscription per resource type it asked for, answers ACKs and NACKs, and, when the fan-out
// or a request gives it something to send, writes at most one response per type until the client
// answers it. The protocol's own rules live in sotw.ts and delta.ts.

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type protobuf from "protobufjs";
import { errorMessage } from "../../common/errors.js";
import type { Permissions } from "../../acl/rules.js";
import type { EncodedResource, ResourceCache } from "./cache.js";
import { certificateProviderOf } from "./mesh.js";
import type { Flushable, PushScheduler, SubscriberIndex } from "./fanout.js";
import type { XdsProtos } from "./protos.js";
import { resourceTypeOf, type ResourceKind, type ResourceType } from "./resources.js";
import type { XdsStats } from "./stats.js";
import { type ResourceSource, type ResponsePlan, type ResponseShape, SubscriptionLimitError, TypeSubscription } from "./subscription.js";

export type Subscription = TypeSubscription<EncodedResource>;

export interface XdsLimits {
  /** Names one stream may subscribe to per resource type. */
  readonly subscribedNamesMax: number;
  /** Characters of a NACK's error_detail that are logged; the rest is cut. */
  readonly nackDetailLoggedMax: number;
  /** Rejected resource names listed in a NACK's log line. */
  readonly nackNamesLoggedMax: number;
}

/** What every stream on a node shares. */
export interface XdsHub {
  readonly protos: XdsProtos;
  readonly cache: ResourceCache;
  readonly index: SubscriberIndex<Subscription>;
  readonly scheduler: PushScheduler;
  readonly stats: XdsStats;
  readonly logger: Logger;
  readonly limits: XdsLimits;
  /** Sent as each response's control_plane.identifier: which node answered. */
  readonly controlPlaneId: string;
  /** Which services this stream may see (its token's service:read); absent: all. */
  readonly visible?: (service: string) => boolean;
  /** What the stream's token may do; absent: anything (ACLs off). */
  readonly permissions?: Permissions;
  /** Where each type's resources come from for one stream; absent: the registry's cache for every type it serves. */
  readonly sources?: ResourceSources;
  /** The token secret the stream presented, for sources that act as its caller (SDS signs its leaves); never logged. */
  readonly presentedToken?: string | undefined;
}

/** Who a stream is, for sources whose resources depend on who asks. */
export interface StreamIdentity {
  /** The client as its first request named it. */
  readonly client: ClientNode | undefined;
  /** Which services the stream's token may read; undefined: every one. */
  readonly visible: ((service: string) => boolean) | undefined;
  /** What the stream's token may do; undefined: anything (ACLs off). */
  readonly permissions: Permissions | undefined;
  /** The token secret the stream presented (undefined: none), for a source that acts as its caller; never log it. */
  readonly presentedToken?: string | undefined;
  /** The IP address the stream comes from (its gRPC peer without the port), for per-address limits. */
  readonly peerAddress: string;
}

/** Where a stream's resources of each type come from. */
export interface ResourceSources {
  /** The source of `type`'s resources for one stream; undefined: the type is not served. */
  sourceFor(type: ResourceType, stream: StreamIdentity): ResourceSource<EncodedResource> | undefined;
}

/** The client as its first request's `node` describes it. */
export interface ClientNode {
  readonly id: string;
  readonly cluster: string;
  readonly userAgent: string;
  /** The string fields of its `node.metadata`, at most NODE_METADATA_FIELDS_MAX of them. */
  readonly metadata: ReadonlyMap<string, string>;
}

/** Node metadata fields read per stream; the rest are ignored (a client sends a handful). */
export const NODE_METADATA_FIELDS_MAX = 64;

/** google.rpc.Status, as a NACK's error_detail carries it. */
export interface RpcStatus {
  readonly code: number;
  readonly message: string;
}

/** A request that is not a well-formed xDS message: the stream ends with INVALID_ARGUMENT. */
export class XdsRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "XdsRequestError";
  }
}

export type XdsCall = grpc.ServerDuplexStream<Buffer, Buffer>;

export abstract class XdsSession implements Flushable {
  protected readonly subscriptions = new Map<ResourceKind, Subscription>();
  protected client: ClientNode | undefined;
  private nonceCount = 0;
  private closed = false;
  private pushes = 0;
  private readonly openedAtMs = Date.now();
  private readonly ignoredTypes = new Set<string>();
  /** Read once: a connection that has gone may no longer say. */
  private readonly peer: string;

  constructor(
    protected readonly hub: XdsHub,
    private readonly call: XdsCall,
    private readonly protocol: "sotw" | "delta",
    private readonly onClose: (session: XdsSession) => void,
  ) {
    this.peer = call.getPeer();
  }

  /** Starts reading requests: until now the stream was left unread (it waited for admission). */
  start(): void {
    this.call.on("data", (bytes: Buffer) => this.receive(bytes));
    // The client half-closed: it will ask nothing more, so the stream ends with OK.
    this.call.on("end", () => {
      this.close();
      this.call.end();
    });
  }

  /** Sends what every subscription has pending; the scheduler calls this. */
  flush(): void {
    if (this.closed) return;
    for (const sub of this.subscriptions.values()) {
      const plan = sub.takeResponse();
      if (plan === undefined) continue;
      const nonce = (++this.nonceCount).toString(36);
      sub.nonce = nonce;
      this.pushes++;
      this.hub.stats.pushes++;
      // The stream's buffer holds at most one unacknowledged response per type, so the result
      // of write() (false past its buffer's mark) needs no handling of its own.
      this.call.write(this.encodeResponse(sub.type, plan, nonce));
    }
  }

  /** Ends the stream with `code`; `details` is what the client reads. */
  fail(code: grpc.status, details: string): void {
    if (this.closed) return;
    this.close();
    this.call.emit("error", { code, details });
  }

  /** Leaves the fan-out; idempotent. Called on every way a stream ends. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const sub of this.subscriptions.values()) sub.close();
    this.hub.scheduler.delete(this);
    this.onClose(this);
    this.hub.logger.info({ client: this.client?.id, peer: this.peer, protocol: this.protocol, durationMs: Date.now() - this.openedAtMs, pushes: this.pushes }, "xDS stream closed");
  }

  protected abstract handle(bytes: Buffer): void;

  protected abstract encodeResponse(type: ResourceType, plan: ResponsePlan<EncodedResource>, nonce: string): Buffer;

  /** This stream's subscription to the type a request names; undefined (and logged once) for a type Cairn does not serve. */
  protected subscriptionFor(typeUrl: string, shapeOf: (type: ResourceType) => ResponseShape): { sub: Subscription; first: boolean } | undefined {
    const type = resourceTypeOf(typeUrl);
    if (type === undefined) {
      this.ignoreType(typeUrl);
      return undefined;
    }
    const known = this.subscriptions.get(type.kind);
    if (known !== undefined) return { sub: known, first: false };
    const hub = this.hub;
    const source = (hub.sources ?? registrySources(hub.cache)).sourceFor(type, { client: this.client, visible: hub.visible, permissions: hub.permissions, presentedToken: hub.presentedToken, peerAddress: peerAddressOf(this.peer) });
    if (source === undefined) {
      this.ignoreType(typeUrl);
      return undefined;
    }
    const kind = type.kind;
    const sub: Subscription = new TypeSubscription(this, type, shapeOf(type), source, hub.index, hub.limits.subscribedNamesMax);
    this.subscriptions.set(kind, sub);
    return { sub, first: true };
  }

  private ignoreType(typeUrl: string): void {
    if (!this.ignoredTypes.has(typeUrl) && this.ignoredTypes.size < IGNORED_TYPES_LOGGED_MAX) {
      this.ignoredTypes.add(typeUrl);
      this.hub.logger.debug({ client: this.client?.id, typeUrl }, "xDS request for a resource type this stream is not served; ignored");
    }
  }

  /** The first request names the client; later ones may leave `node` out. */
  protected identify(node: ClientNode | undefined): void {
    if (this.client !== undefined || node === undefined) return;
    this.client = node;
    this.hub.logger.info({ client: node.id, cluster: node.cluster, userAgent: node.userAgent, peer: this.peer, protocol: this.protocol }, "xDS stream opened");
  }

  /** A request answering `sub`'s unacknowledged response: an ACK, or with error_detail a NACK. */
  protected answer(sub: Subscription, errorDetail: RpcStatus | undefined, clientVersion: string): void {
    if (errorDetail === undefined) {
      if (sub.ack()) this.hub.stats.acks++;
      return;
    }
    const rejected = sub.nack();
    if (rejected === undefined) return;
    this.hub.stats.nacks++;
    const { nackDetailLoggedMax, nackNamesLoggedMax } = this.hub.limits;
    this.hub.logger.warn({
      client: this.client?.id,
      typeUrl: sub.type.typeUrl,
      nonce: sub.nonce,
      clientVersion,
      rejected: rejected.slice(0, nackNamesLoggedMax),
      rejectedCount: rejected.length,
      errorCode: errorDetail.code,
      errorDetail: errorDetail.message.length > nackDetailLoggedMax ? `${errorDetail.message.slice(0, nackDetailLoggedMax)}...` : errorDetail.message,
    }, "xDS client rejected (NACKed) a response; it keeps the versions it accepted before, and the rejected ones are not sent again until they change");
  }

  protected schedule(): void {
    this.hub.scheduler.enqueue(this);
  }

  private receive(bytes: Buffer): void {
    if (this.closed) return;
    try {
      this.handle(bytes);
    } catch (err) {
      if (err instanceof SubscriptionLimitError) {
        this.fail(grpc.status.RESOURCE_EXHAUSTED, err.message);
      } else if (err instanceof XdsRequestError) {
        this.fail(grpc.status.INVALID_ARGUMENT, err.message);
      } else {
        this.hub.logger.error({ client: this.client?.id, err: errorMessage(err) }, "xDS request failed");
        this.fail(grpc.status.INTERNAL, `the xDS request failed on this node: ${errorMessage(err)}`);
      }
    }
  }
}

/** A gRPC peer ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", or an address without a scheme) as an IP address. */
export function peerAddressOf(peer: string): string {
  const bare = peer.replace(/^ipv[46]:/, "");
  const bracketed = /^\[([^\]]+)\](:\d+)?$/.exec(bare);
  if (bracketed !== null) return bracketed[1];
  const colon = bare.lastIndexOf(":");
  return colon > 0 && bare.indexOf(":") === colon ? bare.slice(0, colon) : bare;
}

/** Unserved resource types logged per stream, at most. */
const IGNORED_TYPES_LOGGED_MAX = 8;

/**
 * The registry's resources (service listeners, clusters, endpoints), whose names are service
 * names: one the stream's token may not read is, to it, absent.
 */
export function registrySources(cache: ResourceCache): ResourceSources {
  return {
    sourceFor: (type, stream) => {
      const kind = type.kind;
      if (kind !== "listener" && kind !== "cluster" && kind !== "endpoint") return undefined;
      const { visible } = stream;
      // A cluster's TLS context names the certificate provider instance the client's bootstrap defines.
      const provider = certificateProviderOf(stream.client?.metadata);
      const get = kind === "cluster" ? (name: string) => cache.cluster(name, provider) : (name: string) => cache.get(kind, name);
      if (visible === undefined) return { get, names: () => cache.names(), pending: (name) => cache.pending(kind, name) };
      return {
        get: (name) => (visible(name) ? get(name) : undefined),
        names: () => [...cache.names()].filter(visible),
        pending: (name) => visible(name) && cache.pending(kind, name),
      };
    },
  };
}

// ---------------------------------------------------------------- decoding requests strictly

/**
 * A request's fields, read straight from protobufjs' decoded message (absent fields read as the
 * proto3 defaults its prototype holds: "", [], {} and null for messages), without a conversion
 * to a plain object, since every ACK of every stream passes through here. The read* functions
 * below check each field's type.
 */
export function decodeRequest(type: protobuf.Type, bytes: Uint8Array): Readonly<Record<string, unknown>> {
  try {
    // A decoded message is an object of its fields; the index signature is what protobufjs' type leaves out.
    return type.decode(bytes) as unknown as Readonly<Record<string, unknown>>;
  } catch (err) {
    throw new XdsRequestError(`the request is not a valid ${type.fullName.slice(1)}: ${errorMessage(err)}`);
  }
}

export function readString(value: unknown, field: string): string {
  if (typeof value !== "string") throw new XdsRequestError(`${field} is not a string`);
  return value;
}

export function readStrings(value: unknown, field: string): string[] {
  if (!Array.isArray(value)) throw new XdsRequestError(`${field} is not a list of strings`);
  return value.map((v, i) => readString(v, `${field}[${i}]`));
}

export function readNode(value: unknown): ClientNode | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value !== "object") throw new XdsRequestError("node is not a message");
  const node = value as Record<string, unknown>;
  const name = readString(node.user_agent_name ?? "", "node.user_agent_name");
  const version = typeof node.user_agent_version === "string" ? node.user_agent_version : "";
  return {
    id: readString(node.id, "node.id"),
    cluster: readString(node.cluster, "node.cluster"),
    userAgent: version === "" ? name : `${name}/${version}`,
    metadata: readMetadataStrings(node.metadata),
  };
}

/** A google.protobuf.Struct's string fields, as protobufjs decodes it ({fields: {key: {string_value}}}). */
function readMetadataStrings(value: unknown): Map<string, string> {
  const out = new Map<string, string>();
  if (value === null || typeof value !== "object") return out;
  const fields = (value as { fields?: unknown }).fields;
  if (fields === null || typeof fields !== "object") return out;
  for (const [key, field] of Object.entries(fields as Record<string, unknown>)) {
    if (out.size >= NODE_METADATA_FIELDS_MAX) break;
    if (field === null || typeof field !== "object") continue;
    const text = (field as { string_value?: unknown }).string_value;
    if (typeof text === "string") out.set(key, text);
  }
  return out;
}

export function readStatus(value: unknown): RpcStatus | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value !== "object") throw new XdsRequestError("error_detail is not a google.rpc.Status");
  const status = value as Record<string, unknown>;
  if (typeof status.code !== "number") throw new XdsRequestError("error_detail.code is not a number");
  return { code: status.code, message: readString(status.message, "error_detail.message") };
}
