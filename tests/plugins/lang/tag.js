// A test plugin in JavaScript: tags every event with "tag": "js", and
// throws on an event with a `poison` field (which must reach the dead
// letters with this exception's message).

import { plugin } from "./sluice.js";

export const { init, process } = plugin({
  version: "js-tag 1",
  process(event) {
    if (event.has("poison")) throw new RangeError(`poisoned event ${event.get("seq")}`);
    return { ...event.fields, tag: "js" };
  },
});
