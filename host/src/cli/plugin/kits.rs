//! The language kits shipped inside the binary: the WIT, the Python and
//! JavaScript helpers, the TypeScript typings, the Rust SDK's sources, and
//! the project templates `sluice plugin new` writes.

use std::fmt;

use clap::ValueEnum;

/// The languages `sluice plugin new` knows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    #[value(name = "js", alias = "javascript")]
    #[serde(rename = "js", alias = "javascript")]
    Js,
    #[value(name = "ts", alias = "typescript")]
    #[serde(rename = "ts", alias = "typescript")]
    Ts,
}

impl Lang {
    /// The name in prose.
    pub fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::Ts => "TypeScript",
        }
    }

    /// The file the plugin's logic lives in.
    pub fn entry(self) -> &'static str {
        match self {
            Lang::Rust => "src/lib.rs",
            Lang::Python => "app.py",
            Lang::Js => "plugin.js",
            Lang::Ts => "plugin.ts",
        }
    }

    fn toolchain(self) -> &'static str {
        match self {
            Lang::Rust => "cargo (target wasm32-wasip2)",
            Lang::Python => "componentize-py",
            Lang::Js => "componentize-js",
            Lang::Ts => "tsc, then componentize-js",
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::Ts => "ts",
        })
    }
}

/// The contract between host and plugins.
pub const WIT: &str = include_str!("../../../../wit/plugin.wit");
/// The Python helper module.
pub const PYTHON_HELPER: &str = include_str!("../../../../plugins/kits/python/sluice.py");
/// The JavaScript helper module and its typings.
pub const JS_HELPER: &str = include_str!("../../../../plugins/kits/js/sluice.js");
pub const JS_TYPES: &str = include_str!("../../../../plugins/kits/js/sluice.d.ts");

/// The Rust SDK's sources, as `sluice-plugin/...` of a Rust project.
const SDK: [(&str, &str); 8] = [
    (
        "src/lib.rs",
        include_str!("../../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "src/event.rs",
        include_str!("../../../../plugins/sdk/src/event.rs"),
    ),
    (
        "src/level.rs",
        include_str!("../../../../plugins/sdk/src/level.rs"),
    ),
    (
        "src/cond.rs",
        include_str!("../../../../plugins/sdk/src/cond.rs"),
    ),
    (
        "src/action.rs",
        include_str!("../../../../plugins/sdk/src/action.rs"),
    ),
    (
        "src/schema.rs",
        include_str!("../../../../plugins/sdk/src/schema.rs"),
    ),
    (
        "src/cond_schema.rs",
        include_str!("../../../../plugins/sdk/src/cond_schema.rs"),
    ),
    ("wit/plugin.wit", WIT),
];
const SDK_MANIFEST: &str = include_str!("../../../../plugins/kits/rust/sdk-Cargo.toml");

/// The manifest of a project: what `sluice plugin build` reads.
pub const MANIFEST: &str = "sluice-plugin.toml";

/// The files of a new project named `name`, as (path, contents).
pub fn project(name: &str, lang: Lang) -> Vec<(String, String)> {
    let ident: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{ident}}", &ident)
            .replace("{{language}}", lang.title())
            .replace("{{entry}}", lang.entry())
            .replace("{{toolchain}}", lang.toolchain())
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
    };
    let mut files = vec![
        (
            MANIFEST.to_string(),
            format!("# Read by `sluice plugin build`.\nname = \"{name}\"\nlang = \"{lang}\"\n"),
        ),
        (
            "README.md".to_string(),
            fill(include_str!("../../../../plugins/kits/common/README.md")),
        ),
        (
            "pipeline.toml".to_string(),
            fill(include_str!(
                "../../../../plugins/kits/common/pipeline.toml"
            )),
        ),
        (
            "test/events.jsonl".to_string(),
            include_str!("../../../../plugins/kits/common/events.jsonl").to_string(),
        ),
        (
            "test/expected.jsonl".to_string(),
            include_str!("../../../../plugins/kits/common/expected.jsonl").to_string(),
        ),
        (".gitignore".to_string(), gitignore(lang).to_string()),
    ];
    match lang {
        Lang::Rust => {
            files.push((
                "Cargo.toml".into(),
                fill(include_str!("../../../../plugins/kits/rust/Cargo.toml")),
            ));
            files.push((
                "src/lib.rs".into(),
                fill(include_str!("../../../../plugins/kits/rust/lib.rs")),
            ));
            files.push(("sluice-plugin/Cargo.toml".into(), fill(SDK_MANIFEST)));
            for (path, text) in SDK {
                files.push((format!("sluice-plugin/{path}"), text.to_string()));
            }
        }
        Lang::Python => {
            files.push(("wit/plugin.wit".into(), WIT.into()));
            files.push(("sluice.py".into(), PYTHON_HELPER.into()));
            files.push((
                "app.py".into(),
                fill(include_str!("../../../../plugins/kits/python/app.py")),
            ));
        }
        Lang::Js | Lang::Ts => {
            files.push(("wit/plugin.wit".into(), WIT.into()));
            files.push(("sluice.js".into(), JS_HELPER.into()));
            files.push(("sluice.d.ts".into(), JS_TYPES.into()));
            if lang == Lang::Js {
                files.push((
                    "plugin.js".into(),
                    fill(include_str!("../../../../plugins/kits/js/plugin.js")),
                ));
            } else {
                files.push((
                    "plugin.ts".into(),
                    fill(include_str!("../../../../plugins/kits/ts/plugin.ts")),
                ));
                files.push((
                    "tsconfig.json".into(),
                    include_str!("../../../../plugins/kits/ts/tsconfig.json").into(),
                ));
            }
        }
    }
    files
}

fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "/target\n*.wasm\n",
        Lang::Python => "__pycache__/\n*.wasm\n",
        Lang::Js => "node_modules/\n*.wasm\n",
        Lang::Ts => "node_modules/\nbuild/\n*.wasm\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_project_has_its_entry_the_wit_and_no_placeholder() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::Ts] {
            let files = project("drop-debug", lang);
            let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
            assert!(paths.contains(&lang.entry()), "{lang}: {paths:?}");
            assert!(
                paths.contains(&"wit/plugin.wit")
                    || paths.contains(&"sluice-plugin/wit/plugin.wit"),
                "{lang}: {paths:?}"
            );
            for (path, text) in &files {
                assert!(!text.contains("{{"), "{lang} {path} keeps a placeholder");
            }
            let pipeline = &files.iter().find(|(p, _)| p == "pipeline.toml").unwrap().1;
            assert!(pipeline.contains("[transforms.drop_debug]"), "{pipeline}");
            assert!(
                pipeline.contains("plugin = \"drop-debug.wasm\""),
                "{pipeline}"
            );
        }
    }
}
