//! Every validation error names the file, the line and the key.

use crate::util::plan_error;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `error` must point at `pipeline.toml:LINE:` and name `key`.
fn assert_at(error: &str, line: usize, key: &str, says: &str) {
    assert!(
        error.contains(&format!("pipeline.toml:{line}:")),
        "wrong line (want {line}): {error}"
    );
    assert!(
        error.contains(&format!(" {key}: ")),
        "key {key} not named: {error}"
    );
    assert!(error.contains(says), "missing {says:?}: {error}");
}

const SINK: &str = "\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"app\"]\n";

#[tokio::test]
async fn unknown_key() {
    let d = dir();
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"generate\"\ncount = 3\ncolour = \"red\"\n{SINK}"),
    )
    .await;
    assert_at(&e, 4, "sources.app.colour", "unknown field `colour`");
}

#[tokio::test]
async fn unknown_key_in_inline_table() {
    let d = dir();
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"generate\"\nbatch = {{ max_evnts = 3 }}\n{SINK}"),
    )
    .await;
    assert_at(
        &e,
        3,
        "sources.app.batch.max_evnts",
        "unknown field `max_evnts`",
    );
}

#[tokio::test]
async fn wrong_type() {
    let d = dir();
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"generate\"\ncount = \"ten\"\n{SINK}"),
    )
    .await;
    assert_at(&e, 3, "sources.app.count", "invalid type");
}

#[tokio::test]
async fn unknown_source_type() {
    let d = dir();
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"kafka\"\n{SINK}"),
    )
    .await;
    assert_at(&e, 2, "sources.app.type", "unknown type `kafka`");
}

#[tokio::test]
async fn unknown_top_level_key() {
    let d = dir();
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"generate\"\n{SINK}\n[batchh]\nmax_events = 1\n"),
    )
    .await;
    assert_at(&e, 8, "batchh", "unknown field `batchh`");
}

#[tokio::test]
async fn unknown_input() {
    let d = dir();
    let e = plan_error(
        d.path(),
        "[sources.app]\ntype = \"generate\"\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"ap\"]\n",
    )
    .await;
    assert_at(&e, 6, "sinks.out.inputs", "unknown input `ap` (known: app");
}

#[tokio::test]
async fn unknown_route_output() {
    let d = dir();
    let toml = r#"[sources.app]
type = "generate"

[transforms.router]
plugin = "route"
inputs = ["app"]
config = { field = "level", routes = { errors = "error" } }

[sinks.out]
type = "stdout"
inputs = ["router.erors"]
"#;
    let e = plan_error(d.path(), toml).await;
    assert_at(
        &e,
        11,
        "sinks.out.inputs",
        "transform `router` has no output `erors` (its outputs: default, errors)",
    );
}

#[tokio::test]
async fn cycle() {
    let d = dir();
    let toml = r#"[sources.app]
type = "generate"

[transforms.a]
plugin = "filter"
inputs = ["app", "b"]
config = { min_level = "info" }

[transforms.b]
plugin = "filter"
inputs = ["a"]
config = { min_level = "info" }

[sinks.out]
type = "stdout"
inputs = ["b"]
"#;
    let e = plan_error(d.path(), toml).await;
    assert_at(&e, 6, "transforms.a.inputs", "cycle: a -> b -> a");
}

#[tokio::test]
async fn missing_plugin_file() {
    let d = dir();
    let toml = format!(
        "[sources.app]\ntype = \"generate\"\n\n[transforms.x]\nplugin = \"plugins/nope.wasm\"\ninputs = [\"app\"]\n{}",
        SINK.replace("\"app\"", "\"x\"")
    );
    let e = plan_error(d.path(), &toml).await;
    assert_at(&e, 5, "transforms.x.plugin", "cannot read plugin file");
    assert!(e.contains("nope.wasm"), "{e}");
}

#[tokio::test]
async fn unknown_bundled_plugin() {
    let d = dir();
    let toml = format!("[sources.app]\ntype = \"generate\"\n\n[transforms.x]\nplugin = \"filtre\"\ninputs = [\"app\"]\n{SINK}");
    let e = plan_error(d.path(), &toml).await;
    assert_at(
        &e,
        5,
        "transforms.x.plugin",
        "unknown bundled plugin `filtre` (bundled: filter, route, mask, remap, encrypt, parse, throttle, dedup)",
    );
}

#[tokio::test]
async fn not_a_component() {
    let d = dir();
    // A core module (the 8-byte header of an empty one) and plain garbage.
    for (file, bytes) in [
        ("core.wasm", &b"\0asm\x01\0\0\0"[..]),
        ("junk.wasm", b"hello"),
    ] {
        std::fs::write(d.path().join(file), bytes).unwrap();
        let toml = format!("[sources.app]\ntype = \"generate\"\n\n[transforms.x]\nplugin = \"{file}\"\ninputs = [\"app\"]\n{SINK}");
        let e = plan_error(d.path(), &toml).await;
        assert_at(&e, 5, "transforms.x.plugin", "not a WebAssembly component");
    }
}

#[tokio::test]
async fn component_of_another_world() {
    // The smallest valid component: no imports, no exports.
    let d = dir();
    std::fs::write(d.path().join("empty.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    let toml = format!("[sources.app]\ntype = \"generate\"\n\n[transforms.x]\nplugin = \"empty.wasm\"\ninputs = [\"app\"]\n{SINK}");
    let e = plan_error(d.path(), &toml).await;
    assert_at(
        &e,
        5,
        "transforms.x.plugin",
        "not a component of the sluice:plugin world",
    );
}

#[tokio::test]
async fn init_rejects_config() {
    let d = dir();
    let toml = format!(
        "[sources.app]\ntype = \"generate\"\n\n[transforms.keep]\nplugin = \"filter\"\ninputs = [\"app\"]\nconfig = {{ min_level = \"loud\" }}\n{}",
        SINK.replace("\"app\"", "\"keep\"")
    );
    let e = plan_error(d.path(), &toml).await;
    assert_at(
        &e,
        7,
        "transforms.keep.config",
        "the plugin rejected its config: min_level: unknown level `loud`",
    );
}

#[tokio::test]
async fn init_rejects_unknown_config_key() {
    let d = dir();
    let toml = format!(
        "[sources.app]\ntype = \"generate\"\n\n[transforms.m]\nplugin = \"mask\"\ninputs = [\"app\"]\n\n[transforms.m.config]\ndetect = [\"email\"]\nreplace_with = \"x\"\n{}",
        SINK.replace("\"app\"", "\"m\"")
    );
    let e = plan_error(d.path(), &toml).await;
    assert_at(&e, 8, "transforms.m.config", "unknown field `replace_with`");
}

#[tokio::test]
async fn fail_open_masking_is_refused() {
    let d = dir();
    let toml = format!(
        "[sources.app]\ntype = \"generate\"\n\n[transforms.m]\nplugin = \"mask\"\ninputs = [\"app\"]\non_error = \"pass\"\n{}",
        SINK.replace("\"app\"", "\"m\"")
    );
    let e = plan_error(d.path(), &toml).await;
    assert_at(&e, 4, "transforms.m.on_error", "allow_unmasked");
}

#[tokio::test]
async fn duplicate_and_reserved_names() {
    let d = dir();
    let e = plan_error(d.path(), "[sources.out]\ntype = \"generate\"\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"out\"]\n").await;
    assert_at(&e, 4, "sinks.out", "already used by sources.out");
    let e = plan_error(
        d.path(),
        &format!("[sources._dead_letters]\ntype = \"generate\"\n{SINK}"),
    )
    .await;
    assert_at(&e, 1, "sources._dead_letters", "reserved");
}

#[tokio::test]
async fn bad_duration() {
    let d = dir();
    let e = plan_error(
        d.path(),
        &format!("[batch]\nmax_wait = \"soon\"\n\n[sources.app]\ntype = \"generate\"\n{SINK}"),
    )
    .await;
    assert_at(&e, 2, "batch.max_wait", "invalid duration `soon`");
}

#[tokio::test]
async fn transforms_cannot_read_dead_letters() {
    let d = dir();
    let toml = format!(
        "[sources.app]\ntype = \"generate\"\n\n[transforms.k]\nplugin = \"filter\"\ninputs = [\"_dead_letters\"]\nconfig = {{ min_level = \"info\" }}\n{}",
        SINK
    );
    let e = plan_error(d.path(), &toml).await;
    assert_at(
        &e,
        6,
        "transforms.k.inputs",
        "only sinks may read `_dead_letters`",
    );
}

#[tokio::test]
async fn sizes_counts_and_durations_are_bounded_at_their_line() {
    let d = dir();
    let gen = "[sources.app]\ntype = \"generate\"\n";
    let cases: Vec<(String, usize, &str)> = vec![
        (format!("[batch]\nmax_events = 100000000\n\n{gen}{SINK}"), 2, "batch.max_events"),
        (format!("[batch]\nbuffer = 0\n\n{gen}{SINK}"), 2, "batch.buffer"),
        (
            format!("{gen}batch = {{ max_events = 0 }}\n{SINK}"),
            3,
            "sources.app.batch.max_events",
        ),
        (
            format!("{gen}\n[transforms.t]\nplugin = \"filter\"\ninputs = [\"app\"]\nstack_kib = 0\n{SINK}"),
            7,
            "transforms.t.stack_kib",
        ),
        (
            format!("{gen}\n[transforms.t]\nplugin = \"filter\"\ninputs = [\"app\"]\nmemory_mib = 99999999999\n{SINK}"),
            7,
            "transforms.t.memory_mib",
        ),
        (
            format!("{gen}\n[transforms.t]\nplugin = \"filter\"\ninputs = [\"app\"]\nconcurrency = 0\n{SINK}"),
            7,
            "transforms.t.concurrency",
        ),
        (
            format!("[sources.app]\ntype = \"http\"\naddress = \"127.0.0.1:0\"\nmax_body = \"2GiB\"\n{SINK}"),
            4,
            "sources.app.max_body",
        ),
        (
            format!("[sources.app]\ntype = \"dead_letters\"\npath = \"dead.log\"\nmax_attempts = 0\n{SINK}"),
            4,
            "sources.app.max_attempts",
        ),
        (
            format!("[sources.app]\ntype = \"dead_letters\"\npath = \"dead.log\"\nretry_after = \"400d\"\n{SINK}"),
            4,
            "sources.app.retry_after",
        ),
        (
            format!("[sources.app]\ntype = \"dead_letters\"\npath = \"dead.log\"\npoll_interval = \"1ms\"\n{SINK}"),
            4,
            "sources.app.poll_interval",
        ),
    ];
    for (toml, line, key) in cases {
        let e = plan_error(d.path(), &toml).await;
        assert_at(&e, line, key, "out of bounds");
    }
}

#[tokio::test]
async fn two_listeners_on_one_address_are_refused() {
    let d = dir();
    let toml = "[admin]\naddress = \"127.0.0.1:9598\"\n\n[sources.a]\ntype = \"http\"\naddress = \"127.0.0.1:9598\"\n\n[sources.b]\ntype = \"http\"\naddress = \"127.0.0.1:9700\"\n\n[sources.c]\ntype = \"http\"\naddress = \"localhost:9700\"\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"a\", \"b\", \"c\"]\n";
    let e = plan_error(d.path(), toml).await;
    assert_at(&e, 6, "sources.a.address", "admin.address");
    let toml = toml.replace("[admin]\naddress = \"127.0.0.1:9598\"\n\n", "");
    let e = plan_error(d.path(), &toml).await;
    assert_at(&e, 11, "sources.c.address", "sources.b.address");
}

#[tokio::test]
async fn plugin_instance_limits_are_config() {
    let d = dir();
    let toml = |extra: &str| {
        format!("[sources.app]\ntype = \"generate\"\n\n[transforms.t]\nplugin = \"filter\"\ninputs = [\"app\"]\nconfig = {{ min_level = \"info\" }}\n{extra}\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"t\"]\n")
    };
    let e = plan_error(d.path(), &toml("instances = 0")).await;
    assert_at(&e, 8, "transforms.t.instances", "out of bounds");
    // Too few for the component: refused when it is instantiated, at its plugin.
    let e = plan_error(d.path(), &toml("instances = 1")).await;
    assert!(
        e.contains("transforms.t.plugin") && e.contains("instance"),
        "{e}"
    );
    // The defaults admit it, and generous counts are allowed.
    let p = crate::util::parse(
        d.path(),
        &toml("instances = 200\ntables = 500\nmemories = 50"),
    )
    .unwrap();
    sluice::topology::plan(p, crate::util::runtime())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_bad_timestamp_candidate_is_named_at_its_line() {
    let d = dir();
    let toml = format!(
        "[sources.app]\ntype = \"stdin\"\ntimestamp = {{ field = \"t\", format = \"epoch\" }}\n{SINK}"
    );
    let e = plan_error(d.path(), &toml).await;
    assert_at(
        &e,
        3,
        "sources.app.timestamp.format",
        "unknown format `epoch`",
    );
}

#[tokio::test]
async fn metrics_by_fields_are_checked_at_their_key() {
    let d = dir();
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"generate\"\ncount = 3\nmetrics = {{ by = [\"kind\"] }}\n{SINK}"),
    )
    .await;
    assert_at(&e, 4, "sources.app.metrics.by", "the label `kind`");
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"generate\"\n\n{SINK}metrics = {{ by = [\"level\"], max_series = 0 }}\n"),
    )
    .await;
    assert_at(&e, 8, "sinks.out.metrics.max_series", "out of bounds");
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"generate\"\nmetrics = {{ by = [\"level\"], maxseries = 5 }}\n{SINK}"),
    )
    .await;
    assert_at(
        &e,
        3,
        "sources.app.metrics.maxseries",
        "unknown field `maxseries`",
    );
}

#[tokio::test]
async fn an_otlp_grpc_address_may_not_be_another_listeners() {
    let d = dir();
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"otlp\"\naddress = \"127.0.0.1:14318\"\ngrpc_address = \"127.0.0.1:14318\"\n{SINK}"),
    )
    .await;
    assert_at(&e, 4, "sources.app.grpc_address", "listens already");
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"otlp\"\ngrpc_address = \"localhost:4317\"\n{SINK}"),
    )
    .await;
    assert_at(
        &e,
        3,
        "sources.app.grpc_address",
        "not an IP address and port",
    );
}

/// `buffer` of a sink: its errors name the line and key; sources have none.
#[tokio::test]
async fn buffer_errors_name_line_and_key() {
    let d = dir();
    let src = "[sources.app]\ntype = \"generate\"\ncount = 3\n";
    let e = plan_error(
        d.path(),
        &format!("{src}\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"app\"]\nbuffer = {{ type = \"disk\", when_full = \"wait\" }}\n"),
    )
    .await;
    assert_at(&e, 8, "sinks.out.buffer", "unknown variant `wait`");
    let e = plan_error(
        d.path(),
        &format!("{src}\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"app\"]\nbuffer = {{ type = \"tape\" }}\n"),
    )
    .await;
    assert_at(&e, 8, "sinks.out.buffer.type", "unknown variant `tape`");
    let e = plan_error(
        d.path(),
        &format!("{src}\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"app\"]\nbuffer = {{ type = \"disk\", max_size = \"10KiB\" }}\n"),
    )
    .await;
    assert!(
        e.contains("buffer.max_size") && e.contains("out of bounds"),
        "{e}"
    );
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"generate\"\nbuffer = {{ type = \"disk\" }}\n{SINK}"),
    )
    .await;
    assert_at(&e, 3, "sources.app.buffer", "`buffer` is a key of sinks");
}

/// Syslog, multiline and container settings are checked at their key.
#[tokio::test]
async fn machine_log_settings_are_checked_at_their_key() {
    let d = dir();
    let file =
        |extra: &str| format!("[sources.app]\ntype = \"file\"\npath = \"x.log\"\n{extra}\n{SINK}");
    let e = plan_error(d.path(), &file("multiline = { start = \"([\" }")).await;
    assert_at(
        &e,
        4,
        "sources.app.multiline.start",
        "not a regular expression",
    );
    let e = plan_error(d.path(), &file("multiline = { timeout = \"1s\" }")).await;
    assert_at(
        &e,
        4,
        "sources.app.multiline",
        "give `start`, `continue` or `preset`",
    );
    let e = plan_error(d.path(), &file("multiline = { preset = \"cobol\" }")).await;
    assert_at(
        &e,
        4,
        "sources.app.multiline.preset",
        "unknown variant `cobol`",
    );
    let e = plan_error(d.path(), &file("kubernetes = true")).await;
    assert_at(&e, 4, "sources.app.kubernetes", "format = \"cri\"");
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"syslog\"\naddress = \"localhost:514\"\n{SINK}"),
    )
    .await;
    assert_at(&e, 3, "sources.app.address", "not an IP address and port");
    let e = plan_error(
        d.path(),
        &format!("[sources.app]\ntype = \"syslog\"\naddress = \"127.0.0.1:514\"\nmode = \"udp\"\ntls = {{ cert_file = \"a\", key_file = \"b\" }}\n{SINK}"),
    )
    .await;
    assert_at(&e, 5, "sources.app.tls", "TLS is for `mode = \"tcp\"`");
    // A Redis list's read-ahead is bounded both ways.
    let list = |n: u64| {
        format!("[sources.app]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1/\"\nlist = \"l\"\nmax_in_flight = {n}\n{SINK}")
    };
    for n in [0, 2_000_000] {
        let e = plan_error(d.path(), &list(n)).await;
        assert_at(&e, 5, "sources.app.max_in_flight", "out of bounds");
    }
}

#[tokio::test]
async fn nats_settings_are_checked_at_their_key() {
    let d = dir();
    let source = |extra: &str| {
        format!("[sources.app]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n{extra}\n{SINK}")
    };
    let e = plan_error(d.path(), &source("stream = \"LOGS\"\nqueue_group = \"q\"")).await;
    assert_at(&e, 5, "sources.app.queue_group", "is for core NATS");
    let e = plan_error(d.path(), &source("")).await;
    assert_at(&e, 1, "sources.app.subject", "give `stream`");
    let e = plan_error(d.path(), &source("stream = \"LOGS\"\nmax_deliver = 0")).await;
    assert_at(&e, 5, "sources.app.max_deliver", "");
    let e = plan_error(d.path(), &source("stream = \"a.b\"")).await;
    assert_at(&e, 4, "sources.app.stream", "no stream name");
    let e = plan_error(
        d.path(),
        &source("stream = \"LOGS\"\nauth = { token_env = \"T\", user = \"u\" }"),
    )
    .await;
    assert_at(&e, 5, "sources.app.auth", "give one way to log in");
    let sink = |extra: &str| {
        format!("[sources.app]\ntype = \"stdin\"\n\n[sinks.q]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\ninputs = [\"app\"]\n{extra}\n")
    };
    let e = plan_error(d.path(), &sink("subject = \"logs..{service}\"")).await;
    assert_at(&e, 8, "sinks.q.subject", "is no NATS subject");
    let e = plan_error(d.path(), &sink("subject = \"logs.{%Y}\"")).await;
    assert_at(&e, 8, "sinks.q.subject", "has no place here");
    let e = plan_error(d.path(), &sink("subject = \"logs\"\nurl2 = 1")).await;
    assert_at(&e, 9, "sinks.q.url2", "unknown field");
    let e = plan_error(
        d.path(),
        &sink("subject = \"logs\"\njetstream = false\nid_field = \"id\""),
    )
    .await;
    assert_at(&e, 10, "sinks.q.id_field", "is for JetStream");
}

/// A sink's settings compare equal whatever its inputs and where in the
/// file it is (what a reload reads to keep a sink running).
#[test]
fn same_settings_ignores_inputs_and_positions() {
    use sluice::config::PipelineConfig;
    use sluice::sink::SinkConfig;
    use std::path::Path;
    fn key(text: &str) -> SinkConfig {
        let c = PipelineConfig::parse(Path::new("p.toml"), text).unwrap();
        c.sinks[0].config.clone()
    }
    let base = "[sources.a]\ntype = \"stdin\"\n[sources.b]\ntype = \"stdin\"\n[sinks.out]\ntype = \"file\"\npath = \"x.log\"\ninputs = [\"a\"]\n";
    let moved = format!(
        "# a comment\n\n{}",
        base.replace("[\"a\"]", "[\"a\", \"b\"]")
    );
    assert!(key(base).same_settings(&key(&moved)));
    assert!(!key(base).same_settings(&key(&base.replace("x.log", "y.log"))));
}
