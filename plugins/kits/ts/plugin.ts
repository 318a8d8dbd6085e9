// {{name}}: a sluice plugin in TypeScript.
//
// Keeps the events at or above `min_level` (default "warn"), adds `env`
// (default "dev") from the transform's config, and sends errors and worse
// to the output `alerts` (`{{ident}}.alerts` in a pipeline), the rest to
// the default output. Build with `sluice plugin build`, try it with
// `sluice plugin test {{name}}.wasm --expect test/expected.jsonl < test/events.jsonl`.

import { plugin, LEVELS, type Event, type Verdict } from "./sluice.js";

interface Config {
  min_level: string;
  env: string;
}

// Module variables keep state between calls.
let min: number = LEVELS.warn;
let env = "dev";

export const { init, process } = plugin<Config>({
  version: "{{name}} 0.1.0",
  outputs: ["alerts"],
  // The keys the config takes: any other is refused, naming it.
  config: {
    min_level: { type: "string", default: "warn" },
    env: { type: "string", default: "dev" },
  },
  init(config: Config) {
    if (!(config.min_level in LEVELS)) throw new Error(`min_level: unknown level "${config.min_level}"`);
    min = LEVELS[config.min_level];
    env = config.env;
  },
  process(event: Event): Verdict {
    if (event.levelRank < min) return false;
    // Appended to the event's bytes: nothing is re-serialised.
    event.set("env", env);
    return event.levelRank >= LEVELS.error ? "alerts" : event;
  },
});
