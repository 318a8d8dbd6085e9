"""The hand-written loop the Python helper is measured against: the same
filter (level at or above warn) on the raw WIT types, json.loads per event."""

import json

from componentize_py_types import Err  # noqa: F401
from wit_world.imports import types

KEEP = {"warn", "warning", "error", "fatal", "critical"}


class WitWorld:
    def init(self, config):
        return types.Info(outputs=[], masks=False, version="raw")

    def process(self, data, ends):
        actions = bytearray(len(ends))
        start = 0
        for i, end in enumerate(ends):
            level = json.loads(data[start:end]).get("level")
            start = end
            if isinstance(level, str) and level.lower() in KEEP:
                actions[i] = 1
        return types.Verdicts(actions=bytes(actions), ports=[], data=b"", ends=[])
