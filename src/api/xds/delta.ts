// Delta (incremental) ADS (DeltaAggregatedResources). A request does two independent things:
// it changes the subscription (names subscribed and unsubscribed, which always apply), and, when
// its response_nonce is the latest response's, it ACKs or NACKs that response. A nonce that is
// not the latest is no answer to anything, but its subscription changes still count. The first
// request of each type on a stream may list the versions the client already holds
// (initial_resource_versions), which are then not sent again. Responses carry per-resource
// versions, and removed_resources names what the client must drop or learn does not exist.

import type { EncodedResource } from "./cache.js";
import { encodeMessage } from "./protos.js";
import type { ResourceType } from "./resources.js";
import { decodeRequest, readNode, readStatus, readString, readStrings, XdsRequestError, XdsSession, type ClientNode, type RpcStatus, type XdsCall, type XdsHub } from "./session.js";
import type { ResponsePlan } from "./subscription.js";

interface DeltaRequest {
  readonly node: ClientNode | undefined;
  readonly typeUrl: string;
  readonly subscribe: readonly string[];
  readonly unsubscribe: readonly string[];
  readonly initialVersions: ReadonlyMap<string, string>;
  readonly responseNonce: string;
  readonly errorDetail: RpcStatus | undefined;
}

const NO_VERSIONS: ReadonlyMap<string, string> = new Map();

export class DeltaSession extends XdsSession {
  constructor(hub: XdsHub, call: XdsCall, onClose: (session: XdsSession) => void) {
    super(hub, call, "delta", onClose);
  }

  protected handle(bytes: Buffer): void {
    const request = this.decode(bytes);
    this.identify(request.node);
    const found = this.subscriptionFor(request.typeUrl, () => "incremental");
    if (found === undefined) return;
    const { sub, first } = found;
    if (request.responseNonce !== "") {
      if (request.responseNonce === sub.nonce) {
        if (sub.awaitingAck) this.answer(sub, request.errorDetail, "");
      } else {
        this.hub.stats.staleRequests++;
      }
    }
    // The protocol reads initial_resource_versions only from a type's first request on a stream.
    const declared = first ? request.initialVersions : NO_VERSIONS;
    if (declared.size > 0) sub.initialVersions(declared);
    sub.subscribe(request.subscribe, first, declared);
    sub.unsubscribe(request.unsubscribe);
    this.schedule();
  }

  protected encodeResponse(type: ResourceType, plan: ResponsePlan<EncodedResource>, nonce: string): Buffer {
    const head = encodeMessage(this.hub.protos.DeltaDiscoveryResponse, {
      system_version_info: String(this.hub.cache.builtRevision),
      type_url: type.typeUrl,
      nonce,
      removed_resources: plan.removed,
      control_plane: { identifier: this.hub.controlPlaneId },
    });
    return Buffer.concat([head, ...plan.resources.map((r) => r.deltaField)]);
  }

  private decode(bytes: Buffer): DeltaRequest {
    const m = decodeRequest(this.hub.protos.DeltaDiscoveryRequest, bytes);
    return {
      node: readNode(m.node),
      typeUrl: readString(m.type_url, "type_url"),
      subscribe: readStrings(m.resource_names_subscribe, "resource_names_subscribe"),
      unsubscribe: readStrings(m.resource_names_unsubscribe, "resource_names_unsubscribe"),
      initialVersions: readVersions(m.initial_resource_versions),
      responseNonce: readString(m.response_nonce, "response_nonce"),
      errorDetail: readStatus(m.error_detail),
    };
  }
}

function readVersions(value: unknown): ReadonlyMap<string, string> {
  if (value === null || typeof value !== "object") throw new XdsRequestError("initial_resource_versions is not a map of strings");
  const versions = new Map<string, string>();
  for (const [name, version] of Object.entries(value)) versions.set(name, readString(version, `initial_resource_versions[${name}]`));
  return versions;
}
