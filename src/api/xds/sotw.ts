// State-of-the-world ADS (StreamAggregatedResources). Each request carries the whole list of
// names the client wants of one type, and answers (ACKs or NACKs) the latest response of that
// type by its nonce. A request whose nonce is not the latest response's is stale: the client sent
// it before it saw that response, and will send another once it has, so it is ignored whole.

import type { EncodedResource } from "./cache.js";
import { encodeMessage } from "./protos.js";
import type { ResourceType } from "./resources.js";
import { decodeRequest, readNode, readStatus, readString, readStrings, XdsSession, type ClientNode, type RpcStatus, type XdsCall, type XdsHub } from "./session.js";
import type { ResponsePlan, ResponseShape } from "./subscription.js";

interface SotwRequest {
  readonly versionInfo: string;
  readonly node: ClientNode | undefined;
  readonly resourceNames: readonly string[];
  readonly typeUrl: string;
  readonly responseNonce: string;
  readonly errorDetail: RpcStatus | undefined;
}

const shapeOf = (type: ResourceType): ResponseShape => (type.fullStateInSotw ? "full-state" : "incremental");

export class SotwSession extends XdsSession {
  /** Per type URL, the revision of the last version_info sent and how often it was sent already. */
  private readonly lastVersions = new Map<string, { revision: number; repeat: number }>();

  constructor(hub: XdsHub, call: XdsCall, onClose: (session: XdsSession) => void) {
    super(hub, call, "sotw", onClose);
  }

  protected handle(bytes: Buffer): void {
    const request = this.decode(bytes);
    this.identify(request.node);
    const found = this.subscriptionFor(request.typeUrl, shapeOf);
    if (found === undefined) return;
    const { sub } = found;
    if (sub.nonce !== "" && request.responseNonce !== sub.nonce) {
      this.hub.stats.staleRequests++;
      return;
    }
    if (sub.awaitingAck) this.answer(sub, request.errorDetail, request.versionInfo);
    sub.replaceNames(request.resourceNames);
    this.schedule();
  }

  protected encodeResponse(type: ResourceType, plan: ResponsePlan<EncodedResource>, nonce: string): Buffer {
    const head = encodeMessage(this.hub.protos.DiscoveryResponse, {
      version_info: this.versionFor(type.typeUrl),
      type_url: type.typeUrl,
      nonce,
      control_plane: { identifier: this.hub.controlPlaneId },
    });
    return Buffer.concat([head, ...plan.resources.map((r) => r.sotwField)]);
  }

  /**
   * The response's version_info: the registry revision the node had built its resources up to,
   * with ".N" when this stream already sent a response of the type at that revision. Resources
   * can change while that revision stands (a rebuild held back or built in slices is published
   * later at the revision already announced; secrets and server listeners follow the CA and the
   * intentions, not the registry), and no two responses on a stream may carry one version.
   */
  private versionFor(typeUrl: string): string {
    const revision = this.hub.cache.builtRevision;
    const last = this.lastVersions.get(typeUrl);
    const repeat = last?.revision === revision ? last.repeat + 1 : 0;
    this.lastVersions.set(typeUrl, { revision, repeat });
    return repeat === 0 ? String(revision) : `${revision}.${repeat}`;
  }

  private decode(bytes: Buffer): SotwRequest {
    const m = decodeRequest(this.hub.protos.DiscoveryRequest, bytes);
    return {
      versionInfo: readString(m.version_info, "version_info"),
      node: readNode(m.node),
      resourceNames: readStrings(m.resource_names, "resource_names"),
      typeUrl: readString(m.type_url, "type_url"),
      responseNonce: readString(m.response_nonce, "response_nonce"),
      errorDetail: readStatus(m.error_detail),
    };
  }
}
