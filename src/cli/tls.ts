// `cairn tls`: makes the peer CA and node certificates that `cairn server` needs, as `consul tls`
// does for Consul.
//   cairn tls ca create   --dir D [--days N] [--force]
//   cairn tls cert create --dir D --node ID [--ip IP]... [--dns NAME]... [--days N] [--force]

import { errorMessage } from "../common/errors.js";
import { CertificateError } from "../ca/certificates.js";
import { NODE_CERTIFICATE_DAYS_DEFAULT, PEER_CA_DAYS_DEFAULT } from "../tls/peer_certificates.js";
import { TlsFileError, peerCredentialFlags, writeNodeCertificate, writePeerCa } from "../tls/files.js";
import { ConfigError } from "./config.js";

export const TLS_USAGE = `usage:
  cairn tls ca create   --dir DIR [--days N] [--force]
      writes DIR/ca.pem and DIR/ca-key.pem (mode 0600): the peer CA (default ${PEER_CA_DAYS_DEFAULT} days)
  cairn tls cert create --dir DIR --node ID [--ip IP]... [--dns NAME]... [--days N] [--force]
      writes DIR/ID.pem and DIR/ID-key.pem, signed by DIR/ca.pem, for TLS server and client use
      (default ${NODE_CERTIFICATE_DAYS_DEFAULT} days; without --ip or --dns: localhost and 127.0.0.1)
  --dir defaults to the current directory; --ip and --dns repeat or take a comma-separated list;
  --force replaces files that exist.
`;

interface TlsArgs {
  readonly dir: string;
  readonly node: string | undefined;
  readonly ips: string[];
  readonly dnsNames: string[];
  readonly days: number | undefined;
  readonly force: boolean;
}

/** Bounds how many arguments we read: `cairn tls` has no use for thousands. */
const TLS_ARGS_MAX = 256;

function parseTlsArgs(args: readonly string[], allowed: ReadonlySet<string>): TlsArgs {
  if (args.length > TLS_ARGS_MAX) throw new ConfigError(`cairn tls takes at most ${TLS_ARGS_MAX} arguments`);
  let dir = ".";
  let node: string | undefined;
  let days: number | undefined;
  let force = false;
  const ips: string[] = [];
  const dnsNames: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const eq = arg.indexOf("=");
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    if (!allowed.has(flag)) throw new ConfigError(`unknown flag ${flag} for this command\n${TLS_USAGE}`);
    if (flag === "--force") {
      force = true;
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
    if (value === undefined || value.startsWith("--")) throw new ConfigError(`${flag} needs a value`);
    const list = value.split(",").map((v) => v.trim()).filter((v) => v !== "");
    switch (flag) {
      case "--dir":
        dir = value;
        break;
      case "--node":
        node = value;
        break;
      case "--ip":
        ips.push(...list);
        break;
      case "--dns":
        dnsNames.push(...list);
        break;
      case "--days":
        days = Number(value);
        if (!Number.isInteger(days)) throw new ConfigError(`--days must be a whole number, not "${value}"`);
        break;
    }
  }
  return { dir, node, ips, dnsNames, days, force };
}

const CA_FLAGS = new Set(["--dir", "--days", "--force"]);
const CERT_FLAGS = new Set(["--dir", "--node", "--ip", "--dns", "--days", "--force"]);

/** Runs `cairn tls ...`; prints what it wrote. Operator errors become ConfigError (exit 2). */
export function runTls(args: readonly string[]): void {
  const [what, verb, ...rest] = args;
  try {
    if (what === "ca" && verb === "create") {
      const a = parseTlsArgs(rest, CA_FLAGS);
      const paths = writePeerCa(a.dir, { ...(a.days === undefined ? {} : { days: a.days }), overwrite: a.force });
      process.stdout.write(`wrote ${paths.certFile} and ${paths.keyFile} (owner-only); keep the key off the nodes if you can\n` +
        `next: cairn tls cert create --dir ${a.dir} --node ID --ip NODE_IP, once per node\n`);
      return;
    }
    if (what === "cert" && verb === "create") {
      const a = parseTlsArgs(rest, CERT_FLAGS);
      if (a.node === undefined) throw new ConfigError(`--node ID is required: the id the node runs with (cairn server --id ID)\n${TLS_USAGE}`);
      const paths = writeNodeCertificate(a.dir, a.node, { ips: a.ips, dnsNames: a.dnsNames, ...(a.days === undefined ? {} : { days: a.days }), overwrite: a.force });
      process.stdout.write(`wrote ${paths.certFile} and ${paths.keyFile} (owner-only), signed by ${paths.caFile}\n` +
        `start the node with: cairn server --id ${a.node} ${peerCredentialFlags(paths).join(" ")} ...\n`);
      return;
    }
  } catch (err) {
    if (err instanceof TlsFileError || err instanceof CertificateError) throw new ConfigError(errorMessage(err));
    throw err;
  }
  throw new ConfigError(`unknown command "cairn tls ${args.join(" ")}"\n${TLS_USAGE}`);
}
