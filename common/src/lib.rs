//! What the sluice host and its wasm plugins both run on event data.
//!
//! The host never links a plugin crate to run it on events (plugin code
//! belongs in the sandbox); what both sides need lives here instead, under
//! two rules that the lints below enforce outside tests:
//!
//! - **Unable to panic.** No indexing, `unwrap`, `expect` or `panic!`: an
//!   input that does not fit gives `None` (or is left as it is).
//! - **Bounded.** Nesting depth, Python format widths and precisions, and
//!   the size of every output are capped by the constants in each module,
//!   so no input makes an allocation larger than a small multiple of its
//!   own size (or of the caps).
//!
//! # Layout
//! - [`action`]: the action codes of a plugin's verdicts (the SDK links
//!   the same file).
//! - [`bytes`]: searches over bytes eight at a time.
//! - [`path`]: dotted field paths (`get`, `take`, `put`).
//! - [`coerce`]: typed values from strings (`"20"` -> 20).
//! - [`cond`]: field conditions (`{ field = "status", gte = 500 }`), for
//!   the host's declared metrics and, through a link, the plugin SDK.
//! - [`json`]: JSON string literals written by runs, as serde_json
//!   writes them.
//! - [`level`]: one spelling of each log level (`WARNING` -> `warn`).
//! - [`pyformat`]: Python's `%` formatting and the repr of its literals.
//! - [`presets`]: logging libraries' records mapped to sluice's fields.
//! - [`syslog`]: RFC 5424 and 3164 messages (the `syslog` source and the
//!   `parse` plugin).
//! - [`sealed`]: the mark of a value the `encrypt` plugin sealed, and the
//!   lookup of its fields (`sluice decrypt-fields` reads them back).
//! - [`units`]: sizes and durations as pipelines write them (`"1MiB"`,
//!   `"500ms"`).

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod action;
pub mod bytes;
pub mod coerce;
pub mod cond;
pub mod json;
pub mod level;
pub mod path;
pub mod presets;
pub mod pyformat;
pub mod sealed;
pub mod syslog;
pub mod units;

pub use coerce::{coerce, Coerce};
pub use path::{get, put, take};
pub use presets::{format_message, Preset};
