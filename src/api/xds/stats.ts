// What the xDS server counts, for the metrics endpoint to export: gauges of streams, and counters
// of what the protocol did. Counters only grow; gauges are set where the thing they count changes.

export class XdsStats {
  /** Streams admitted and open now. */
  streamsActive = 0;
  /** Streams waiting for admission now. */
  streamsWaiting = 0;
  /** Streams that had to wait for admission (they were not admitted on arrival). */
  admissionWaits = 0;
  /** Streams refused because the admission queue was full. */
  admissionRefused = 0;
  /** Responses sent. */
  pushes = 0;
  /** Resource changes folded into a change already waiting to be sent on a stream. */
  coalesced = 0;
  acks = 0;
  nacks = 0;
  /** Requests ignored because their response_nonce was not the latest sent (state of the world). */
  staleRequests = 0;
  /** Server listeners (the mesh's) built and kept for the streams that subscribe to them. */
  serverListeners = 0;
  /** Server listeners whose content changed (owner, mTLS or RBAC) and were pushed to their subscribers. */
  serverListenerUpdates = 0;
}
