// Test-only: real bugs a chaos run plants in a server, to show that its checkers catch them.
// Set by the environment variable CAIRN_PLANTED_BUG, never by a flag or a config file, so no
// operator sets one by accident; a server that runs with one logs a warning at every start.

import { DRIVER_PLANTED_BUGS, type DriverPlantedBug } from "../raft/node/settings.js";
import { WATCH_HUB_PLANTED_BUGS, type WatchHubPlantedBug } from "../registry/watch_hub.js";
import { ConfigError } from "./config.js";

export const PLANTED_BUG_ENV = "CAIRN_PLANTED_BUG";

export interface ServerPlantedBug {
  readonly name: string;
  readonly description: string;
  readonly driver?: DriverPlantedBug;
  readonly watchHub?: WatchHubPlantedBug;
}

/** The planted bug the environment asks for, if any; an unknown name is a ConfigError that lists the known ones. */
export function plantedBugFromEnv(env: NodeJS.ProcessEnv = process.env): ServerPlantedBug | undefined {
  const name = env[PLANTED_BUG_ENV];
  if (name === undefined || name === "") return undefined;
  if (Object.hasOwn(DRIVER_PLANTED_BUGS, name)) {
    const driver = name as DriverPlantedBug;
    return { name, description: DRIVER_PLANTED_BUGS[driver], driver };
  }
  if (Object.hasOwn(WATCH_HUB_PLANTED_BUGS, name)) {
    const watchHub = name as WatchHubPlantedBug;
    return { name, description: WATCH_HUB_PLANTED_BUGS[watchHub], watchHub };
  }
  const known = [...Object.keys(DRIVER_PLANTED_BUGS), ...Object.keys(WATCH_HUB_PLANTED_BUGS)].join(", ");
  throw new ConfigError(`${PLANTED_BUG_ENV}=${name} is not a planted bug; known: ${known} (or unset it: it is for chaos tests only)`);
}
