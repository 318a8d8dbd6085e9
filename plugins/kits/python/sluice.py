"""sluice: write sluice plugins in Python.

A plugin is two functions. ``init`` (optional) receives the plugin's
``[transforms.NAME.config]`` table as a dict; ``process`` receives one
``Event`` and says what becomes of it::

    import sluice
    from sluice import WitWorld  # componentize-py looks for it in your module

    @sluice.init
    def setup(config):
        global MIN
        MIN = sluice.LEVELS[config.get("min_level", "warn")]

    @sluice.process
    def keep_important(event):
        return event.level_rank >= MIN

What ``process`` returns decides the event:

- ``True`` (or ``None``, or the event itself): keep it (with the changes
  ``event.set(path, value)`` and ``event.remove(path)`` made, if any);
- ``False``: drop it;
- a ``str``: route it to that output (declared with
  ``sluice.outputs(...)`` or returned by ``init`` as ``sluice.Info``);
- a ``dict``: replace the event with this object;
- ``(dict, "output")`` or ``(event, "output")``: replace it and route it.

``event.set("env", "prod")`` adding a top-level field appends it to the
event's bytes (nothing is re-serialised); other edits write the event
again from its parsed fields.

An exception in ``init`` is the reason the pipeline refuses the config; an
exception in ``process`` fails that event, which the host sends to the dead
letters with the exception's type, message and line. Module globals keep
state across calls (componentize-py makes a new ``WitWorld`` per call, so
state on ``self`` is lost).

``sluice.log("warn", "text")`` logs through the host; ``print`` goes to the
host's log too, tagged with the transform's name.
"""

import json
import traceback

from componentize_py_types import Err
import wit_world
from wit_world.imports import types as _types

__all__ = [
    "Event",
    "Info",
    "LEVELS",
    "WitWorld",
    "check_config",
    "filter",
    "init",
    "log",
    "outputs",
    "process",
]

#: Level names as apps spell them, and their rank (higher is more severe).
LEVELS = {
    "trace": 0,
    "debug": 1,
    "dbg": 1,
    "info": 2,
    "information": 2,
    "informational": 2,
    "notice": 3,
    "warn": 4,
    "warning": 4,
    "error": 5,
    "err": 5,
    "critical": 6,
    "crit": 6,
    "fatal": 6,
    "alert": 6,
    "emergency": 6,
    "emerg": 6,
    "panic": 6,
}

_LOG_LEVELS = {
    "trace": _types.LogLevel.TRACE,
    "debug": _types.LogLevel.DEBUG,
    "info": _types.LogLevel.INFO,
    "warn": _types.LogLevel.WARN,
    "error": _types.LogLevel.ERROR,
}


class Info:
    """What ``init`` may return: outputs besides the default one, whether the
    plugin masks data, and its version (shown with dead letters)."""

    __slots__ = ("outputs", "masks", "version")

    def __init__(self, outputs=(), masks=False, version=None):
        self.outputs = list(outputs)
        self.masks = bool(masks)
        self.version = version


_state = {
    "init": None,
    "process": None,
    "filter": None,
    "info": Info(version="python"),
    "ports": {},
}


class Event:
    """One event. Parsed from JSON on first access to a field; ``raw`` is
    the original bytes and costs nothing."""

    __slots__ = ("raw", "_fields", "_edits")

    def __init__(self, raw):
        self.raw = raw
        self._fields = None
        self._edits = None

    def set(self, path, value):
        """Set a field by name or dotted path (objects are made on the
        way) and return the event: ``return event.set("env", "prod")``
        replaces the event with the edited one. A new top-level field is
        appended to the event's bytes: the rest is not re-serialised."""
        fields = self.fields
        added = "." not in path and path not in fields
        if self._edits is None:
            self._edits = []
        self._edits.append((path, value) if added else None)
        _set_path(fields, path, value)
        return self

    def remove(self, path):
        """Remove a field by name or dotted path (nothing if it is not
        there) and return the event, as ``set`` does."""
        if self._edits is None:
            self._edits = []
        if _remove_path(self.fields, path):
            self._edits.append(None)
        return self

    @property
    def edited(self):
        """Whether ``set`` or ``remove`` changed the event."""
        return bool(self._edits)

    def to_bytes(self):
        """The event's JSON bytes, with its edits."""
        edits = self._edits
        if not edits:
            return self.raw
        if None in edits:
            return json.dumps(self._fields, separators=(",", ":")).encode()
        body = self.raw.rstrip()[:-1].rstrip()
        added = ",".join(
            json.dumps(k) + ":" + json.dumps(v, separators=(",", ":")) for k, v in edits
        ).encode()
        return body + (b"" if body.endswith(b"{") else b",") + added + b"}"

    @property
    def fields(self):
        """The event as a dict (parsed once)."""
        if self._fields is None:
            self._fields = json.loads(self.raw)
        return self._fields

    def get(self, path, default=None):
        """A field by name, or by dotted path into nested objects
        (``"http.status"``); a key that itself contains dots wins."""
        fields = self.fields
        if path in fields:
            return fields[path]
        value = fields
        for part in path.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return default
        return value

    def __getitem__(self, key):
        return self.fields[key]

    def __contains__(self, path):
        return self.get(path, _MISSING) is not _MISSING

    @property
    def level(self):
        """The ``level`` field (or ``severity``, ``levelname``), lower-case;
        ``None`` when the event has none."""
        fields = self.fields
        value = fields.get("level")
        if value.__class__ is str:
            return value.lower()
        for key in _LEVEL_KEYS:
            value = fields.get(key)
            if isinstance(value, str):
                return value.lower()
        return None

    @property
    def level_rank(self):
        """The rank of ``level`` in ``LEVELS``; -1 when unknown."""
        return LEVELS.get(self.level, -1)

    @property
    def message(self):
        """The ``message`` field (or ``msg``)."""
        fields = self.fields
        return fields.get("message", fields.get("msg"))

    def __repr__(self):
        return "Event(%s)" % self.raw.decode("utf-8", "replace")


_MISSING = object()


def _set_path(fields, path, value):
    if path in fields or "." not in path:
        fields[path] = value
        return
    parts = path.split(".")
    for part in parts[:-1]:
        inner = fields.get(part)
        if not isinstance(inner, dict):
            inner = fields[part] = {}
        fields = inner
    fields[parts[-1]] = value


def _remove_path(fields, path):
    """Whether something was removed."""
    if path in fields:
        del fields[path]
        return True
    parts = path.split(".")
    for part in parts[:-1]:
        fields = fields.get(part)
        if not isinstance(fields, dict):
            return False
    return fields.pop(parts[-1], _MISSING) is not _MISSING
_LEVEL_KEYS = ("level", "severity", "levelname", "level_name")


def init(fn):
    """Decorator: ``fn(config: dict)`` runs once per instance, before any
    event. It may return an ``Info``; an exception refuses the config."""
    _state["init"] = fn
    return fn


def process(fn):
    """Decorator: ``fn(event: Event)`` decides each event (see the module's
    documentation for what it may return)."""
    _state["process"] = fn
    _state["filter"] = None
    return fn


def filter(fn):
    """Decorator: ``fn(event: Event) -> bool``; true keeps the event."""

    def keep(event):
        return bool(fn(event))

    _state["process"] = keep
    _state["filter"] = fn
    return fn


_TYPES = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _type_name(v):
    for name, types in (("boolean", (bool,)), ("null", (type(None),))) + tuple(_TYPES.items()):
        if isinstance(v, types):
            return name
    return type(v).__name__


def check_config(shape, config):
    """Check ``config`` against the keys a plugin takes, as Rust's
    ``deny_unknown_fields`` does: every key must be in ``shape``; a key of
    ``shape`` is ``"type"`` (required), ``"type?"`` (optional) or
    ``{"type": ..., "default": ..., "one_of": [...]}`` (a default makes it
    optional). Types: string, number, integer, boolean, object, array, any.
    Returns the config with defaults filled in; raises ``ValueError``
    naming the key."""
    if not isinstance(config, dict):
        raise ValueError("the config must be a table, not %s" % _type_name(config))
    for key in config:
        if key not in shape:
            raise ValueError(
                "unknown key `%s` (expected %s)" % (key, ", ".join(shape) or "no keys")
            )
    out = {}
    for key, rule in shape.items():
        if isinstance(rule, str):
            rule = {"type": rule.rstrip("?"), "optional": rule.endswith("?")}
        kind = rule["type"]
        if kind != "any" and kind not in _TYPES:
            raise ValueError("config shape: %s: unknown type %r" % (key, kind))
        if key not in config:
            if "default" in rule:
                out[key] = rule["default"]
            elif not rule.get("optional"):
                raise ValueError("missing key `%s` (%s)" % (key, kind))
            continue
        v = config[key]
        ok = kind == "any" or (
            isinstance(v, _TYPES[kind]) and not (kind != "boolean" and isinstance(v, bool))
        )
        if not ok:
            raise ValueError("%s: expected %s, got %s %r" % (key, kind, _type_name(v), v))
        if "one_of" in rule and v not in rule["one_of"]:
            raise ValueError("%s: %r is not one of %s" % (key, v, ", ".join(map(repr, rule["one_of"]))))
        out[key] = v
    return out


def outputs(*names):
    """Declare the outputs a ``process`` may route to by name."""
    _state["info"].outputs = list(names)


def version(text):
    """Set the version reported with dead letters."""
    _state["info"].version = str(text)


def log(level, message):
    """Log through the host's ``tracing``: level is trace, debug, info, warn
    or error."""
    wit_world.log(_LOG_LEVELS.get(level, _types.LogLevel.INFO), str(message))


def _describe(exc):
    """``NameError: name 'x' is not defined (app.py line 12, in process)``."""
    text = "%s: %s" % (type(exc).__name__, exc)
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.endswith("sluice.py")
    ]
    if not frames:
        return text
    # The deepest line of the plugin's own file, not of the library it called.
    mine = [f for f in frames if f.filename == frames[0].filename]
    frame = mine[-1]
    name = frame.filename.rsplit("/", 1)[-1]
    return "%s (%s line %s, in %s)" % (text, name, frame.lineno, frame.name)


def _ports():
    ports = {}
    for i, name in enumerate(_state["info"].outputs):
        ports[name] = i + 1
    _state["ports"] = ports
    return ports


class WitWorld:
    """The component's exports. componentize-py makes one per call: state
    lives in module globals, never here."""

    def init(self, config):
        try:
            cfg = json.loads(config) if config.strip() else {}
            fn = _state["init"]
            result = fn(cfg) if fn is not None else None
            if isinstance(result, Info):
                if result.version is None:
                    result.version = _state["info"].version
                _state["info"] = result
            if _state["process"] is None:
                raise RuntimeError("no @sluice.process or @sluice.filter function")
        except Err:
            raise
        except Exception as exc:
            raise Err(_describe(exc))
        info = _state["info"]
        _ports()
        return _types.Info(
            outputs=list(info.outputs),
            masks=info.masks,
            version=info.version or "python",
        )

    def process(self, data, ends):
        keep = _state["filter"]
        if keep is not None:
            return _filter(keep, data, ends)
        fn = _state["process"]
        names = _state["ports"]
        actions = bytearray(len(ends))
        ports = None
        out = bytearray()
        out_ends = []
        start = 0
        for i, end in enumerate(ends):
            event = Event(data[start:end])
            start = end
            try:
                verdict = fn(event)
            except Exception as exc:
                # Dead-letters this event alone (action 3, the reason as
                # the next entry of data/ends); the batch goes on.
                out += _describe(exc).encode("utf-8", "replace")
                out_ends.append(len(out))
                actions[i] = 3
                continue
            port = 0
            if verdict is True or verdict is None:
                verdict = event
            if verdict is False:
                actions[i] = 0
            else:
                if isinstance(verdict, tuple):
                    verdict, name = verdict
                    port = _port(names, name, i)
                if isinstance(verdict, str):
                    port = _port(names, verdict, i)
                    verdict = event
                if isinstance(verdict, Event):
                    if verdict._edits:
                        out += verdict.to_bytes()
                        out_ends.append(len(out))
                        actions[i] = 2
                    else:
                        actions[i] = 1
                elif not isinstance(verdict, dict):
                    raise Err(
                        "event %d: process returned %r; expected True, False, None, "
                        "an output name, a dict or (dict, output)" % (i, verdict)
                    )
                else:
                    try:
                        out += json.dumps(verdict, separators=(",", ":")).encode()
                    except Exception as exc:
                        raise Err("event %d: the replacement is not JSON: %s" % (i, exc))
                    out_ends.append(len(out))
                    actions[i] = 2
            if port:
                if ports is None:
                    ports = [0] * len(ends)
                ports[i] = port
        return _types.Verdicts(
            actions=bytes(actions),
            ports=ports or [],
            data=bytes(out),
            ends=out_ends,
        )


def _filter(keep, data, ends):
    """A filter's batch: one bool per event, nothing else to decide."""
    actions = bytearray(len(ends))
    reasons = bytearray()
    reason_ends = []
    start = 0
    for i, end in enumerate(ends):
        event = Event(data[start:end])
        start = end
        try:
            if keep(event):
                actions[i] = 1
        except Exception as exc:
            reasons += _describe(exc).encode("utf-8", "replace")
            reason_ends.append(len(reasons))
            actions[i] = 3
    return _types.Verdicts(
        actions=bytes(actions), ports=[], data=bytes(reasons), ends=reason_ends
    )


def _port(names, name, i):
    port = names.get(name)
    if port is None:
        raise Err(
            "event %d: output %r is not declared (declared: %s)"
            % (i, name, ", ".join(names) or "none; call sluice.outputs(...)")
        )
    return port
