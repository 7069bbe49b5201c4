// Counters whose value another module keeps. The registry, the watch hub, the xDS server and the
// rate limiter count what they do in plain numbers (they know nothing of prom-client); at scrape
// time such a counter is set to the source's value. The sources only grow, so the exported series
// are counters in Prometheus's sense, reset only when the process restarts.

import { Counter, type Registry } from "prom-client";

export interface MirroredCounterOptions<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly L[];
  /** The current value of every series: [labels, value]. An unlabelled counter gives one pair with {}. */
  readonly read: () => Iterable<readonly [Partial<Record<L, string>>, number]>;
}

export function mirroredCounter<L extends string>(registry: Registry, options: MirroredCounterOptions<L>): Counter<L> {
  const { read } = options;
  return new Counter<L>({
    name: options.name,
    help: options.help,
    labelNames: options.labelNames ?? [],
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.inc(labels, value);
    },
  });
}
