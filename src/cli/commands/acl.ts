// `cairn acl bootstrap`, `cairn acl token create` and `cairn acl policy create`: the ACL system in
// Consul's shapes. A token's SecretID is shown once, in the answer that makes it.

import { readFileSync } from "node:fs";
import type { AclPolicyInfo, AclTokenInfo } from "../../client/client.js";
import { errorMessage } from "../../common/errors.js";
import { type Command, UsageError, flagSet, flagValue, flagValues, formatFields, formatJson, requiredFlag, runGroup } from "./common.js";

/** A policy's rules are bounded by the server (128 KiB); a file far beyond that is a mistake. */
const RULES_FILE_BYTES_MAX = 1024 * 1024;

function tokenFields(token: AclTokenInfo): string {
  return formatFields([
    ["AccessorID", token.accessorId],
    ["SecretID", token.secretId ?? "(shown only when the token is made)"],
    ["Description", token.description],
    ["Policies", token.policies.map((p) => p.name).join(", ") || "none"],
    ["Local", String(token.local)],
    ["Create Time", token.createTime],
  ]);
}

function policyFields(policy: AclPolicyInfo): string {
  return formatFields([["ID", policy.id], ["Name", policy.name], ["Description", policy.description], ["Rules", policy.rules]]);
}

const bootstrap: Command = {
  spec: {
    path: "acl bootstrap",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: "Make the cluster's first management token, once. Keep its SecretID: it is shown only now.",
    action: "bootstrap the ACL system",
    flags: [],
    example: "cairn acl bootstrap --json | jq -r .secretId > mgmt-token && export CAIRN_TOKEN_FILE=$PWD/mgmt-token",
    hints: {
      401: "the servers run with --acl off; start them with --acl on",
      403: "the ACL system was bootstrapped already: use the management token made then (cairn dev --acl keeps it in data/bootstrap-token)",
    },
  },
  async run(ctx) {
    const token = await ctx.client().operator.aclBootstrap();
    ctx.out(ctx.global.json ? formatJson(token) : tokenFields(token));
  },
};

const tokenCreate: Command = {
  spec: {
    path: "acl token create",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: "Make a token that holds the named policies. Its SecretID is shown only now.",
    action: "create the token",
    flags: [
      { name: "--description", value: "TEXT", help: "what the token is for" },
      { name: "--policy", value: "NAME", repeat: true, help: "a policy the token holds, by name; repeat or comma-separate for several" },
      { name: "--local", help: "a token of this datacenter only" },
    ],
    example: "cairn acl token create --description 'web service' --policy web",
    permission: "acl:write",
    hints: { 400: "each --policy must name an existing policy: cairn acl policy create makes one" },
  },
  async run(ctx) {
    const description = flagValue(ctx.parsed, "--description");
    const token = await ctx.client().operator.createToken({
      ...(description === undefined ? {} : { description }),
      policies: flagValues(ctx.parsed, "--policy"),
      local: flagSet(ctx.parsed, "--local"),
    });
    ctx.out(ctx.global.json ? formatJson(token) : tokenFields(token));
  },
};

function rulesOf(value: string): string {
  if (!value.startsWith("@")) return value;
  const path = value.slice(1);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UsageError(`--rules @${path}: cannot read it: ${errorMessage(err)}`);
  }
  if (text.length > RULES_FILE_BYTES_MAX) throw new UsageError(`--rules @${path}: ${text.length} bytes is far more than a policy holds`);
  return text;
}

const policyCreate: Command = {
  spec: {
    path: "acl policy create",
    args: "",
    argsMin: 0,
    argsMax: 0,
    summary: "Make a policy from JSON rules, in Consul's shape (HCL is refused).",
    action: "create the policy",
    flags: [
      { name: "--name", value: "NAME", help: "the policy's name (required)" },
      { name: "--description", value: "TEXT", help: "what the policy is for" },
      { name: "--rules", value: "JSON|@FILE", help: "the rules, or @FILE to read them from a file (required)" },
    ],
    example: `cairn acl policy create --name web --rules '{"service":{"web":{"policy":"write"}},"service_prefix":{"":{"policy":"read"}}}'`,
    permission: "acl:write",
    hints: { 400: "check --rules: JSON such as {\"service\":{\"web\":{\"policy\":\"write\"}}}, with policy read, write or deny" },
  },
  async run(ctx) {
    const name = requiredFlag(ctx.parsed, "--name", "policies are named, and tokens name the policies they hold");
    const rules = rulesOf(requiredFlag(ctx.parsed, "--rules", "a policy grants what its rules say"));
    const description = flagValue(ctx.parsed, "--description");
    const policy = await ctx.client().operator.createPolicy({ name, rules, ...(description === undefined ? {} : { description }) });
    ctx.out(ctx.global.json ? formatJson(policy) : policyFields(policy));
  },
};

export const ACL_COMMANDS: readonly Command[] = [bootstrap, tokenCreate, policyCreate];

export function runAcl(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runGroup("acl", "ACL tokens and policies, in Consul's shapes.", ACL_COMMANDS, argv, env);
}
