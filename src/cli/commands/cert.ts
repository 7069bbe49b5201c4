// `cairn cert issue` and `cairn cert watch`: X.509-SVIDs from the cluster's CA for programs that
// read certificates from files, as spiffe-helper writes them. Both go through the client library:
// issue signs once (a CSR of the caller's, or one made here for a new P-256 key); watch holds a
// WorkloadCertificate, which renews at about half-life and soon after a root rotation, and
// rewrites the files on every change.
//
// The files, in --out DIR:
//   svid.pem       the leaf, then its intermediates
//   svid-key.pem   its private key, PKCS#8 (mode 0600)
//   bundle.pem     every trusted root (during a rotation, the old and the new)
// Each is written whole to a temporary file in DIR and renamed over the old one, so a reader never
// sees half a file; the key is written before the certificate, so a program that reloads when
// svid.pem changes finds the key that matches it.

import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type SignedCertificate, type TlsMaterial, bundlePem, certificateChainPem, createCsr } from "../../client/client.js";
import { workloadSpiffeId } from "../../ca/spiffe.js";
import { errorMessage } from "../../common/errors.js";
import {
  type Command, CommandError, type CommandContext, EXIT_OK, type FlagSpec, UsageError, flagValue, flagValues, formatJson, requiredFlag, runGroup, untilStopped,
} from "./common.js";

export const SVID_FILE = "svid.pem";
export const SVID_KEY_FILE = "svid-key.pem";
export const BUNDLE_FILE = "bundle.pem";

/** The private key is the owner's alone; certificates are public. */
const KEY_FILE_MODE = 0o600;
const CERT_FILE_MODE = 0o644;
const OUT_DIR_MODE = 0o755;
const DEFAULT_NAMESPACE = "default";
/** A CSR file larger than this is not a CSR. */
const CSR_FILE_BYTES_MAX = 64 * 1024;

const identityFlags: readonly FlagSpec[] = [
  { name: "--service", value: "NAME", help: "the service whose identity to hold: spiffe://<trust domain>/ns/<namespace>/svc/NAME" },
  { name: "--namespace", value: "NS", help: `its namespace (default ${DEFAULT_NAMESPACE})` },
  { name: "--dns", value: "NAME", repeat: true, help: "a DNS SAN to add, for peers that check host names" },
  { name: "--ttl", value: "DURATION", help: "the certificate's lifetime, a Go duration (default the cluster's, 1h; at most its maximum, 24h)" },
];

/** A token may hold the identity of a service it may write. */
const SIGN_PERMISSION = "service:write on the service whose identity it asks for";

const signHints = {
  400: "check --service, --ttl (at least 1m, at most the cluster's maximum) or the CSR: its one URI SAN must be spiffe://<trust domain>/ns/<namespace>/svc/<service>",
};

/** Writes `content` to DIR/name in one step: a reader sees the old file or the new one, never part of either. */
export function writeFileAtomically(dir: string, name: string, content: string, mode: number): void {
  const target = join(dir, name);
  const temporary = join(dir, `.${name}.${process.pid}.tmp`);
  try {
    writeFileSync(temporary, content, { mode, flag: "w" });
    renameSync(temporary, target);
  } catch (err) {
    rmSync(temporary, { force: true });
    throw new CommandError(`cannot write ${target}: ${errorMessage(err)}; check that the directory exists and is writable`);
  }
}

function ensureOutDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: OUT_DIR_MODE });
  } catch (err) {
    throw new CommandError(`cannot create --out ${dir}: ${errorMessage(err)}`);
  }
}

async function spiffeIdOf(ctx: CommandContext): Promise<string> {
  const service = requiredFlag(ctx.parsed, "--service", "the service whose identity the certificate carries");
  const namespace = flagValue(ctx.parsed, "--namespace") ?? DEFAULT_NAMESPACE;
  const bundle = await ctx.client().trustBundle();
  return workloadSpiffeId(bundle.trustDomain, namespace, service);
}

function ttlOf(ctx: CommandContext): { ttl?: string } {
  const ttl = flagValue(ctx.parsed, "--ttl");
  return ttl === undefined ? {} : { ttl };
}

function readCsr(path: string): string {
  let csr: string;
  try {
    csr = readFileSync(path, "utf8");
  } catch (err) {
    throw new UsageError(`--csr ${path}: cannot read it: ${errorMessage(err)}`);
  }
  if (csr.length > CSR_FILE_BYTES_MAX || !csr.includes("-----BEGIN CERTIFICATE REQUEST-----")) {
    throw new UsageError(`--csr ${path} holds no PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----); make one with openssl req -new`);
  }
  return csr;
}

function validUntil(notAfterMs: number): string {
  return new Date(notAfterMs).toISOString();
}

const issue: Command = {
  spec: {
    path: "cert issue",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: "Issue one X.509-SVID for --service (for a new P-256 key made here), or for the CSR in --csr FILE.\n" +
      `With --out DIR, writes ${SVID_FILE}, ${SVID_KEY_FILE} (mode 0600; not with --csr) and ${BUNDLE_FILE}; otherwise prints the certificate chain and key.`,
    action: "issue the certificate",
    flags: [
      ...identityFlags,
      { name: "--csr", value: "FILE", help: "sign this PKCS#10 CSR (PEM) instead; its one URI SAN names the identity, so give no --service, --namespace or --dns" },
      { name: "--out", value: "DIR", help: "write the files here instead of printing them" },
    ],
    example: `cairn cert issue --service web --out ./certs\nopenssl verify -CAfile certs/${BUNDLE_FILE} -untrusted certs/${SVID_FILE} certs/${SVID_FILE}`,
    permission: SIGN_PERMISSION,
    hints: signHints,
  },
  async run(ctx) {
    const csrPath = flagValue(ctx.parsed, "--csr");
    const client = ctx.client();
    let signed: SignedCertificate;
    let keyPem: string | undefined;
    if (csrPath !== undefined) {
      for (const flag of ["--service", "--namespace", "--dns"]) {
        if (flagValue(ctx.parsed, flag) !== undefined) throw new UsageError(`--csr carries its own identity and names; drop ${flag}`);
      }
      signed = await client.signCsr(readCsr(csrPath), ttlOf(ctx));
    } else {
      const spiffeId = await spiffeIdOf(ctx);
      const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      signed = await client.signCsr(createCsr(spiffeId, flagValues(ctx.parsed, "--dns"), privateKey, publicKey), ttlOf(ctx));
      keyPem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    }
    const bundle = bundlePem(await client.trustBundle());
    const chain = certificateChainPem(signed);
    const summary = { spiffeId: signed.spiffeId, serial: signed.serial, notBefore: new Date(signed.notBeforeMs).toISOString(), notAfter: validUntil(signed.notAfterMs) };
    const out = flagValue(ctx.parsed, "--out");
    if (out !== undefined) {
      ensureOutDir(out);
      if (keyPem !== undefined) writeFileAtomically(out, SVID_KEY_FILE, keyPem, KEY_FILE_MODE);
      writeFileAtomically(out, SVID_FILE, chain, CERT_FILE_MODE);
      writeFileAtomically(out, BUNDLE_FILE, bundle, CERT_FILE_MODE);
      const files = [SVID_FILE, ...(keyPem === undefined ? [] : [SVID_KEY_FILE]), BUNDLE_FILE].map((f) => join(out, f));
      if (ctx.global.json) ctx.out(formatJson({ ...summary, files }));
      else ctx.out(`issued ${signed.spiffeId}, serial ${signed.serial}, valid until ${summary.notAfter}; wrote ${files.join(", ")}\n`);
      return EXIT_OK;
    }
    if (ctx.global.json) {
      ctx.out(formatJson({ ...summary, certificate: chain, ...(keyPem === undefined ? {} : { privateKey: keyPem }), bundle }));
      return EXIT_OK;
    }
    ctx.note(`issued ${signed.spiffeId}, serial ${signed.serial}, valid until ${summary.notAfter}; the chain${keyPem === undefined ? "" : " and its private key"} follow\n`);
    ctx.out(chain + (keyPem ?? ""));
    return EXIT_OK;
  },
};

/** The files as last written, so a rotation rewrites only what changed. */
class SvidFiles {
  private readonly written = new Map<string, string>();

  constructor(private readonly dir: string) {}

  /** Writes what differs from the last write, key before certificate; returns the names written. */
  write(material: TlsMaterial): string[] {
    const files: [string, string, number][] = [
      [SVID_KEY_FILE, material.key, KEY_FILE_MODE],
      [SVID_FILE, material.cert, CERT_FILE_MODE],
      [BUNDLE_FILE, material.ca, CERT_FILE_MODE],
    ];
    const changed = files.filter(([name, content]) => this.written.get(name) !== content);
    for (const [name, content, mode] of changed) {
      writeFileAtomically(this.dir, name, content, mode);
      this.written.set(name, content);
    }
    return changed.map(([name]) => name);
  }
}

function rootsIn(pem: string): number {
  return pem.split("-----BEGIN CERTIFICATE-----").length - 1;
}

const watchCommand: Command = {
  spec: {
    path: "cert watch",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: `Keep ${SVID_FILE}, ${SVID_KEY_FILE} and ${BUNDLE_FILE} in --out DIR fresh for --service, as spiffe-helper does: renewed at about half\n` +
      "their lifetime, and soon after a root rotation, whose new root reaches bundle.pem at once. Logs one line per change; runs until stopped.",
    action: "keep the certificate",
    flags: [...identityFlags, { name: "--out", value: "DIR", help: "where the three files go (required; made if missing)" }],
    example: "cairn cert watch --service web --out /run/web/certs",
    permission: SIGN_PERMISSION,
    hints: signHints,
  },
  async run(ctx) {
    const out = requiredFlag(ctx.parsed, "--out", "the directory the files are kept in");
    const spiffeId = await spiffeIdOf(ctx);
    ensureOutDir(out);
    const files = new SvidFiles(out);
    const log = (event: string, material: TlsMaterial, wrote: readonly string[]): void => {
      if (wrote.length === 0) return;
      const time = new Date().toISOString();
      if (ctx.global.json) {
        ctx.out(`${JSON.stringify({ time, event, spiffeId, serial: material.serial, notAfter: validUntil(material.notAfterMs), roots: rootsIn(material.ca), wrote })}\n`);
        return;
      }
      const what = event === "bundle"
        ? `the trust bundle changed (${rootsIn(material.ca)} roots)`
        : `${event} ${spiffeId}, serial ${material.serial}, valid until ${validUntil(material.notAfterMs)}`;
      ctx.out(`${time} ${what}; wrote ${wrote.join(", ")}\n`);
    };
    const certificate = await ctx.client().certificates({
      spiffeId,
      dnsNames: flagValues(ctx.parsed, "--dns"),
      ...ttlOf(ctx),
      // The library retries; the operator hears of each failure.
      onError: (err) => ctx.note(`cairn cert watch: ${errorMessage(err)}; retrying\n`),
    });
    try {
      log("issued", certificate.current(), files.write(certificate.current()));
      certificate.onRotate((material, reason) => {
        try {
          log(reason, material, files.write(material));
        } catch (err) {
          ctx.note(`cairn cert watch: ${errorMessage(err)}\n`);
        }
      });
      await untilStopped();
    } finally {
      await certificate.close();
    }
    return EXIT_OK;
  },
};

export const CERT_COMMANDS: readonly Command[] = [issue, watchCommand];

export function runCert(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runGroup("cert", "X.509-SVIDs from the cluster's CA, for programs that read certificates from files.", CERT_COMMANDS, argv, env);
}
