// `cairn ca roots` and `cairn ca rotate`: the CA's roots, and a new root that signs from now on
// while the old one stays trusted until its last leaf has expired.

import { type Command, flagValue, formatJson, formatTable, runGroup } from "./common.js";

const roots: Command = {
  spec: {
    path: "ca roots",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: "List the CA's roots: which one signs now, their key types and lifetimes, and when a replaced one leaves the trust bundle.\n" +
      "--json includes each root's certificate and intermediates (never a key).",
    action: "list the CA's roots",
    flags: [],
    example: "cairn ca roots\ncairn ca roots --json | jq -r '.roots[] | select(.active) | .certificate' > root.pem",
  },
  async run(ctx) {
    const answer = await ctx.client().operator.caRoots();
    if (ctx.global.json) {
      ctx.out(formatJson(answer));
      return;
    }
    ctx.out(`trust domain ${answer.trustDomain}, CA revision ${answer.index}\n`);
    ctx.out(formatTable(["ID", "NAME", "KEY", "ACTIVE", "NOT AFTER", "RETIRES AFTER"],
      answer.roots.map((r) => [r.id, r.name, r.keyType, r.active ? "yes" : "no", r.notAfter, r.retireAfter ?? "-"])));
  },
};

const rotate: Command = {
  spec: {
    path: "ca rotate",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: "Rotate the root: a new root, cross-signed by the current one, signs every leaf from now on. The old root stays in the\n" +
      "trust bundle until its last leaf has expired, so peers on either side keep verifying each other.",
    action: "rotate the CA's root",
    flags: [{ name: "--key-type", value: "TYPE", help: "the new root's key: ec-p256, rsa-2048 or ed25519 (default the cluster's)" }],
    example: "cairn ca rotate --key-type ec-p256",
    permission: "ca:write",
  },
  async run(ctx) {
    const keyType = flagValue(ctx.parsed, "--key-type");
    const root = await ctx.client().operator.rotateCa(keyType);
    if (ctx.global.json) ctx.out(formatJson(root));
    else ctx.out(`rotated: root ${root.id} (${root.keyType}) signs from now on; the previous root stays trusted until its leaves expire (cairn ca roots)\n`);
  },
};

export const CA_COMMANDS: readonly Command[] = [roots, rotate];

export function runCa(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runGroup("ca", "The cluster's certificate authority.", CA_COMMANDS, argv, env);
}
