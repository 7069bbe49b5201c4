// Compile-time only (tsc checks it in `npm run lint` and `npm run build`; nothing here runs). The
// client's wire types are written from the native API's shapes instead of imported from the
// server, so nothing else would notice the two drifting apart: what the client may send, the
// registry must accept, and the vocabularies must be the same words.

import type * as client from "../../src/client/types.js";
import type * as model from "../../src/registry/model.js";
import type * as registry from "../../src/registry/registry.js";

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Accepts<Server, Sent> = [Sent] extends [Server] ? true : false;

export const wireTypesAgree: [
  Accepts<registry.RegisterInput, client.RegisterInput>,
  Accepts<registry.CheckInput, client.CheckInput>,
  Same<keyof registry.RegisterInput, keyof client.RegisterInput>,
  Same<keyof registry.CheckInput, keyof client.CheckInput>,
  Same<model.HealthStatus, client.HealthStatus>,
  Same<model.CheckKind, client.CheckKind>,
  Same<model.Weights, client.Weights>,
] = [true, true, true, true, true, true, true];
