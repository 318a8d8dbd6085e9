"""{{name}}: a sluice plugin in Python.

Keeps the events at or above `min_level` (default "warn") of the
transform's config. Build with `sluice plugin build`, try it with
`sluice plugin test {{name}}.wasm < test/events.jsonl`.
"""

import sluice
from sluice import WitWorld  # noqa: F401  (componentize-py looks for it here)

# Module globals keep state between calls.
MIN = sluice.LEVELS["warn"]

# The keys the config takes: any other is refused, naming it.
CONFIG = {"min_level": {"type": "string", "default": "warn"}}


@sluice.init
def setup(config):
    global MIN
    name = sluice.check_config(CONFIG, config)["min_level"]
    if name not in sluice.LEVELS:
        raise ValueError("min_level: unknown level %r" % name)
    MIN = sluice.LEVELS[name]
    return sluice.Info(version="{{name}} 0.1.0")


@sluice.filter
def keep(event):
    return event.level_rank >= MIN
