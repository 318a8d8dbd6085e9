//! sluice's integration tests: one binary, real wasm components built from
//! `plugins/` and `tests/plugins/` by `build.rs`, real files and processes.

mod alerts;
mod buffers;
mod cli;
mod client;
mod cluster;
mod config;
mod dead_letters;
mod encryption;
mod files;
mod hardening;
mod http;
mod journald;
mod languages;
mod layers;
mod metrics;
mod multiline;
mod nats;
mod ops;
mod otel;
mod pictures;
mod pipelines;
mod plugins;
mod redis;
mod reload;
mod runtime;
mod schema;
mod service;
mod shadow;
mod shapes;
mod sinks;
mod soak;
mod sources;
mod syslog;
mod tail;
mod timeline;
mod tls;
mod util;

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

/// Every plugin built by `build.rs` must have a test module in `plugins/`:
/// a plugin without one fails to compile here.
macro_rules! assert_plugin_tested {
    ($name:ident) => {
        #[allow(unused_imports)]
        use crate::plugins::$name as _;
    };
}
for_each_plugin!(assert_plugin_tested);
