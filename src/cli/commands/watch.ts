// `cairn watch`: a live tail of registry changes, one line per event, from the client library's
// streaming view (GET /v1/watch), which resumes on another node when its node goes and misses
// nothing. The first state is summed up on stderr; stdout carries only changes. Ctrl-C ends it.

import type { Instance, ServiceView, ViewChange, WatchEvent } from "../../client/client.js";
import { type Command, EXIT_OK, runCommand, untilStopped } from "./common.js";

function eventJson(event: WatchEvent): Record<string, unknown> {
  return event.type === "delete"
    ? { revision: event.revision, type: event.type, service: event.service, id: event.id }
    : { revision: event.revision, type: event.type, service: event.service, id: event.id, instance: event.instance };
}

function where(instance: Instance): string {
  return `${instance.address}:${instance.port}`;
}

function eventLine(event: WatchEvent): string {
  const tail = event.type === "delete" ? "" : `  ${where(event.instance)}  ${event.instance.status}`;
  return `${event.revision}  ${event.type.padEnd(6)}  ${event.service}  ${event.id}${tail}\n`;
}

const watch: Command = {
  spec: {
    path: "watch",
    args: "[SERVICE...]",
    argsMin: 0,
    argsMax: 64,
    summary: "Tail changes to services' instances as they happen: one line per registration, health change or removal,\n" +
      "as REVISION TYPE SERVICE ID [ADDRESS:PORT STATUS]. Without SERVICE, every service (the token must read them all). Ctrl-C ends it.",
    action: "watch the registry",
    flags: [],
    example: "cairn watch web db\ncairn watch --json | jq -c 'select(.type == \"delete\")'",
    permission: "service:read on the services it watches (on every service, without SERVICE)",
  },
  async run(ctx) {
    const services = ctx.parsed.positionals;
    const client = ctx.client();
    // A stream that breaks is resumed on the next node by the view; the operator hears of it. The refusal that ends the view is reported once, below.
    const onError = (err: Error): void => {
      if (err !== view.error) ctx.note(`cairn watch: ${err.message}; resuming\n`);
    };
    const view: ServiceView = services.length === 0 ? client.catalogView({ health: "all", onError }) : client.serviceView(services, { health: "all", onError });
    const viewEnded = new AbortController();
    void view.done.then(() => viewEnded.abort());
    view.onChange((change: ViewChange) => {
      if (change.kind === "events") {
        for (const event of change.events) ctx.out(ctx.global.json ? `${JSON.stringify(eventJson(event))}\n` : eventLine(event));
        return;
      }
      if (change.reason === "initial") {
        ctx.note(`watching ${services.length === 0 ? "every service" : services.join(", ")} from revision ${change.revision}: ${view.size} instance(s) now; Ctrl-C ends the watch\n`);
        return;
      }
      // The node could not send the changes since the last revision (they left its window, or it restored a snapshot): the whole state again.
      if (ctx.global.json) ctx.out(`${JSON.stringify({ revision: change.revision, type: "reset", reason: change.reason, instances: view.instances() })}\n`);
      else ctx.out(`${change.revision}  reset   (${change.reason}: the whole state again, ${view.size} instance(s))\n`);
    });
    try {
      // A refusal (a 403, a bad service name) ends the view before its first state.
      await view.ready;
      await untilStopped(viewEnded.signal);
    } finally {
      view.close();
      await view.done;
    }
    // Ended by a refusal the same on every node (or a bound), not by Ctrl-C.
    if (view.error !== undefined) throw view.error;
    return EXIT_OK;
  },
};

export function runWatch(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runCommand(watch, argv, env);
}

export const WATCH_COMMAND: Command = watch;
