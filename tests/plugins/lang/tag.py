"""A test plugin in Python: tags every event with `"tag": "python"`, and
raises on an event with a `poison` field (which must reach the dead
letters with this exception's message)."""

import sluice
from sluice import WitWorld  # noqa: F401

sluice.version("python-tag 1")


@sluice.process
def tag(event):
    if "poison" in event:
        raise ValueError("poisoned event %s" % event["seq"])
    fields = event.fields
    fields["tag"] = "python"
    return fields
