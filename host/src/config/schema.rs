//! `sluice schema`: the JSON Schema (draft 2020-12) of a pipeline file,
//! made from the config types themselves (their doc comments, defaults,
//! allowed values and bounds), so that it cannot drift from what
//! `sluice validate` accepts; and the Markdown reference made from it.

use schemars::generate::SchemaSettings;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use crate::base::metrics::FieldMetricsConfig;
use crate::base::settings::{schema::Duration, BatchConfig, BufferConfig};
use crate::sink::SinkConfig;
use crate::source::SourceConfig;

use super::{AdminConfig, ReloadConfig, TestConfig, TransformConfig};

/// Where the schema says it lives (its `$id`).
pub const SCHEMA_ID: &str = "https://sluice.dev/schema/pipeline.json";

/// The keys every kind of a family takes besides its own: sources, then
/// sinks (the schema adds them to each kind; the reference names them
/// once).
const SHARED: [(&str, &[&str]); 2] = [("sources", &["metrics"]), ("sinks", &["metrics", "buffer"])];

/// The schema of a shared key.
fn shared_schema(generator: &mut SchemaGenerator, key: &str) -> Schema {
    match key {
        "metrics" => generator.subschema_for::<FieldMetricsConfig>(),
        "buffer" => generator.subschema_for::<BufferConfig>(),
        _ => Schema::default(),
    }
}

/// The shared keys of `section` with their schemas.
fn shared(generator: &mut SchemaGenerator, section: &str) -> Vec<(&'static str, Schema)> {
    SHARED
        .iter()
        .filter(|(s, _)| *s == section)
        .flat_map(|(_, keys)| keys.iter())
        .map(|key| (*key, shared_schema(generator, key)))
        .collect()
}

/// The schema of a pipeline file, as JSON.
pub fn pipeline() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    // (Both lists first: the order of `$defs` follows first use.)
    let source_keys = shared(&mut generator, "sources");
    let sink_keys = shared(&mut generator, "sinks");
    let sources = family(
        &mut generator,
        SourceConfig::kind_schemas,
        "A source: where events come from, chosen by `type`.",
        &source_keys,
    );
    let sinks = family(
        &mut generator,
        SinkConfig::kind_schemas,
        "A sink: where events go, chosen by `type`.",
        &sink_keys,
    );
    let root = json_schema!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "sluice pipeline",
        "description": "A sluice pipeline file: sources, transforms (wasm plugins) and sinks.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "batch": generator.subschema_for::<BatchConfig>(),
            "admin": generator.subschema_for::<AdminConfig>(),
            "reload": generator.subschema_for::<ReloadConfig>(),
            "shutdown_timeout": with_doc(
                generator.subschema_for::<Duration>(),
                "How long a stop may take to drain what is in flight; past it the process exits and what is undelivered stays unacknowledged, so the sources read it again next time.",
                Some(Value::from("30s")),
            ),
            "tests": {
                "description": "`[[tests]]`: pipeline unit tests, run by `sluice test`.",
                "type": "array",
                "items": generator.subschema_for::<TestConfig>()
            },
            "sources": {
                "description": "`[sources.NAME]`: where events come from.",
                "type": "object",
                "additionalProperties": sources
            },
            "transforms": {
                "description": "`[transforms.NAME]`: a wasm plugin over the events of its inputs.",
                "type": "object",
                "additionalProperties": transform(&mut generator)
            },
            "sinks": {
                "description": "`[sinks.NAME]`: where events go.",
                "type": "object",
                "additionalProperties": sinks
            },
            "metrics": {
                "description": "`[metrics.NAME]`: a metric declared in a table of its own, `type` its kind (counter, gauge, histogram); the same as a `metric` sink named NAME.",
                "type": "object",
                "additionalProperties": declared_metric(&mut generator)
            }
        }
    });
    let mut root = root.to_value();
    let defs: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    if let Some(obj) = root.as_object_mut() {
        obj.insert("$defs".into(), Value::Object(defs));
    }
    root
}

/// A schema with a description (and default) of its own, beside a `$ref`.
fn with_doc(schema: Schema, doc: &str, default: Option<Value>) -> Value {
    let mut v = schema.to_value();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("description".into(), doc.into());
        if let Some(d) = default {
            obj.insert("default".into(), d);
        }
    }
    v
}

/// A family of kinds (`[sources.NAME]`, `[sinks.NAME]`): `type` names one,
/// and the table is then checked against that kind's keys alone (an
/// `if`/`then` per kind, so an editor reports the chosen kind's errors,
/// not every kind's), plus the keys every member has (`shared`).
fn family(
    generator: &mut SchemaGenerator,
    kinds: fn(&mut SchemaGenerator) -> Vec<(&'static str, Schema)>,
    doc: &str,
    shared: &[(&str, Schema)],
) -> Value {
    let kinds = kinds(generator);
    let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    let branches: Vec<Value> = kinds
        .into_iter()
        .map(|(kind, schema)| {
            let mut then = schema.to_value();
            if let Some(props) = then.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert(
                    "type".into(),
                    serde_json::json!({ "const": kind, "description": format!("The kind: `{kind}`.") }),
                );
                for (key, s) in shared {
                    props.insert((*key).into(), s.clone().to_value());
                }
            }
            serde_json::json!({
                "if": { "properties": { "type": { "const": kind } }, "required": ["type"] },
                "then": then
            })
        })
        .collect();
    serde_json::json!({
        "description": doc,
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": { "description": "The kind.", "enum": names }
        },
        "allOf": branches
    })
}

/// `[transforms.NAME]`: its keys, and for a bundled plugin its `config`
/// checked against the schema the plugin ships in its component
/// (`sluice_plugin::config_schema!`).
fn transform(generator: &mut SchemaGenerator) -> Value {
    let branches = bundled_plugin_configs().into_iter().map(|(name, config)| {
        serde_json::json!({
            "if": { "properties": { "plugin": { "const": name } }, "required": ["plugin"] },
            "then": { "properties": { "config": config } }
        })
    });
    // The type's own `$ref` as one member of the `allOf` (validators of
    // older drafts, Taplo's among them, ignore what sits beside a `$ref`).
    let mut all = vec![generator.subschema_for::<TransformConfig>().to_value()];
    all.extend(branches);
    serde_json::json!({ "allOf": all })
}

/// The config schemas the bundled plugins ship, by name.
fn bundled_plugin_configs() -> Vec<(&'static str, Value)> {
    crate::plugin::bundled::names()
        .filter_map(|name| {
            let wasm = crate::plugin::bundled::get(name)?;
            Some((name, crate::plugin::sections::config_schema(wasm)?))
        })
        .collect()
}

/// `[metrics.NAME]`: a `metric` sink whose `type` is the metric's kind.
fn declared_metric(generator: &mut SchemaGenerator) -> Value {
    let mut v = crate::sink::metric::MetricConfig::json_schema(generator).to_value();
    if let Some(props) = v.get_mut("properties").and_then(Value::as_object_mut) {
        let kind = props.remove("metric");
        props.remove("type");
        if let Some(kind) = kind {
            props.insert("type".into(), kind);
        }
    }
    if let Some(req) = v.get_mut("required").and_then(Value::as_array_mut) {
        req.retain(|r| r != "type");
        for r in req.iter_mut() {
            if r == "metric" {
                *r = "type".into();
            }
        }
    }
    v
}

/// The reference of every key of a pipeline file, as Markdown, made from
/// [`pipeline`]'s schema (docs/reference.md is this; a test fails when
/// they differ).
pub fn markdown(schema: &Value) -> String {
    let empty = Map::new();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = String::from(
        "# Pipeline file reference\n\n\
         <!-- Made by `sluice schema --markdown` from the config types; do not edit by hand:\n     \
         run `cargo run -p sluice -- schema --markdown > docs/reference.md`. -->\n\n\
         Every key of a pipeline file, from the same types `sluice validate` reads\n\
         (so this page cannot drift from what sluice accepts). Editors can check\n\
         pipeline files against the JSON Schema that `sluice schema` prints: see\n\
         [Editor support](configuration.md#editor-support).\n\n\
         Durations are written `\"200ms\"`, `\"5s\"`, `\"2m\"` (or a number of\n\
         milliseconds); sizes `\"512KiB\"`, `\"10MiB\"` (or a number of bytes).\n\n",
    );
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    out.push_str("## Top level\n\n");
    table(
        &mut out,
        props,
        &[],
        defs,
        &["sources", "transforms", "sinks", "metrics"],
    );
    for (section, title) in [("sources", "Sources"), ("sinks", "Sinks")] {
        family_md(&mut out, props.get(section), section, title, defs);
    }
    out.push_str("\n## Transforms\n\n");
    if let Some(t) = props
        .get("transforms")
        .and_then(|s| s.get("additionalProperties"))
    {
        transforms_md(&mut out, t, defs);
    }
    out.push_str("\n## Declared metrics\n\n");
    if let Some(m) = props.get("metrics") {
        doc(&mut out, m);
        if let Some(m) = m.get("additionalProperties") {
            keys(&mut out, m, defs, &[]);
        }
    }
    out.push_str("\n## Tables\n\nThe tables and values that keys above refer to.\n");
    for (name, def) in defs {
        out.push_str(&format!("\n### {name}\n\n"));
        def_md(&mut out, def, defs);
    }
    out
}

/// A schema's description, as a paragraph, if it has one.
fn doc(out: &mut String, schema: &Value) {
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        out.push_str(&paragraph(d));
        out.push_str("\n\n");
    }
}

/// The table of an object schema's keys (but `skip`).
fn keys(out: &mut String, schema: &Value, defs: &Map<String, Value>, skip: &[&str]) {
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    table(out, props, &strings(schema.get("required")), defs, skip);
}

/// The keys every kind of `section` shares.
fn shared_keys(section: &str) -> Vec<&'static str> {
    SHARED
        .iter()
        .filter(|(s, _)| *s == section)
        .flat_map(|(_, keys)| keys.iter().copied())
        .collect()
}

/// `## Sources` or `## Sinks`: a table per kind.
fn family_md(
    out: &mut String,
    family: Option<&Value>,
    section: &str,
    title: &str,
    defs: &Map<String, Value>,
) {
    out.push_str(&format!("\n## {title}\n\n"));
    let family = family.and_then(|s| s.get("additionalProperties"));
    if let Some(d) = family
        .and_then(|s| s.get("description"))
        .and_then(Value::as_str)
    {
        out.push_str(&format!(
            "{d} Every kind also takes the keys its family shares ({}).\n",
            shared_keys(section)
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut skip = vec!["type"];
    skip.extend(shared_keys(section));
    let branches = family
        .and_then(|s| s.get("allOf"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for branch in branches {
        let kind = branch
            .pointer("/if/properties/type/const")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let then = branch.get("then").cloned().unwrap_or_default();
        out.push_str(&format!(
            "\n### `{kind}` {}\n\n",
            section.trim_end_matches('s')
        ));
        doc(out, &then);
        keys(out, &then, defs, &skip);
    }
}

/// `## Transforms`: the transform's keys (a `$ref`, the first of its
/// `allOf`), then each bundled plugin's `config` keys.
fn transforms_md(out: &mut String, t: &Value, defs: &Map<String, Value>) {
    let all = t
        .get("allOf")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let own = all.first().cloned().unwrap_or_default();
    let own = resolve(&own, defs);
    doc(out, own);
    keys(out, own, defs, &[]);
    out.push_str(
        "\nThe bundled plugins' `config` keys, from the schema each ships in its component:\n",
    );
    for branch in all.iter().skip(1) {
        let name = branch
            .pointer("/if/properties/plugin/const")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let config = branch
            .pointer("/then/properties/config")
            .cloned()
            .unwrap_or_default();
        out.push_str(&format!("\n### `plugin = \"{name}\"`\n\n"));
        keys(out, &config, defs, &[]);
    }
}

/// One of the tables keys refer to: its keys, or for a tagged table each
/// variant's keys, or the values it takes.
fn def_md(out: &mut String, def: &Value, defs: &Map<String, Value>) {
    doc(out, def);
    if def.get("properties").is_some() {
        return keys(out, def, defs, &[]);
    }
    let variants = def
        .get("oneOf")
        .or_else(|| def.get("anyOf"))
        .and_then(Value::as_array);
    match variants {
        Some(vs) if vs.iter().any(|v| v.get("properties").is_some()) => {
            for v in vs {
                let tag = v
                    .pointer("/properties/type/const")
                    .or_else(|| v.pointer("/properties/type/enum/0"))
                    .and_then(Value::as_str);
                if let Some(tag) = tag {
                    out.push_str(&format!("With `type = \"{tag}\"`:\n\n"));
                }
                doc(out, v);
                if v.get("properties").is_some() {
                    keys(out, v, defs, &[]);
                    out.push('\n');
                }
            }
        }
        _ => out.push_str(&format!("One of: {}.\n", type_of(def))),
    }
}

/// A schema, with a `$ref` to one of `defs` followed.
fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|n| defs.get(n))
            .unwrap_or(schema),
        None => schema,
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// A doc comment on one line of a table cell (`|` escaped).
fn cell(text: &str) -> String {
    paragraph(text).replace('\n', " ").replace('|', "\\|")
}

/// A doc comment as Markdown: its lines joined into paragraphs.
fn paragraph(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// One row per key: its name, type, default and description.
fn table(
    out: &mut String,
    props: &Map<String, Value>,
    required: &[String],
    defs: &Map<String, Value>,
    skip: &[&str],
) {
    out.push_str("| key | type | default | description |\n| --- | --- | --- | --- |\n");
    for (key, schema) in props {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let default = match schema.get("default") {
            Some(Value::Null) | None if !required.contains(key) => String::new(),
            Some(d) => format!("`{}`", toml_of(d)),
            None if required.contains(key) => "required".to_string(),
            None => String::new(),
        };
        let doc = schema
            .get("description")
            .or_else(|| resolve(schema, defs).get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{key}` | {} | {default} | {} |\n",
            type_of(schema).replace('|', "\\|"),
            cell(doc)
        ));
    }
}

/// A JSON value as it is written in TOML (for defaults).
fn toml_of(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(toml_of).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{ {} }}",
            o.iter()
                .map(|(k, v)| format!("{k} = {}", toml_of(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A short name of a schema's type: `integer (1-100)`, `"a" or "b"`,
/// `array of string`, `[TlsConfig](#tlsconfig)`.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").unwrap_or(r);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(c) = schema.get("const") {
        return format!("`{c}`");
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(" or ");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(vs) = schema.get(key).and_then(Value::as_array) {
            let mut names: Vec<String> = Vec::new();
            for v in vs {
                if v.get("type") == Some(&Value::from("null")) {
                    continue;
                }
                let n = type_of(v);
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            return names.join(" or ");
        }
    }
    let bounds = match (
        schema.get("minimum").and_then(Value::as_f64),
        schema.get("maximum").and_then(Value::as_f64),
    ) {
        (Some(lo), Some(hi)) if lo != 0.0 || hi < 1e15 => format!(" ({lo}-{hi})"),
        (Some(lo), None) if lo != 0.0 => format!(" (at least {lo})"),
        (None, Some(hi)) => format!(" (at most {hi})"),
        _ => String::new(),
    };
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_string(),
    };
    match ty.as_str() {
        "array" => format!(
            "array of {}",
            schema.get("items").map_or("any".to_string(), type_of)
        ),
        "object" => match schema.get("additionalProperties") {
            Some(v @ Value::Object(_)) => format!("table of {}", type_of(v)),
            _ => "table".to_string(),
        },
        _ => format!("{ty}{bounds}"),
    }
}
