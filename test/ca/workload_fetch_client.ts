// A Workload API client run as its own process (under another uid by workload_attest.test.ts):
// `node workload_fetch_client.js <socket path> <FetchX509SVID|FetchX509Bundles> <timeout ms>`
// opens the stream, waits for its first message or its status, and prints one JSON line: the
// message (DER fields in base64) or the status code and details. It exits 0 either way; a
// non-zero exit means the client itself broke.

import * as grpc from "@grpc/grpc-js";
import { loadProtoService } from "../../src/api/protos.js";

export interface FetchedSvid {
  readonly spiffe_id: string;
  readonly x509_svid: string;
  readonly x509_svid_key: string;
  readonly bundle: string;
}

export type FetchOutcome =
  | { readonly kind: "message"; readonly uid: number; readonly gid: number; readonly svids?: readonly FetchedSvid[]; readonly bundles?: Readonly<Record<string, string>> }
  | { readonly kind: "status"; readonly uid: number; readonly gid: number; readonly code: number; readonly details: string };

interface RawSvid { spiffe_id: string; x509_svid: Buffer; x509_svid_key: Buffer; bundle: Buffer }
interface RawMessage { svids?: RawSvid[]; bundles?: Record<string, Buffer> }

function main(): void {
  const [socketPath, method, timeoutText] = process.argv.slice(2);
  const timeoutMs = Number(timeoutText);
  if (socketPath === undefined || (method !== "FetchX509SVID" && method !== "FetchX509Bundles") || !(timeoutMs > 0)) {
    process.stderr.write("usage: workload_fetch_client.js SOCKET FetchX509SVID|FetchX509Bundles TIMEOUT_MS\n");
    process.exit(2);
  }
  const uid = process.getuid?.() ?? -1;
  const gid = process.getgid?.() ?? -1;
  const service = loadProtoService("spiffe/workloadapi.proto", "SpiffeWorkloadAPI");
  const m = service[method];
  const client = new grpc.Client(`unix://${socketPath}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata({ waitForReady: true });
  metadata.set("workload.spiffe.io", "true");
  const call = client.makeServerStreamRequest<object, RawMessage>(m.path, (v: object) => m.requestSerialize(v), (b: Buffer) => m.responseDeserialize(b) as RawMessage, {}, metadata);
  const finish = (outcome: FetchOutcome): void => {
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
    call.cancel();
    client.close();
    process.exit(0);
  };
  const timer = setTimeout(() => {
    process.stderr.write(`no message and no status within ${timeoutMs} ms\n`);
    process.exit(1);
  }, timeoutMs);
  call.on("data", (msg: RawMessage) => {
    clearTimeout(timer);
    finish({
      kind: "message",
      uid,
      gid,
      ...(msg.svids === undefined ? {} : {
        svids: msg.svids.map((s) => ({ spiffe_id: s.spiffe_id, x509_svid: s.x509_svid.toString("base64"), x509_svid_key: s.x509_svid_key.toString("base64"), bundle: s.bundle.toString("base64") })),
      }),
      ...(msg.bundles === undefined ? {} : { bundles: Object.fromEntries(Object.entries(msg.bundles).map(([td, der]) => [td, der.toString("base64")])) }),
    });
  });
  call.on("error", (err: grpc.ServiceError) => {
    clearTimeout(timer);
    finish({ kind: "status", uid, gid, code: err.code, details: err.details });
  });
}

main();
