//! `sluice-plugin`: write sluice plugins in Rust.
//!
//! A plugin is a type that implements [`Plugin`]: an `init` that receives the
//! plugin's `[transforms.NAME.config]` table, and a `process` over one
//! [`Event`] view that returns a [`Verdict`]. The SDK hides the packed batch
//! format of the WIT contract (one buffer plus offsets, in and out): the host
//! calls the plugin once per batch and the SDK loops over the events.
//!
//! ```ignore
//! use sluice_plugin::{export_plugin, Event, Plugin, Verdict};
//!
//! #[derive(serde::Deserialize)]
//! struct DropHealthChecks { path: String }
//!
//! impl Plugin for DropHealthChecks {
//!     fn init(config: sluice_plugin::Config) -> Result<Self, String> {
//!         config.parse()
//!     }
//!     fn process(&self, event: &Event<'_>) -> Verdict {
//!         match event.get_str("path") {
//!             Some(p) if p == self.path => Verdict::Drop,
//!             _ => Verdict::Keep,
//!         }
//!     }
//! }
//!
//! export_plugin!(DropHealthChecks);
//! ```
//!
//! # Layout
//! - [`event`]: the lazily parsed, borrowing view of one event.
//! - [`level`]: log levels as apps spell them, ordered.
//! - [`cond`]: field conditions (equals, one-of, contains, exists) that
//!   bundled plugins share and custom plugins may reuse.
//! - [`bindings`]: the `wit-bindgen` output; plugin authors rarely need it.

pub mod cond;
#[cfg(feature = "schema")]
mod cond_schema;
pub mod event;
pub mod level;
#[cfg(feature = "schema")]
pub mod schema;

pub use event::{Edit, Event};
pub use level::Level;
/// serde_json, as the SDK uses it: `sluice_plugin::serde_json::json!`
/// without adding it to the plugin's `Cargo.toml`.
pub use serde_json;

/// The generated bindings of the `sluice:plugin` world.
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        // `wit` links to the repository's `wit/`; a project made by
        // `sluice plugin new` holds a copy of the file there instead.
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "sluice_plugin::bindings",
    });
}

pub use bindings::sluice::plugin::types::{Info, LogLevel, Verdicts};

/// Action codes of [`Verdicts::actions`], as the WIT documents them (one
/// file with the host's `sluice_common::action`).
pub mod action;

/// What a plugin decides for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the event unchanged to the default output.
    Keep,
    /// Drop the event (counted by the host as dropped, which is delivered).
    Drop,
    /// Forward the event unchanged to output `n`: 0 is the default output,
    /// `n >= 1` the n-th name returned by [`Plugin::outputs`].
    Route(u16),
    /// Forward these bytes (a JSON object) instead of the event.
    Replace(Vec<u8>),
    /// Replace the event and send it to output `n`.
    ReplaceRoute(Vec<u8>, u16),
    /// Forward the event unchanged to the output of this name (one of
    /// [`Plugin::outputs`], or `transform!(f, outputs = [...])`): see
    /// [`Verdict::to`].
    RouteTo(std::borrow::Cow<'static, str>),
    /// Replace the event and send it to the output of this name.
    ReplaceTo(Vec<u8>, std::borrow::Cow<'static, str>),
    /// Replace the event with the bytes [`Plugin::process_into`] appended to
    /// the buffer it was given (the batch's own buffer of new events).
    Written,
    /// The event cannot be processed: the host sends it to the dead letters
    /// with this reason, and the events around it go on (the batch is not
    /// run again, so a plugin that keeps state counts each event once).
    Fail(String),
}

impl Verdict {
    /// Forward the event unchanged to the output named `name`
    /// (`Verdict::to("alerts")`); a name the plugin did not declare fails
    /// the event, naming the declared ones.
    pub fn to(name: impl Into<std::borrow::Cow<'static, str>>) -> Verdict {
        Verdict::RouteTo(name.into())
    }
}

/// The port of the output named `name`: 1 + its place in the plugin's
/// outputs (read once per batch, on the first named route).
fn named_port<P: Plugin>(
    plugin: &P,
    names: &mut Option<Vec<String>>,
    name: &str,
    i: usize,
) -> Result<u16, String> {
    let names = names.get_or_insert_with(|| plugin.outputs());
    match names.iter().position(|n| n == name) {
        Some(p) => Ok(p as u16 + 1),
        None => Err(format!(
            "event {i}: no output named `{name}` (the plugin declares: {})",
            if names.is_empty() {
                "none; list them in Plugin::outputs or transform!(f, outputs = [...])".to_string()
            } else {
                names.join(", ")
            }
        )),
    }
}

/// A plugin's configuration: the `[transforms.NAME.config]` table as JSON.
#[derive(Debug, Clone)]
pub struct Config {
    json: String,
}

impl Config {
    /// Wrap the JSON text the host passes to `init`.
    pub fn new(json: impl Into<String>) -> Self {
        Self { json: json.into() }
    }

    /// The raw JSON text.
    pub fn as_str(&self) -> &str {
        &self.json
    }

    /// Deserialize into the plugin's config struct. Use
    /// `#[serde(deny_unknown_fields)]` on it so typos are reported; the error
    /// names the offending key by its path (`coerce.levelno: unknown
    /// variant ...`).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let text = if self.json.trim().is_empty() {
            "{}"
        } else {
            &self.json
        };
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = strip_position(&e.inner().to_string());
            match e.path().to_string().as_str() {
                "." => inner,
                path => format!("{path}: {inner}"),
            }
        })
    }
}

/// serde_json appends "at line 1 column 37" to its messages; the position is
/// in JSON the host generated, which means nothing to a user editing TOML.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A sluice plugin. See the crate documentation for an example.
pub trait Plugin: Sized + 'static {
    /// Build the plugin from its configuration. An error is shown to the user.
    fn init(config: Config) -> Result<Self, String>;

    /// Names of the outputs besides the default one (for routing plugins).
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the plugin redacts data (the host then refuses fail-open).
    fn masks(&self) -> bool {
        false
    }

    /// A version string reported with dead letters. The default is filled
    /// in by [`export_plugin!`] from the plugin crate's name and version.
    fn version(&self) -> String {
        String::new()
    }

    /// Decide what happens to one event.
    fn process(&self, event: &Event<'_>) -> Verdict;

    /// Called once before the events of each batch: where a plugin that
    /// keeps time (windows, rates) reads the clock once for the batch
    /// (`std::time::Instant` is `wasi:clocks` in the sandbox). The default
    /// does nothing.
    fn begin_batch(&self) {}

    /// Called once after the events of each batch: where a plugin reports
    /// what the batch counted ([`count`], once per batch rather than per
    /// event). The default does nothing.
    fn end_batch(&self) {}

    /// [`Plugin::process`] for plugins that build new events: `out` is the
    /// batch's buffer of new events, and a plugin that appends an event's
    /// new bytes to it returns [`Verdict::Written`] instead of a
    /// [`Verdict::Replace`] with a `Vec` of its own, which saves an
    /// allocation and a copy per event. Anything appended is discarded
    /// with any other verdict. The default calls `process`.
    fn process_into(&self, event: &Event<'_>, out: &mut Vec<u8>) -> Verdict {
        let _ = out;
        self.process(event)
    }
}

/// Nanoseconds of the monotonic clock (`wasi:clocks/monotonic-clock` in
/// the sandbox) since this instance first read it: for windows and rates,
/// read once per batch in [`Plugin::begin_batch`].
pub fn clock_ns() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Build the [`Info`] a plugin reports after `init`.
pub fn info_of<P: Plugin>(plugin: &P) -> Info {
    Info {
        outputs: plugin.outputs(),
        masks: plugin.masks(),
        version: plugin.version(),
    }
}

/// Run `plugin` over a packed batch and pack its verdicts.
///
/// This is what the exported `process` does inside the component; it is
/// public so that plugin logic can be tested and benchmarked natively over
/// the very same batch format.
pub fn process_batch<P: Plugin>(plugin: &P, data: &[u8], ends: &[u32]) -> Result<Verdicts, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Room for as many new bytes as the last batch wrote (a plugin that
    // rewrites every event otherwise grows the buffer a dozen times a
    // batch, copying it each time).
    static LAST_OUT: AtomicUsize = AtomicUsize::new(0);
    let mut out = Verdicts {
        actions: Vec::with_capacity(ends.len()),
        ports: Vec::new(),
        data: Vec::with_capacity(LAST_OUT.load(Ordering::Relaxed).min(64 << 20)),
        ends: Vec::with_capacity(ends.len()),
    };
    let mut start = 0usize;
    let mut names: Option<Vec<String>> = None;
    plugin.begin_batch();
    for (i, &end) in ends.iter().enumerate() {
        let end = end as usize;
        let bytes = data.get(start..end).ok_or_else(|| {
            format!(
                "event {i}: offsets {start}..{end} are outside the batch of {} bytes",
                data.len()
            )
        })?;
        start = end;
        let event = Event::new(bytes);
        let before = out.data.len();
        let verdict = plugin.process_into(&event, &mut out.data);
        if !matches!(verdict, Verdict::Written) {
            out.data.truncate(before);
        }
        let (action, port) = match verdict {
            Verdict::Keep => (action::KEEP, 0),
            Verdict::Drop => (action::DROP, 0),
            Verdict::Route(p) => (action::KEEP, p),
            Verdict::Replace(bytes) => {
                push_replacement(&mut out, &bytes);
                (action::REPLACE, 0)
            }
            Verdict::ReplaceRoute(bytes, p) => {
                push_replacement(&mut out, &bytes);
                (action::REPLACE, p)
            }
            Verdict::RouteTo(name) => (action::KEEP, named_port(plugin, &mut names, &name, i)?),
            Verdict::ReplaceTo(bytes, name) => {
                let p = named_port(plugin, &mut names, &name, i)?;
                push_replacement(&mut out, &bytes);
                (action::REPLACE, p)
            }
            Verdict::Written if out.data.len() == before => {
                return Err(format!(
                    "event {i}: the plugin said it wrote a new event and wrote nothing"
                ))
            }
            Verdict::Written => {
                out.ends.push(out.data.len() as u32);
                (action::REPLACE, 0)
            }
            Verdict::Fail(reason) => {
                push_replacement(&mut out, reason.as_bytes());
                (action::FAIL, 0)
            }
        };
        out.actions.push(action);
        if port != 0 && out.ports.is_empty() {
            // First routed event: materialise the ports of the earlier ones.
            out.ports.resize(i, 0);
        }
        if !out.ports.is_empty() || port != 0 {
            out.ports.push(port);
        }
    }
    plugin.end_batch();
    LAST_OUT.store(out.data.len(), Ordering::Relaxed);
    Ok(out)
}

fn push_replacement(out: &mut Verdicts, bytes: &[u8]) {
    out.data.extend_from_slice(bytes);
    out.ends.push(out.data.len() as u32);
}

/// Add `delta` to this plugin's counter `name` on the host's `/metrics`
/// (`sluice_plugin_count_total{component, name}`): evictions of a bounded
/// table, matches of a rule. Names are 1 to 64 of `a-z`, `0-9` and `_`, at
/// most 32 per plugin; the host ignores others. What a batch counts is
/// kept only if the batch succeeds. Needs a host of contract 0.1.1 or
/// later (a plugin that never calls it does not import it). Outside a
/// component (native tests) it adds to [`counted`].
pub fn count(name: &str, delta: u64) {
    #[cfg(target_arch = "wasm32")]
    bindings::count(name, delta);
    #[cfg(not(target_arch = "wasm32"))]
    NATIVE_COUNTS.with(|c| {
        let mut c = c.borrow_mut();
        match c.iter_mut().find(|(k, _)| k == name) {
            Some((_, n)) => *n += delta,
            None => c.push((name.to_string(), delta)),
        }
    });
}

/// [`count`] what a running `total` grew by since `reported`, and
/// remember it: what a plugin that keeps a tally (evictions...) calls in
/// [`Plugin::end_batch`], so the host hears once per batch.
pub fn count_growth(name: &str, total: u64, reported: &mut u64) {
    if total > *reported {
        count(name, total - *reported);
        *reported = total;
    }
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static NATIVE_COUNTS: std::cell::RefCell<Vec<(String, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// What [`count`] added to `name` on this thread, outside a component (for
/// native tests; always 0 inside one).
pub fn counted(name: &str) -> u64 {
    #[cfg(not(target_arch = "wasm32"))]
    return NATIVE_COUNTS.with(|c| {
        c.borrow()
            .iter()
            .find(|(k, _)| k == name)
            .map_or(0, |(_, n)| *n)
    });
    #[cfg(target_arch = "wasm32")]
    {
        let _ = name;
        0
    }
}

/// Log through the host's `tracing`. Outside a component (native tests and
/// benchmarks) messages go to stderr.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Runtime support for [`export_plugin!`]; not a public API.
#[doc(hidden)]
pub mod __rt {
    pub use std::cell::RefCell;
    pub use std::thread::LocalKey;

    use super::*;

    pub fn init<P: Plugin>(
        state: &'static LocalKey<RefCell<Option<P>>>,
        config: String,
        crate_version: &str,
    ) -> Result<Info, String> {
        let plugin = P::init(Config::new(config))?;
        let mut info = info_of(&plugin);
        if info.version.is_empty() {
            info.version = crate_version.to_string();
        }
        state.with(|s| *s.borrow_mut() = Some(plugin));
        Ok(info)
    }

    pub fn process<P: Plugin>(
        state: &'static LocalKey<RefCell<Option<P>>>,
        data: &[u8],
        ends: &[u32],
    ) -> Result<Verdicts, String> {
        state.with(|s| match &*s.borrow() {
            Some(plugin) => process_batch(plugin, data, ends),
            None => Err("process called before init".to_string()),
        })
    }
}

/// What a filter function may return: `bool`, or `Result<bool, E>` where an
/// error sends the event to the dead letters with its message.
pub trait Keep {
    /// The verdict this stands for.
    fn verdict(self) -> Verdict;
}

impl Keep for bool {
    fn verdict(self) -> Verdict {
        if self {
            Verdict::Keep
        } else {
            Verdict::Drop
        }
    }
}

impl<E: std::fmt::Display> Keep for Result<bool, E> {
    fn verdict(self) -> Verdict {
        match self {
            Ok(keep) => keep.verdict(),
            Err(e) => Verdict::Fail(e.to_string()),
        }
    }
}

/// What a transform function may return: a [`Verdict`], or
/// `Result<Verdict, E>` where an error dead-letters the event.
pub trait IntoVerdict {
    /// The verdict this stands for.
    fn into_verdict(self) -> Verdict;
}

impl IntoVerdict for Verdict {
    fn into_verdict(self) -> Verdict {
        self
    }
}

impl<E: std::fmt::Display> IntoVerdict for Result<Verdict, E> {
    fn into_verdict(self) -> Verdict {
        self.unwrap_or_else(|e| Verdict::Fail(e.to_string()))
    }
}

/// The configuration of a plugin that takes none: an empty table, and a
/// clear error for any key in it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// A plugin that is one function over an event: `filter!(keep)` with
/// `fn keep(event: &Event) -> bool`, or with a config,
/// `filter!(keep, config = MyConfig)` with
/// `fn keep(config: &MyConfig, event: &Event) -> bool`. The function may
/// return `Result<bool, E>` instead: an `Err` dead-letters the event.
///
/// ```ignore
/// use sluice_plugin::{filter, Event, Level};
///
/// filter!(keep);
///
/// fn keep(event: &Event) -> bool {
///     event.level() >= Some(Level::Warn)
/// }
/// ```
#[macro_export]
macro_rules! filter {
    ($keep:path) => {
        $crate::__fn_plugin!($crate::NoConfig, [], |_c, e| $crate::Keep::verdict($keep(
            e
        )));
    };
    ($keep:path, config = $cfg:ty) => {
        $crate::__fn_plugin!($cfg, [], |c, e| $crate::Keep::verdict($keep(c, e)));
    };
}

/// A plugin that is one function returning a [`Verdict`] (or
/// `Result<Verdict, E>`): `transform!(f)` with `fn f(event: &Event) -> Verdict`,
/// or `transform!(f, config = MyConfig)` with
/// `fn f(config: &MyConfig, event: &Event) -> Verdict`. Outputs besides the
/// default one are declared with `outputs = ["alerts", ...]` after the
/// function (and the config), and routed to by name: `Verdict::to("alerts")`.
///
/// ```ignore
/// transform!(tag, config = Config, outputs = ["alerts"]);
///
/// fn tag(config: &Config, event: &Event) -> Verdict {
///     let bytes = event.edit().set("env", config.env.as_str()).to_bytes();
///     if event.get_f64("status").is_some_and(|s| s >= 500.0) {
///         return Verdict::ReplaceTo(bytes, "alerts".into());
///     }
///     Verdict::Replace(bytes)
/// }
/// ```
#[macro_export]
macro_rules! transform {
    ($f:path $(, outputs = [$($o:expr),* $(,)?])? $(,)?) => {
        $crate::__fn_plugin!($crate::NoConfig, [$($($o),*)?], |_c, e| {
            $crate::IntoVerdict::into_verdict($f(e))
        });
    };
    ($f:path, config = $cfg:ty $(, outputs = [$($o:expr),* $(,)?])? $(,)?) => {
        $crate::__fn_plugin!($cfg, [$($($o),*)?], |c, e| {
            $crate::IntoVerdict::into_verdict($f(c, e))
        });
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fn_plugin {
    ($cfg:ty, [$($o:expr),*], |$c:ident, $e:ident| $body:expr) => {
        const _: () = {
            struct __SluiceFnPlugin($cfg);
            impl $crate::Plugin for __SluiceFnPlugin {
                fn init(
                    config: $crate::Config,
                ) -> ::std::result::Result<Self, ::std::string::String> {
                    config.parse::<$cfg>().map(__SluiceFnPlugin)
                }
                fn outputs(&self) -> ::std::vec::Vec<::std::string::String> {
                    ::std::vec![$(::std::string::ToString::to_string(&$o)),*]
                }
                fn process(&self, $e: &$crate::Event<'_>) -> $crate::Verdict {
                    let $c = &self.0;
                    $body
                }
            }
            $crate::export_plugin!(__SluiceFnPlugin);
        };
    };
}

/// Export a [`Plugin`] type as the component's implementation of the
/// `sluice:plugin` world. Call it once, at the root of a `cdylib` crate.
/// It expands to nothing outside wasm, so the crate can also be linked
/// natively for tests and benchmarks.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static __SLUICE_STATE: $crate::__rt::RefCell<::std::option::Option<$ty>> =
                    const { $crate::__rt::RefCell::new(::std::option::Option::None) };
            }
            struct __SluiceGuest;
            impl $crate::bindings::Guest for __SluiceGuest {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::Info, ::std::string::String> {
                    $crate::__rt::init::<$ty>(
                        &__SLUICE_STATE,
                        config,
                        concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")),
                    )
                }
                fn process(
                    data: ::std::vec::Vec<u8>,
                    ends: ::std::vec::Vec<u32>,
                ) -> ::std::result::Result<$crate::Verdicts, ::std::string::String> {
                    $crate::__rt::process::<$ty>(&__SLUICE_STATE, &data, &ends)
                }
            }
    $crate::bindings::__export_plugin_world!(__SluiceGuest with_types_in $crate::bindings);
        };
    };
}

/// Ships a plugin's config schema (JSON Schema, as a file) inside its
/// component, in the custom section `sluice-config-schema`, where
/// `sluice schema` and editors' checks of pipeline files find it:
/// `sluice_plugin::config_schema!("../config.schema.json");` (the path
/// as `include_bytes!` takes it, relative to the file it is written in).
#[macro_export]
macro_rules! config_schema {
    ($path:literal) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const SCHEMA: &[u8] = include_bytes!($path);
            #[used]
            #[link_section = "sluice-config-schema"]
            static CONFIG_SCHEMA: [u8; SCHEMA.len()] = {
                let mut out = [0u8; SCHEMA.len()];
                let mut i = 0;
                while i < SCHEMA.len() {
                    out[i] = SCHEMA[i];
                    i += 1;
                }
                out
            };
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `transform!` with outputs compiles natively too (the component
    /// export is wasm only).
    #[allow(dead_code)]
    mod declared {
        use crate::{Event, Verdict};
        #[derive(serde::Deserialize)]
        pub struct Config {
            env: String,
        }
        transform!(to_alerts, outputs = ["alerts"]);
        fn to_alerts(_: &Event) -> Verdict {
            Verdict::to("alerts")
        }
        mod with_config {
            use super::Config;
            use crate::{Event, Verdict};
            transform!(f, config = Config, outputs = ["a", "b"],);
            fn f(_: &Config, _: &Event) -> Verdict {
                Verdict::Keep
            }
        }
    }

    /// Routes by name: `alerts` is port 1, `audit` port 2.
    struct Named;

    impl Plugin for Named {
        fn init(_: Config) -> Result<Self, String> {
            Ok(Named)
        }
        fn outputs(&self) -> Vec<String> {
            vec!["alerts".into(), "audit".into()]
        }
        fn process(&self, event: &Event<'_>) -> Verdict {
            match event.get_str("to").as_deref() {
                Some("alerts") => Verdict::to("alerts"),
                Some("audit") => {
                    Verdict::ReplaceTo(event.edit().set("audited", true).to_bytes(), "audit".into())
                }
                Some(other) => Verdict::RouteTo(other.to_string().into()),
                None => Verdict::Keep,
            }
        }
    }

    /// Fails events without `ok`, replaces those with `ok = 2`.
    struct Picky;

    impl Plugin for Picky {
        fn init(_: Config) -> Result<Self, String> {
            Ok(Picky)
        }
        fn process(&self, event: &Event<'_>) -> Verdict {
            match event.get_f64("ok") {
                None => Verdict::Fail("no ok".into()),
                Some(2.0) => Verdict::Replace(br#"{"ok":3}"#.to_vec()),
                Some(_) => Verdict::Keep,
            }
        }
    }

    #[test]
    fn a_failed_event_is_dead_lettered_alone_with_its_reason() {
        let data = br#"{"ok":1}{}{"ok":2}"#;
        let v = process_batch(&Picky, data, &[8, 10, 18]).unwrap();
        assert_eq!(v.actions, [action::KEEP, action::FAIL, action::REPLACE]);
        // The reason and the replacement, in input order.
        assert_eq!(v.data, br#"no ok{"ok":3}"#);
        assert_eq!(v.ends, [5, 13]);
    }

    #[test]
    fn outputs_by_name() {
        let data = br#"{"to":"alerts"}{}{"to":"audit"}"#;
        let v = process_batch(&Named, data, &[15, 17, 31]).unwrap();
        assert_eq!(v.ports, [1, 0, 2]);
        assert_eq!(v.actions, [action::KEEP, action::KEEP, action::REPLACE]);
        assert_eq!(v.data, br#"{"to":"audit","audited":true}"#);
        let e = process_batch(&Named, br#"{}{"to":"pager"}"#, &[2, 16]).unwrap_err();
        assert_eq!(
            e,
            "event 1: no output named `pager` (the plugin declares: alerts, audit)"
        );
    }

    /// Writes `{"n":LEN}` for events longer than 8 bytes, and for shorter
    /// ones appends bytes and keeps the event, or says it wrote and did not.
    struct Writer;

    impl Plugin for Writer {
        fn init(_: Config) -> Result<Self, String> {
            Ok(Writer)
        }

        fn process(&self, _: &Event<'_>) -> Verdict {
            Verdict::Keep
        }

        fn process_into(&self, event: &Event<'_>, out: &mut Vec<u8>) -> Verdict {
            let raw = event.raw();
            if raw.len() > 8 {
                // (No format string: new projects get this file, and the
                // kit's test refuses doubled braces, its placeholders.)
                out.extend_from_slice(b"{\"n\":");
                out.extend_from_slice(raw.len().to_string().as_bytes());
                out.push(b'}');
                return Verdict::Written;
            }
            if raw == b"{\"x\":0}" {
                return Verdict::Written;
            }
            out.extend_from_slice(b"stray bytes");
            Verdict::Keep
        }
    }

    fn batch(events: &[&str]) -> (Vec<u8>, Vec<u32>) {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for e in events {
            data.extend_from_slice(e.as_bytes());
            ends.push(data.len() as u32);
        }
        (data, ends)
    }

    #[test]
    fn written_events_go_straight_into_the_batch_and_stray_bytes_do_not() {
        let (data, ends) = batch(&[r#"{"a":"long one"}"#, "{}", r#"{"b":"longer one"}"#]);
        let v = process_batch(&Writer, &data, &ends).unwrap();
        assert_eq!(v.actions, [action::REPLACE, action::KEEP, action::REPLACE]);
        assert_eq!(v.data, br#"{"n":16}{"n":18}"#);
        assert_eq!(v.ends, [8, 16]);
    }

    #[test]
    fn written_with_nothing_written_fails_the_batch() {
        let (data, ends) = batch(&["{}", r#"{"x":0}"#]);
        let err = process_batch(&Writer, &data, &ends).unwrap_err();
        assert!(err.starts_with("event 1:"), "{err}");
    }
}
