//! `sluice plugin shadow`: start, watch, promote and stop a shadow run
//! through a running pipeline's admin port (with its token).

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;

use super::ops::{admin_address, encode, send, AdminPort};

#[derive(Debug, clap::Args)]
pub struct ShadowArgs {
    /// The new version: a component (.wasm) or a bundled plugin's name.
    /// Or `status` (the running comparison), `promote` (the shadow becomes
    /// the live plugin, by the lossless hot swap) or `stop` (discard it).
    pub what: String,
    /// The transform to shadow (required but for `status`).
    #[arg(long)]
    pub transform: Option<String>,
    /// The running pipeline's file (for its admin address and token).
    #[arg(long, default_value = "pipeline.toml")]
    pub pipeline: PathBuf,
    /// The shadow's config table, as JSON (default: the transform's).
    #[arg(long)]
    pub config: Option<String>,
    /// Share of batches compared (0 < share <= 1).
    #[arg(long, default_value_t = 1.0)]
    pub sample: f64,
    /// End the shadow after this long (`10m`, `1h`; default: until stopped).
    #[arg(long)]
    pub duration: Option<String>,
    /// The shadow's memory limit (default: the transform's `memory_mib`).
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// The shadow's time budget per call (default: the transform's
    /// `time_budget`).
    #[arg(long)]
    pub time_budget: Option<String>,
    /// Print the admin port's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

pub async fn main(args: ShadowArgs) -> anyhow::Result<()> {
    let port = admin_address(&args.pipeline)?;
    let transform = args.transform.as_deref();
    let need = || {
        transform.with_context(|| format!("`sluice plugin shadow {}` needs --transform", args.what))
    };
    let answer = match args.what.as_str() {
        "status" => {
            let mut path = "/shadow".to_string();
            if let Some(t) = transform {
                path.push_str(&format!("?transform={}", encode(t)));
            }
            call(&port, hyper::Method::GET, &path, Bytes::new()).await?
        }
        "promote" | "stop" => {
            let path = format!("/shadow/{}?transform={}", args.what, encode(need()?));
            call(&port, hyper::Method::POST, &path, Bytes::new()).await?
        }
        plugin => {
            let mut path = format!(
                "/shadow?transform={}&sample={}",
                encode(need()?),
                args.sample
            );
            if let Some(d) = &args.duration {
                path.push_str(&format!("&duration={}", encode(d)));
            }
            if let Some(c) = &args.config {
                path.push_str(&format!("&config={}", encode(c)));
            }
            if let Some(m) = args.memory_mib {
                path.push_str(&format!("&memory_mib={m}"));
            }
            if let Some(t) = &args.time_budget {
                path.push_str(&format!("&time_budget={}", encode(t)));
            }
            let file = std::path::Path::new(plugin);
            let body = if crate::plugin::loader::is_plugin_file(plugin) || file.is_file() {
                let bytes =
                    std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                let name = file
                    .file_name()
                    .map_or("shadow.wasm".into(), |n| n.to_string_lossy().into_owned());
                path.push_str(&format!("&name={}", encode(&name)));
                Bytes::from(bytes)
            } else {
                path.push_str(&format!("&plugin={}", encode(plugin)));
                Bytes::new()
            };
            call(&port, hyper::Method::POST, &path, body).await?
        }
    };
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    match answer.get("shadows").and_then(|s| s.as_array()) {
        Some(all) if all.is_empty() => println!("no shadow run has started"),
        Some(all) => all.iter().for_each(|s| print!("{}", summary(s))),
        None => print!("{}", summary(&answer)),
    }
    Ok(())
}

async fn call(
    port: &AdminPort,
    method: hyper::Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<serde_json::Value> {
    let resp = send(port, method, path, body).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(
        |_| serde_json::json!({"error": String::from_utf8_lossy(&body).trim().to_string()}),
    );
    if !status.is_success() {
        anyhow::bail!(
            "the admin port refused ({status}): {}",
            v.get("error").and_then(|e| e.as_str()).unwrap_or("")
        );
    }
    Ok(v)
}

/// One shadow run as text: state, counts per outcome, costs, samples.
pub fn summary(s: &serde_json::Value) -> String {
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let state = match s["ended"].as_str() {
        Some(why) => format!("ended ({why})"),
        None => "running".into(),
    };
    let mut out = format!(
        "shadow of `{}`: {} {} ({}), sample {}, {}\n",
        s["transform"].as_str().unwrap_or("?"),
        s["plugin"].as_str().unwrap_or("?"),
        s["version"].as_str().unwrap_or(""),
        state,
        s["sample"],
        format_args!("{} s", n("seconds")),
    );
    out.push_str(&format!(
        "  compared {} events in {} batches; skipped {} batches ({} events)\n",
        n("events"),
        n("batches"),
        n("skipped_batches"),
        n("skipped_events")
    ));
    for k in crate::topology::shadow::OUTCOMES {
        out.push_str(&format!(
            "  {k:<16} {}\n",
            s["outcomes"][k].as_u64().unwrap_or(0)
        ));
    }
    let ns = |k: &str| s[k].as_u64().map_or("-".into(), |v| format!("{v} ns"));
    out.push_str(&format!(
        "  per event: live {}, shadow {}\n",
        ns("live_ns_per_event"),
        ns("shadow_ns_per_event")
    ));
    if let Some(samples) = s["samples"].as_array().filter(|a| !a.is_empty()) {
        out.push_str("  differences (newest first):\n");
        for d in samples.iter().take(5) {
            out.push_str(&format!(
                "    {}: live {}, shadow {}\n",
                d["outcome"].as_str().unwrap_or("?"),
                d["live"],
                d["shadow"]
            ));
            for f in d["fields"].as_array().into_iter().flatten().take(5) {
                out.push_str(&format!(
                    "      {}: {} -> {}\n",
                    f["path"].as_str().unwrap_or("?"),
                    f["live"],
                    f["shadow"]
                ));
            }
        }
    }
    out
}
