// Types of sluice.js, the helper for sluice plugins in JavaScript and TypeScript.

/** Level names as apps spell them, and their rank (higher is more severe). */
export declare const LEVELS: Readonly<Record<string, number>> & {
  readonly trace: 0;
  readonly debug: 1;
  readonly info: 2;
  readonly notice: 3;
  readonly warn: 4;
  readonly error: 5;
  readonly fatal: 6;
};

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";

/** Log through the host's tracing, tagged with the transform's name. */
export declare function log(level: LogLevel, message: string): void;

/** A JSON value as events hold them. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One event, parsed from JSON on first access to a field. */
export declare class Event {
  /** The event's JSON bytes, as they came. */
  readonly raw: Uint8Array;
  /** The event as an object (parsed once). */
  readonly fields: { [key: string]: Json };
  /** A field by name, or by dotted path into nested objects ("http.status"). */
  get(path: string): Json | undefined;
  /** A number at a path: a JSON number, or a string holding one ("502"); else undefined. */
  getNumber(path: string): number | undefined;
  /** A string at a path; else undefined. */
  getString(path: string): string | undefined;
  /** Whether the field or dotted path exists. */
  has(path: string): boolean;
  /**
   * Set a field by name or dotted path (objects made on the way); returns
   * the event, so `return event.set("env", "prod")` replaces it. A new
   * top-level field is appended to the event's bytes (no re-serialising).
   */
  set(path: string, value: Json): Event;
  /** Remove a field by name or dotted path (nothing if absent); returns the event. */
  remove(path: string): Event;
  /** Whether `set` or `remove` changed the event. */
  readonly edited: boolean;
  /** The event's JSON bytes, with its edits. */
  toBytes(): Uint8Array;
  /** `level` (or `severity`, `levelname`), lower-case; undefined if none. */
  readonly level: string | undefined;
  /** The rank of `level` in LEVELS; -1 when unknown. */
  readonly levelRank: number;
  /** The `message` field (or `msg`). */
  readonly message: Json | undefined;
}

/**
 * What `process` returns: `true`/`undefined`/the event keeps it (with its
 * `set`/`remove` edits), `false` drops it, an output name routes it, an
 * object replaces it, and `[object or event, output]` replaces and routes it.
 */
export type Verdict = boolean | undefined | null | string | Event | { [key: string]: Json } | [{ [key: string]: Json } | Event, string];

/** What `init` may return. */
export interface Info {
  outputs?: string[];
  masks?: boolean;
  version?: string;
}

/** A config key's type. */
export type ConfigType = "string" | "number" | "integer" | "boolean" | "object" | "array" | "any";

/**
 * The keys a plugin's config takes: `"string"` (required), `"string?"`
 * (optional), or `{ type, default?, oneOf? }`. Any other key is refused,
 * naming it, as Rust's `deny_unknown_fields` does.
 */
export type ConfigShape = Record<
  string,
  ConfigType | `${ConfigType}?` | { type: ConfigType; default?: Json; oneOf?: Json[] }
>;

/** Check a config against a shape; the config with defaults filled in. */
export declare function checkConfig(shape: ConfigShape, config: unknown): { [key: string]: Json };

export interface PluginSpec<C = any> {
  /** The keys `init` receives; others are refused (see ConfigShape). */
  config?: ConfigShape;
  /** Decide one event. An exception dead-letters it with its message. */
  process(event: Event): Verdict;
  /** Runs once per instance with the transform's config table. */
  init?(config: C): Info | void;
  /** Outputs besides the default one, for routing. */
  outputs?: string[];
  /** Whether the plugin redacts data (the host then refuses fail-open). */
  masks?: boolean;
  /** Reported with dead letters. */
  version?: string;
}

/** The component's exports, as the sluice:plugin world wants them. */
export interface Exports {
  init(config: string): { outputs: string[]; masks: boolean; version: string };
  process(data: Uint8Array, ends: Uint32Array): {
    actions: Uint8Array;
    ports: Uint16Array;
    data: Uint8Array;
    ends: Uint32Array;
  };
}

/** Build a plugin's `init` and `process` exports. */
export declare function plugin<C = any>(spec: PluginSpec<C>): Exports;

/** A filter: `keep(event)` returns true to keep the event. */
export declare function filter<C = any>(
  keep: (event: Event) => boolean,
  options?: { config?: ConfigShape; init?(config: C): Info | void; version?: string },
): Exports;
