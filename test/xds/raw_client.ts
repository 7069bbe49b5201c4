// An ADS client built on Envoy's protos and plain grpc-js, for tests and the fan-out benchmark:
// unlike @grpc/grpc-js-xds it does exactly what it is told, so a test can ACK, NACK, send stale
// nonces and speak delta xDS, and see every response the server sends.

import * as grpc from "@grpc/grpc-js";
import { adsServiceDefinition } from "../../src/api/xds/service.js";
import { loadXdsProtos, type XdsProtos } from "../../src/api/xds/protos.js";

export interface AnyMessage {
  readonly type_url: string;
  readonly value: Uint8Array;
}

export interface SotwResponse {
  readonly version_info: string;
  readonly type_url: string;
  readonly nonce: string;
  readonly resources: readonly AnyMessage[];
  readonly control_plane: { readonly identifier: string } | null;
}

export interface DeltaResponse {
  readonly system_version_info: string;
  readonly type_url: string;
  readonly nonce: string;
  readonly resources: readonly { readonly name: string; readonly version: string; readonly resource: AnyMessage }[];
  readonly removed_resources: readonly string[];
}

const CONVERSION = { defaults: true, arrays: true, objects: true, longs: Number, enums: String } as const;

/**
 * A grpc-js client of its own connection (not shared with other clients in the process).
 * `channelOptions` adds to it, e.g. keepalive pings to notice a node that stopped answering.
 */
export function adsClient(address: string, channelOptions: grpc.ChannelOptions = {}): grpc.Client {
  return new grpc.Client(address, grpc.credentials.createInsecure(), { ...channelOptions, "grpc.use_local_subchannel_pool": 1 });
}

/**
 * One ADS stream: requests are plain objects in the proto's field names; responses, decoded
 * messages read in the same names (absent fields read as their defaults), queue until taken.
 */
export class RawAdsStream<R> {
  private readonly received: R[] = [];
  private readonly waiters: (() => void)[] = [];
  private statusValue: grpc.StatusObject | undefined;
  /** When set, each response goes to it as it arrives, instead of to the queue next() reads. */
  onResponse: ((response: R) => void) | undefined;
  /** When set, called once with the stream's status as it ends. */
  onEnd: ((status: grpc.StatusObject) => void) | undefined;

  private constructor(
    private readonly protos: XdsProtos,
    private readonly call: grpc.ClientDuplexStream<Buffer, Buffer>,
    private readonly requestType: "DiscoveryRequest" | "DeltaDiscoveryRequest",
    decode: (bytes: Buffer) => R,
  ) {
    call.on("data", (bytes: Buffer) => {
      const response = decode(bytes);
      if (this.onResponse !== undefined) {
        this.onResponse(response);
        return;
      }
      this.received.push(response);
      this.wake();
    });
    call.on("status", (status: grpc.StatusObject) => {
      this.statusValue = status;
      this.onEnd?.(status);
      this.wake();
    });
    call.on("error", () => {});
  }

  /** A state-of-the-world stream: ADS's, or `method` that speaks the same messages (SDS's StreamSecrets). */
  static async sotw(client: grpc.Client, metadata = new grpc.Metadata(), m: grpc.MethodDefinition<Buffer, Buffer> = adsServiceDefinition.StreamAggregatedResources): Promise<RawAdsStream<SotwResponse>> {
    const protos = await loadXdsProtos();
    const call = client.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, metadata);
    return new RawAdsStream(protos, call, "DiscoveryRequest", (bytes) => protos.DiscoveryResponse.decode(bytes) as unknown as SotwResponse);
  }

  /** A delta stream: ADS's, or `method` that speaks the same messages (SDS's DeltaSecrets). */
  static async delta(client: grpc.Client, metadata = new grpc.Metadata(), m: grpc.MethodDefinition<Buffer, Buffer> = adsServiceDefinition.DeltaAggregatedResources): Promise<RawAdsStream<DeltaResponse>> {
    const protos = await loadXdsProtos();
    const call = client.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, metadata);
    return new RawAdsStream(protos, call, "DeltaDiscoveryRequest", (bytes) => protos.DeltaDiscoveryResponse.decode(bytes) as unknown as DeltaResponse);
  }

  /** Sends a request given in the proto's field names (no enums: a plain object encodes as it is). */
  send(request: object): void {
    this.call.write(Buffer.from(this.protos[this.requestType].encode(request).finish()));
  }

  /** Bytes as they are, for a request that is not a valid message. */
  sendRaw(bytes: Buffer): void {
    this.call.write(bytes);
  }

  /** Responses received and not yet taken. */
  get pending(): number {
    return this.received.length;
  }

  /** The next response, waiting up to `timeoutMs` for it. */
  async next(timeoutMs = 5000): Promise<R> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length === 0) {
      if (this.statusValue !== undefined) throw new Error(`the stream ended with ${this.statusValue.code} ${this.statusValue.details} before another response`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.received.shift() as R;
  }

  /** How the stream ended, waiting up to `timeoutMs`. */
  async status(timeoutMs = 5000): Promise<grpc.StatusObject> {
    const deadline = Date.now() + timeoutMs;
    while (this.statusValue === undefined) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the stream did not end within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.statusValue;
  }

  close(): void {
    this.call.cancel();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/** A resource's message as a plain object, decoded with the type its Any names. */
export function decodeAny(protos: XdsProtos, any: AnyMessage): Record<string, unknown> {
  const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
  const type = [protos.Listener, protos.Cluster, protos.ClusterLoadAssignment, protos.HttpConnectionManager, protos.Router, protos.Secret].find((t) => t.fullName === `.${typeName}`);
  if (type === undefined) throw new Error(`no decoder for ${any.type_url}`);
  const plain: Record<string, unknown> = type.toObject(type.decode(any.value), CONVERSION);
  return plain;
}

export interface DecodedAssignment {
  readonly cluster_name: string;
  readonly endpoints: readonly {
    readonly locality: { readonly region: string; readonly zone: string; readonly sub_zone: string } | null;
    readonly load_balancing_weight: { readonly value: number } | null;
    readonly lb_endpoints: readonly {
      readonly endpoint: { readonly address: { readonly socket_address: { readonly address: string; readonly port_value: number } } };
      readonly health_status: string;
      readonly load_balancing_weight: { readonly value: number } | null;
    }[];
  }[];
}

/** A ClusterLoadAssignment's endpoints as "address:port" strings, sorted. */
export function endpointAddresses(assignment: DecodedAssignment): string[] {
  return assignment.endpoints.flatMap((g) => g.lb_endpoints.map((e) => `${e.endpoint.address.socket_address.address}:${e.endpoint.address.socket_address.port_value}`)).sort();
}
