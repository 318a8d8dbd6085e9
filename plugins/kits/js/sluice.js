// sluice: write sluice plugins in JavaScript or TypeScript.
//
// A plugin module exports `init` and `process`; this helper builds both from
// a function over one event:
//
//   import { filter, LEVELS } from "./sluice.js";
//
//   let min = LEVELS.warn;
//   export const { init, process } = filter((event) => event.levelRank >= min, {
//     init(config) { min = LEVELS[config.min_level ?? "warn"]; },
//   });
//
// With `plugin({ process, init, outputs, masks, version })`, what `process`
// returns decides the event:
//   true, undefined or the event itself: keep it (with the changes
//     `event.set(path, value)` and `event.remove(path)` made, if any);
//   false: drop it;
//   a string: route it to that output (declared in `outputs`);
//   an object: replace the event with it;
//   [object, "output"] or [event, "output"]: replace it and route it.
// `event.set("env", "prod")` adding a top-level field appends it to the
// event's bytes (nothing is re-serialised); other edits write the event
// again from its parsed fields.
//
// An exception in `init` is the reason the pipeline refuses the config; one
// in `process` fails that event, which goes to the dead letters with the
// exception's message. State lives in module variables, which last across
// calls. `log("warn", "text")` logs through the host; so does console.log.

import hostLog from "log";

/** Level names as apps spell them, and their rank (higher is more severe). */
export const LEVELS = Object.freeze({
  trace: 0,
  debug: 1,
  dbg: 1,
  info: 2,
  information: 2,
  informational: 2,
  notice: 3,
  warn: 4,
  warning: 4,
  error: 5,
  err: 5,
  critical: 6,
  crit: 6,
  fatal: 6,
  alert: 6,
  emergency: 6,
  emerg: 6,
  panic: 6,
});

const LOG_LEVELS = new Set(["trace", "debug", "info", "warn", "error"]);

/** Log through the host's tracing: level is trace, debug, info, warn or error. */
export function log(level, message) {
  hostLog(LOG_LEVELS.has(level) ? level : "info", String(message));
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Marks the spec of a filter, whose batches take a faster loop. */
const FILTER = Symbol("filter");

const LEVEL_KEYS = ["level", "severity", "levelname", "level_name"];

/** One event, parsed from JSON on first access to a field. */
export class Event {
  constructor(raw) {
    /** The event's JSON bytes, as they came. */
    this.raw = raw;
    this._fields = undefined;
    // Top-level fields added by `set` (appended to `raw`), or null once
    // an edit needs the event written again from its fields.
    this._added = undefined;
  }

  /**
   * Set a field by name or dotted path (objects are made on the way) and
   * return the event: `return event.set("env", "prod")` replaces the event
   * with the edited one. A new top-level field is appended to the event's
   * bytes: the rest is not re-serialised.
   */
  set(path, value) {
    const fields = this.fields;
    const own = Object.prototype.hasOwnProperty;
    if (!path.includes(".") && !own.call(fields, path) && this._added !== null) {
      (this._added ??= []).push(path);
      fields[path] = value;
      return this;
    }
    this._added = null;
    if (own.call(fields, path) || !path.includes(".")) {
      fields[path] = value;
      return this;
    }
    const parts = path.split(".");
    let at = fields;
    for (let i = 0; i < parts.length - 1; i++) {
      const inner = at[parts[i]];
      at = at[parts[i]] = inner !== null && typeof inner === "object" && !Array.isArray(inner) ? inner : {};
    }
    at[parts[parts.length - 1]] = value;
    return this;
  }

  /** Remove a field by name or dotted path (nothing if absent); returns the event. */
  remove(path) {
    const own = Object.prototype.hasOwnProperty;
    let at = this.fields;
    let key = path;
    if (!own.call(at, path)) {
      const parts = path.split(".");
      key = parts.pop();
      for (const part of parts) {
        at = at !== null && typeof at === "object" ? at[part] : undefined;
      }
      if (at === null || typeof at !== "object" || !own.call(at, key)) return this;
    }
    delete at[key];
    this._added = null;
    return this;
  }

  /** Whether `set` or `remove` changed the event. */
  get edited() {
    return this._added !== undefined;
  }

  /** The event's JSON bytes, with its edits. */
  toBytes() {
    const added = this._added;
    if (added === undefined) return this.raw;
    if (added === null) return encoder.encode(JSON.stringify(this._fields));
    const raw = this.raw;
    let end = raw.length - 1;
    while (end > 0 && raw[end] !== 0x7d) end--; // the closing brace
    let body = end;
    while (body > 0 && (raw[body - 1] === 0x20 || raw[body - 1] === 0x0a || raw[body - 1] === 0x09 || raw[body - 1] === 0x0d)) body--;
    const empty = raw[body - 1] === 0x7b;
    const fields = this._fields;
    const tail = encoder.encode(
      (empty ? "" : ",") + added.map((k) => `${JSON.stringify(k)}:${JSON.stringify(fields[k])}`).join(",") + "}",
    );
    const out = new Uint8Array(body + tail.length);
    out.set(raw.subarray(0, body), 0);
    out.set(tail, body);
    return out;
  }

  /** The event as an object (parsed once). */
  get fields() {
    let f = this._fields;
    if (f === undefined) {
      f = this._fields = JSON.parse(decoder.decode(this.raw));
    }
    return f;
  }

  /** A field by name, or by dotted path into nested objects ("http.status"). */
  get(path) {
    const fields = this.fields;
    if (Object.prototype.hasOwnProperty.call(fields, path)) return fields[path];
    let value = fields;
    for (const part of path.split(".")) {
      if (value !== null && typeof value === "object" && Object.prototype.hasOwnProperty.call(value, part)) {
        value = value[part];
      } else {
        return undefined;
      }
    }
    return value;
  }

  /** A number at a path: a JSON number, or a string holding one ("502"); else undefined. */
  getNumber(path) {
    const v = this.get(path);
    if (typeof v === "number") return v;
    if (typeof v === "string" && v.trim() !== "") {
      const n = Number(v);
      if (Number.isFinite(n)) return n;
    }
    return undefined;
  }

  /** A string at a path; else undefined. */
  getString(path) {
    const v = this.get(path);
    return typeof v === "string" ? v : undefined;
  }

  /** Whether the field or dotted path exists. */
  has(path) {
    return this.get(path) !== undefined;
  }

  /** `level` (or `severity`, `levelname`), lower-case; undefined if none. */
  get level() {
    const f = this.fields;
    const level = f.level;
    if (typeof level === "string") return level.toLowerCase();
    for (let i = 1; i < LEVEL_KEYS.length; i++) {
      const value = f[LEVEL_KEYS[i]];
      if (typeof value === "string") return value.toLowerCase();
    }
    return undefined;
  }

  /** The rank of `level` in LEVELS; -1 when unknown. */
  get levelRank() {
    const rank = LEVELS[this.level];
    return rank === undefined ? -1 : rank;
  }

  /** The `message` field (or `msg`). */
  get message() {
    const f = this.fields;
    return f.message ?? f.msg;
  }
}

// Set by `sluice plugin build` for TypeScript: the line of plugin.ts each
// line of the compiled plugin.js came from.
let SOURCE_LINES = null;

/** A stack line, with compiled plugin.js positions as plugin.ts lines. */
function mapped(where) {
  const table = SOURCE_LINES;
  if (!table) return where;
  return where.replace(/[\w./-]*plugin\.js:(\d+)(?::\d+)?/g, (whole, line) => {
    const original = table.lines[Number(line) - 1];
    return original ? `${table.source}:${original}` : whole;
  });
}

function describe(e) {
  if (e instanceof Error) {
    const where = (e.stack || "").split("\n").find((l) => l.includes("@") || l.includes("at "));
    return `${e.name}: ${e.message}${where ? ` (${mapped(where.trim())})` : ""}`;
  }
  return String(e);
}

const TYPES = new Set(["string", "number", "integer", "boolean", "object", "array", "any"]);

function typeOf(v) {
  if (Array.isArray(v)) return "array";
  if (v === null) return "null";
  return typeof v;
}

/**
 * Check a config against the shape a plugin declares, as Rust's
 * `deny_unknown_fields` and Python's checks do: every key of the config
 * must be declared; a declared key is `"type"` (required), `"type?"`
 * (optional), or `{ type, default?, oneOf? }` (a default makes it
 * optional). Types: string, number, integer, boolean, object, array, any.
 * Returns the config with defaults filled in; throws naming the key.
 */
export function checkConfig(shape, config) {
  if (typeOf(config) !== "object") throw new Error(`the config must be a table, not ${typeOf(config)}`);
  const out = {};
  const declared = Object.keys(shape);
  for (const key of Object.keys(config)) {
    if (!(key in shape)) {
      throw new Error(`unknown key \`${key}\` (expected ${declared.length ? declared.join(", ") : "no keys"})`);
    }
  }
  for (const [key, rule] of Object.entries(shape)) {
    const spec = typeof rule === "string" ? { type: rule.replace(/\?$/, ""), optional: rule.endsWith("?") } : { ...rule };
    if (!TYPES.has(spec.type)) throw new Error(`config shape: ${key}: unknown type "${spec.type}"`);
    if (!(key in config)) {
      if ("default" in spec) out[key] = spec.default;
      else if (!spec.optional) throw new Error(`missing key \`${key}\` (${spec.type})`);
      continue;
    }
    const v = config[key];
    const t = typeOf(v);
    const ok = spec.type === "any" || t === spec.type || (spec.type === "integer" && Number.isInteger(v));
    if (!ok) throw new Error(`${key}: expected ${spec.type}, got ${t} ${JSON.stringify(v)}`);
    if (spec.oneOf && !spec.oneOf.includes(v)) {
      throw new Error(`${key}: ${JSON.stringify(v)} is not one of ${spec.oneOf.map((o) => JSON.stringify(o)).join(", ")}`);
    }
    out[key] = v;
  }
  return out;
}

/**
 * Build a plugin's `init` and `process` exports.
 * @param {object} spec `{ process(event), init?(config), config?, outputs?, masks?, version? }`:
 *   `config` declares the keys the plugin takes (see `checkConfig`); any
 *   other key is refused, naming it.
 */
export function plugin(spec) {
  if (typeof spec.process !== "function") {
    throw new Error("plugin({ process }) needs a process function");
  }
  let info = {
    outputs: [...(spec.outputs ?? [])],
    masks: Boolean(spec.masks),
    version: String(spec.version ?? "javascript"),
  };
  let ports = new Map();
  const keepOnly = spec[FILTER];

  function init(config) {
    try {
      let parsed = config.trim() === "" ? {} : JSON.parse(config);
      if (spec.config) parsed = checkConfig(spec.config, parsed);
      const result = spec.init ? spec.init(parsed) : undefined;
      if (result && typeof result === "object") {
        info = {
          outputs: [...(result.outputs ?? info.outputs)],
          masks: Boolean(result.masks ?? info.masks),
          version: String(result.version ?? info.version),
        };
      }
    } catch (e) {
      throw describe(e);
    }
    ports = new Map(info.outputs.map((name, i) => [name, i + 1]));
    return info;
  }

  function port(name, i) {
    const p = ports.get(name);
    if (p === undefined) {
      const declared = info.outputs.length ? info.outputs.join(", ") : "none; list them in outputs";
      throw `event ${i}: output "${name}" is not declared (declared: ${declared})`;
    }
    return p;
  }

  function process(data, ends) {
    const n = ends.length;
    const actions = new Uint8Array(n);
    let routed = null;
    const replaced = [];
    let size = 0;
    let start = 0;
    // An exception dead-letters its event alone (action 3, the reason as
    // the next entry of data/ends); the batch goes on.
    const fail = (i, e) => {
      const bytes = encoder.encode(describe(e));
      replaced.push(bytes);
      size += bytes.length;
      actions[i] = 3;
    };
    if (keepOnly !== undefined) {
      // A filter: one bool per event, nothing else to decide.
      for (let i = 0; i < n; i++) {
        const end = ends[i];
        const event = new Event(data.subarray(start, end));
        start = end;
        try {
          actions[i] = keepOnly(event) ? 1 : 0;
        } catch (e) {
          fail(i, e);
        }
      }
      if (replaced.length === 0) {
        return { actions, ports: new Uint16Array(0), data: new Uint8Array(0), ends: new Uint32Array(0) };
      }
      return { actions, ports: new Uint16Array(0), ...packed() };
    }
    for (let i = 0; i < n; i++) {
      const end = ends[i];
      const event = new Event(data.subarray(start, end));
      start = end;
      let verdict;
      try {
        verdict = spec.process(event);
      } catch (e) {
        fail(i, e);
        continue;
      }
      let p = 0;
      if (verdict === true || verdict === undefined) verdict = event;
      if (typeof verdict === "string") {
        p = port(verdict, i);
        verdict = event;
      }
      if (verdict === false || verdict === null) {
        actions[i] = 0;
      } else {
        let value = verdict;
        if (Array.isArray(verdict)) {
          if (verdict.length !== 2 || typeof verdict[1] !== "string") {
            throw `event ${i}: process returned an array; expected [object, "output"]`;
          }
          value = verdict[0];
          p = port(verdict[1], i);
        }
        if (value instanceof Event) {
          if (value.edited) {
            const bytes = value.toBytes();
            replaced.push(bytes);
            size += bytes.length;
            actions[i] = 2;
          } else {
            actions[i] = 1;
          }
        } else if (typeof value === "object" && value !== null && !Array.isArray(value)) {
          const bytes = encoder.encode(JSON.stringify(value));
          replaced.push(bytes);
          size += bytes.length;
          actions[i] = 2;
        } else {
          throw `event ${i}: process returned ${JSON.stringify(value)}; expected true, false, an output name, an object or [object, "output"]`;
        }
      }
      if (p !== 0) {
        if (routed === null) routed = new Uint16Array(n);
        routed[i] = p;
      }
    }
    return { actions, ports: routed ?? new Uint16Array(0), ...packed() };

    // The replacements and reasons, back to back, and their ends.
    function packed() {
      const out = new Uint8Array(size);
      const outEnds = new Uint32Array(replaced.length);
      let at = 0;
      replaced.forEach((bytes, j) => {
        out.set(bytes, at);
        at += bytes.length;
        outEnds[j] = at;
      });
      return { data: out, ends: outEnds };
    }
  }

  return { init, process };
}

/**
 * A filter: `keep(event)` returns true to keep the event.
 * @param {(event: Event) => boolean} keep
 * @param {object} [options] `{ init?(config), version? }`
 */
export function filter(keep, options = {}) {
  return plugin({ ...options, process: (event) => Boolean(keep(event)), [FILTER]: keep });
}
