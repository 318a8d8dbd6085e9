//! The reference cannot drift: the JSON Schema and the key reference are
//! made from the config types and committed (a test says when they are
//! stale); Taplo, the TOML toolkit editors use, checks every pipeline
//! file and every example of the docs against the schema, and reports a
//! wrong key, a wrong type and a value out of bounds; every link of the
//! docs resolves.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{parse, root, sluice};

const REGENERATE: &str = "cargo run -p sluice -- schema > docs/pipeline.schema.json && cargo run -p sluice -- schema --markdown > docs/reference.md";

fn taplo() -> PathBuf {
    sluice::cli::plugin::build::tools_dir()
        .expect("a tools folder (scripts/setup-test-deps)")
        .join("taplo/node_modules/.bin/taplo")
}

/// `taplo check` of `files` against the committed schema: its output when
/// it fails.
fn taplo_check(files: &[PathBuf]) -> Result<(), String> {
    let schema = root().join("docs/pipeline.schema.json");
    let out = Command::new(taplo())
        .arg("check")
        .arg("--schema")
        .arg(format!("file://{}", schema.display()))
        .args(files)
        .env("RUST_LOG", "warn")
        .output()
        .expect("taplo (scripts/setup-test-deps installs it)");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The Markdown files a reader follows: the README, the docs and the
/// other top-level pages.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![
        root().join("README.md"),
        root().join("BENCHMARKS.md"),
        root().join("RELIABILITY.md"),
    ];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The ```toml blocks of a Markdown text, with the line each starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```toml" => current = Some((n + 2, String::new())),
            Some(_) if line.trim_start() == "```" => out.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn the_committed_schema_and_reference_are_made_from_the_code() {
    let schema = sluice::config::schema::pipeline();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/pipeline.schema.json")).unwrap(),
    )
    .unwrap();
    assert!(
        committed == schema,
        "docs/pipeline.schema.json is not what the code says: run `{REGENERATE}`"
    );
    let reference = std::fs::read_to_string(root().join("docs/reference.md")).unwrap();
    assert!(
        reference == sluice::config::schema::markdown(&schema),
        "docs/reference.md is not what the code says: run `{REGENERATE}`"
    );
    // The command prints the same.
    let out = sluice().arg("schema").output().unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, schema);
}

/// `sluice schema --plugin` prints what a component ships, and says so
/// when it ships nothing.
#[test]
fn a_plugin_ships_its_config_schema() {
    let out = sluice()
        .args(["schema", "--plugin", "mask"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mask: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(mask["properties"]["detect"]["description"].is_string());
    assert_eq!(mask["additionalProperties"], false);
    // The pipeline schema checks `config` of `plugin = "mask"` with it.
    let schema = sluice::config::schema::pipeline();
    let branches = schema["properties"]["transforms"]["additionalProperties"]["allOf"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = branches[1..]
        .iter()
        .map(|b| b["if"]["properties"]["plugin"]["const"].as_str().unwrap())
        .collect();
    let bundled: Vec<&str> = sluice::plugin::bundled::names().collect();
    assert_eq!(names, bundled);
    // A component without the section (a test plugin) is told so.
    let out = sluice()
        .args(["schema", "--plugin", crate::SAMPLE])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ships no config schema"));
}

#[test]
fn the_schema_knows_every_kind_and_key_docs() {
    use sluice::base::settings::Tagged;
    let schema = sluice::config::schema::pipeline();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    for (section, kinds) in [
        ("sources", sluice::source::SourceConfig::KINDS),
        ("sinks", sluice::sink::SinkConfig::KINDS),
    ] {
        let family = &schema["properties"][section]["additionalProperties"];
        let named: Vec<&str> = family["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(named, kinds, "{section}");
        assert_eq!(family["allOf"].as_array().unwrap().len(), kinds.len());
    }
    // Defaults, bounds and allowed values come from the types.
    let batch = &schema["$defs"]["BatchConfig"]["properties"];
    assert_eq!(batch["max_events"]["default"], 1024);
    assert_eq!(batch["max_events"]["minimum"], 1);
    assert_eq!(batch["max_events"]["maximum"], 1_000_000);
    assert_eq!(batch["max_wait"]["default"], "200ms");
    let file = schema["properties"]["sources"]["additionalProperties"]["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["if"]["properties"]["type"]["const"] == "file")
        .unwrap();
    assert_eq!(file["then"]["properties"]["rotate_wait"]["default"], "5s");
    assert!(file["then"]["properties"]["path"]["description"]
        .as_str()
        .unwrap()
        .contains("glob"));
    assert_eq!(file["then"]["additionalProperties"], false);
}

/// Every range in the schema is the one `sluice validate` holds to: the
/// largest value allowed is taken and the next one refused, by both.
#[test]
fn the_schemas_bounds_are_the_checks() {
    let schema = sluice::config::schema::pipeline();
    let dir = tempfile::tempdir().unwrap();
    let base = |extra_batch: &str, extra_transform: &str| {
        format!(
            "[batch]\n{extra_batch}\n[sources.app]\ntype = \"generate\"\ncount = 1\n\
             [transforms.keep]\nplugin = \"filter\"\ninputs = [\"app\"]\n{extra_transform}\n\
             [sinks.out]\ntype = \"stdout\"\ninputs = [\"keep\"]\n"
        )
    };
    let mut checked = 0;
    for (def, in_batch) in [("BatchConfig", true), ("TransformConfig", false)] {
        let props = schema["$defs"][def]["properties"].as_object().unwrap();
        for (key, prop) in props {
            let (Some(lo), Some(hi)) = (prop["minimum"].as_u64(), prop["maximum"].as_u64()) else {
                continue;
            };
            for (value, ok) in [(lo, true), (hi, true), (hi + 1, false)] {
                let line = format!("{key} = {value}");
                let text = if in_batch {
                    base(&line, "")
                } else {
                    base("", &line)
                };
                let result = parse(dir.path(), &text);
                assert_eq!(
                    result.is_ok(),
                    ok,
                    "{def}.{key} = {value}: the schema says {lo}-{hi}, sluice says {result:?}"
                );
                let file = dir.path().join("pipeline.toml");
                assert_eq!(
                    taplo_check(std::slice::from_ref(&file)).is_ok(),
                    ok,
                    "{def}.{key} = {value}: taplo"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} ranges checked");
}

#[test]
fn taplo_checks_every_pipeline_and_docs_example() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    // Each ```toml block of the docs as a file of its own.
    let dir = tempfile::tempdir().unwrap();
    let mut examples = 0;
    for md in markdown_files() {
        let text = std::fs::read_to_string(&md).unwrap();
        let name = md.file_stem().unwrap().to_string_lossy().to_string();
        for (line, block) in toml_blocks(&text) {
            let path = dir.path().join(format!("{name}.md-line-{line}.toml"));
            std::fs::write(&path, block).unwrap();
            files.push(path);
            examples += 1;
        }
    }
    assert!(examples >= 30, "only {examples} examples found");
    if let Err(out) = taplo_check(&files) {
        panic!("taplo refuses pipeline files or docs examples (a docs example's file is named FILE.md-line-N):\n{out}");
    }
    // And sluice reads each the same way (keys, types, bounds; the graph
    // and the plugins' configs need the whole pipeline, which the
    // pipelines' own tests run).
    // An example showing only sources gets a sink, and one showing only
    // sinks a source; variables are set to a placeholder.
    let mut refused = Vec::new();
    let creds = dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("redis-password"), "secret\n").unwrap();
    let env = |name: &str| match name {
        "CREDENTIALS_DIRECTORY" => Some(creds.display().to_string()),
        _ => Some(std::env::var(name).unwrap_or_else(|_| "example".into())),
    };
    for file in &files {
        let mut text = std::fs::read_to_string(file).unwrap();
        if !text.contains("[sources.") {
            text.push_str("\n[sources.docs_in]\ntype = \"generate\"\ncount = 1\n");
        }
        if !text.contains("[sinks.") {
            text.push_str("\n[sinks.docs_out]\ntype = \"stdout\"\ninputs = [\"docs_in\"]\n");
        }
        if let Err(e) = sluice::config::PipelineConfig::parse_with_env(file, &text, &env) {
            refused.push(e.to_string());
        }
    }
    assert!(
        refused.is_empty(),
        "sluice refuses:\n{}",
        refused.join("\n")
    );
}

#[tokio::test]
async fn taplo_reports_a_wrong_key_a_wrong_type_and_a_value_out_of_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[sources.app]\ntype = \"file\"\npath = \"app.log\"\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"app\"]\npath = \"out.log\"\n";
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ok = write("good.toml", good);
    taplo_check(&[ok]).unwrap();
    for (name, text, says) in [
        (
            "key.toml",
            good.replace(
                "path = \"out.log\"",
                "path = \"out.log\"\nrotate_sise = \"10MiB\"",
            ),
            "rotate_sise",
        ),
        (
            "type.toml",
            good.replace("path = \"app.log\"", "path = \"app.log\"\nfollow = \"yes\""),
            "\"yes\" is not of type \"boolean\"",
        ),
        (
            "bounds.toml",
            format!("[batch]\nmax_events = 0\n\n{good}"),
            "less than the minimum",
        ),
        (
            "plugin_config.toml",
            format!("{good}\n[transforms.mask]\nplugin = \"mask\"\ninputs = [\"app\"]\nconfig = {{ detekt = [\"email\"] }}\n"),
            "detekt",
        ),
        (
            "kind.toml",
            good.replace(
                "type = \"file\"\npath = \"app.log\"",
                "type = \"fiel\"\npath = \"app.log\"",
            ),
            "\"fiel\" is not one of",
        ),
    ] {
        let bad = write(name, &text);
        let out = taplo_check(&[bad]).expect_err(name);
        assert!(out.contains(says), "{name}: taplo said:\n{out}");
        // And sluice refuses it too (a plugin's config when it loads it).
        let refused = match parse(dir.path(), &text) {
            Err(_) => true,
            Ok(config) => sluice::topology::plan(config, crate::util::runtime())
                .await
                .is_err(),
        };
        assert!(refused, "{name}: sluice took it");
    }
}

/// GitHub's anchor of a heading: lower case, punctuation but `-` and `_`
/// dropped, spaces made `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (repeated ones numbered).
fn anchors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let mut name = base.clone();
        let mut n = 0;
        while out.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        out.push(name);
    }
    out
}

/// The targets of a Markdown text's inline links `[text](target)`, outside
/// code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code spans hold no links.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for md in markdown_files() {
        let text = std::fs::read_to_string(&md).unwrap();
        let here = md.parent().unwrap();
        for target in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file: PathBuf = if path.is_empty() {
                md.clone()
            } else {
                here.join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: {target}: no such file", rel(&md)));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == anchor) {
                    broken.push(format!("{}: {target}: no such heading", rel(&md)));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn the_readme_is_what_a_newcomer_reads_first() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines: the reference belongs in docs/"
    );
    for page in ["docs/reference.md", "docs/configuration.md"] {
        assert!(
            readme.contains(page.trim_start_matches("docs/")),
            "README does not point at {page}"
        );
    }
}

/// Every key in the schema has a description (its doc comment), so the
/// reference says what each key does: a key added without one fails here.
#[test]
fn every_key_is_documented() {
    let schema = sluice::config::schema::pipeline();
    let defs = schema["$defs"].as_object().unwrap();
    // Its own description, or that of the table it refers to (an
    // optional table is `anyOf: [ref, null]`).
    let described = |v: &Value| -> bool {
        let has = |v: &Value| {
            v["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty())
        };
        let by_ref = |v: &Value| {
            v["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/$defs/"))
                .and_then(|n| defs.get(n))
                .is_some_and(has)
        };
        has(v) || by_ref(v) || v["anyOf"].as_array().is_some_and(|a| a.iter().any(by_ref))
    };
    let mut missing = Vec::new();
    let mut check = |at: &str, object: &Value| {
        if let Some(props) = object["properties"].as_object() {
            for (key, v) in props {
                if !described(v) {
                    missing.push(format!("{at}.{key}"));
                }
            }
        }
        for variant in object["oneOf"].as_array().into_iter().flatten() {
            if let Some(props) = variant["properties"].as_object() {
                for (key, v) in props {
                    if key != "type" && !described(v) {
                        missing.push(format!("{at}.{key}"));
                    }
                }
            }
        }
    };
    check("(top level)", &schema);
    for section in ["sources", "sinks"] {
        for branch in schema["properties"][section]["additionalProperties"]["allOf"]
            .as_array()
            .unwrap()
        {
            let kind = branch["if"]["properties"]["type"]["const"]
                .as_str()
                .unwrap();
            check(&format!("{section} type = {kind}"), &branch["then"]);
        }
    }
    check(
        "[metrics.NAME]",
        &schema["properties"]["metrics"]["additionalProperties"],
    );
    for (name, def) in defs {
        check(name, def);
    }
    assert!(
        missing.is_empty(),
        "keys without a doc comment (the reference would say nothing of them):\n{}",
        missing.join("\n")
    );
}
