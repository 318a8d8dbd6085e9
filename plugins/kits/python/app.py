"""{{name}}: a sluice plugin in Python.

Keeps the events at or above `min_level` (default "warn"), adds `env`
(default "dev") from the transform's config, and sends errors and worse to
the output `alerts` (`{{ident}}.alerts` in a pipeline), the rest to the
default output. Build with `sluice plugin build`, try it with
`sluice plugin test {{name}}.wasm --expect test/expected.jsonl < test/events.jsonl`.
"""

import sluice
from sluice import WitWorld  # noqa: F401  (componentize-py looks for it here)

# The keys the config takes: any other is refused, naming it.
CONFIG = {
    "min_level": {"type": "string", "default": "warn"},
    "env": {"type": "string", "default": "dev"},
}

# Module globals keep state between calls.
MIN = sluice.LEVELS["warn"]
ENV = "dev"


@sluice.init
def setup(config):
    global MIN, ENV
    config = sluice.check_config(CONFIG, config)
    if config["min_level"] not in sluice.LEVELS:
        raise ValueError("min_level: unknown level %r" % config["min_level"])
    MIN = sluice.LEVELS[config["min_level"]]
    ENV = config["env"]
    return sluice.Info(outputs=["alerts"], version="{{name}} 0.1.0")


@sluice.process
def route(event):
    if event.level_rank < MIN:
        return False
    # Appended to the event's bytes: nothing is re-serialised.
    event.set("env", ENV)
    if event.level_rank >= sluice.LEVELS["error"]:
        return "alerts"
    return event
