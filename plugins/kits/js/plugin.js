// {{name}}: a sluice plugin in JavaScript.
//
// Keeps the events at or above `min_level` (default "warn") of the
// transform's config. Build with `sluice plugin build`, try it with
// `sluice plugin test {{name}}.wasm < test/events.jsonl`.

import { filter, LEVELS } from "./sluice.js";

// Module variables keep state between calls.
let min = LEVELS.warn;

export const { init, process } = filter((event) => event.levelRank >= min, {
  version: "{{name}} 0.1.0",
  // The keys the config takes: any other is refused, naming it.
  config: { min_level: { type: "string", default: "warn" } },
  init(config) {
    const name = config.min_level;
    if (!(name in LEVELS)) throw new Error(`min_level: unknown level "${name}"`);
    min = LEVELS[name];
  },
});
