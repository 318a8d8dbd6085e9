//! The admin port's shadow runs (`sluice plugin shadow`):
//!
//! - `POST /shadow?transform=T[&sample=0.1][&duration=10m][&config=JSON]
//!   [&memory_mib=M][&time_budget=D]`
//!   with a component's bytes as the body, or `&plugin=NAME` for a bundled
//!   plugin: starts one beside `T`'s live plugin;
//! - `GET /shadow[?transform=T]` (and `/ui/shadow` for the live page): the
//!   running comparison of every shadow, running or ended;
//! - `POST /shadow/promote?transform=T`, `POST /shadow/stop?transform=T`.
//!
//! Each is also under `/ui/` for the live page's form.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use bytes::Bytes;
use hyper::{Response, StatusCode};

use super::{decoded, reply, Admin, Body};
use crate::topology::reload::ShadowPlugin;
use crate::topology::shadow::ShadowSpec;

type AdminState = State<Arc<Admin>>;

fn answer(result: anyhow::Result<serde_json::Value>, refused: StatusCode) -> Response<Body> {
    match result {
        Ok(v) => reply(StatusCode::OK, "application/json", format!("{v}\n")),
        Err(e) => reply(
            refused,
            "application/json",
            format!(
                "{}\n",
                serde_json::json!({"result": "failed", "error": format!("{e:#}")})
            ),
        ),
    }
}

/// What `POST /shadow` asks for, from its query.
fn spec(
    admin: &Admin,
    q: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<ShadowSpec> {
    let transform = q
        .get("transform")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("`transform` is required"))?
        .clone();
    let sample = match q.get("sample") {
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0 && *s <= 1.0)
            .ok_or_else(|| {
                anyhow::anyhow!("`sample` must be a share above 0 and at most 1, not `{s}`")
            })?,
        None => 1.0,
    };
    let duration = match q.get("duration") {
        Some(d) => Some(
            humantime::parse_duration(d)
                .map_err(|e| anyhow::anyhow!("`duration`: {e} (`10m`, `1h`)"))?,
        ),
        None => None,
    };
    let memory_mib = match q.get("memory_mib") {
        Some(m) => Some(
            m.parse::<u64>()
                .ok()
                .filter(|m| (1..=4096).contains(m))
                .ok_or_else(|| anyhow::anyhow!("`memory_mib` must be 1 to 4096, not `{m}`"))?,
        ),
        None => None,
    };
    let time_budget = match q.get("time_budget") {
        Some(t) => Some(
            humantime::parse_duration(t)
                .ok()
                .filter(|t| !t.is_zero() && *t <= std::time::Duration::from_secs(60))
                .ok_or_else(|| {
                    anyhow::anyhow!("`time_budget` must be a duration above 0 and at most 60s (`100ms`), not `{t}`")
                })?,
        ),
        None => None,
    };
    Ok(ShadowSpec {
        transform,
        sample,
        duration,
        masks: false,
        hide_values: false,
        totals: admin.metrics.shadows.clone(),
        memory_mib,
        time_budget,
    })
}

pub(super) async fn start(
    State(admin): AdminState,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response<Body> {
    let q = decoded(q.as_deref());
    let result = async {
        let spec = spec(&admin, &q)?;
        let plugin = match q.get("plugin") {
            Some(name) if body.is_empty() => ShadowPlugin::Bundled(name.clone()),
            Some(_) => anyhow::bail!("give either `plugin` (a bundled plugin) or a component as the body, not both"),
            None if body.is_empty() => anyhow::bail!(
                "no plugin: send the component (.wasm) as the body, or `plugin=NAME` for a bundled one"
            ),
            None => ShadowPlugin::Bytes(
                q.get("name").cloned().unwrap_or_else(|| "shadow.wasm".into()),
                body.to_vec(),
            ),
        };
        admin
            .reload
            .start_shadow(plugin, q.get("config").cloned(), spec)
            .await
    }
    .await;
    answer(result, StatusCode::UNPROCESSABLE_ENTITY)
}

pub(super) async fn status(State(admin): AdminState, RawQuery(q): RawQuery) -> Response<Body> {
    let q = decoded(q.as_deref());
    let result = admin
        .reload
        .shadow_status(q.get("transform").map(String::as_str))
        .await;
    answer(result, StatusCode::NOT_FOUND)
}

fn transform(q: &std::collections::BTreeMap<String, String>) -> anyhow::Result<&str> {
    q.get("transform")
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("`transform` is required"))
}

pub(super) async fn promote(State(admin): AdminState, RawQuery(q): RawQuery) -> Response<Body> {
    let q = decoded(q.as_deref());
    let result = async { admin.reload.promote_shadow(transform(&q)?).await }.await;
    answer(result, StatusCode::CONFLICT)
}

pub(super) async fn stop(State(admin): AdminState, RawQuery(q): RawQuery) -> Response<Body> {
    let q = decoded(q.as_deref());
    let result = async { admin.reload.stop_shadow(transform(&q)?).await }.await;
    answer(result, StatusCode::CONFLICT)
}

/// `sluice_shadow_events_total{transform,outcome}`: every shadow run's
/// comparisons since the pipeline started.
pub(super) fn prometheus(metrics: &crate::base::metrics::Registry, out: &mut String) {
    use std::fmt::Write as _;
    let rows = metrics.shadows.snapshot();
    if rows.is_empty() {
        return;
    }
    let name = "sluice_shadow_events_total";
    let _ = writeln!(
        out,
        "# HELP {name} Events compared by shadow runs, by transform and outcome.\n# TYPE {name} counter"
    );
    for (transform, counts) in rows {
        for (outcome, n) in crate::topology::shadow::OUTCOMES.iter().zip(counts) {
            let _ = writeln!(
                out,
                "{name}{{transform=\"{}\",outcome=\"{outcome}\"}} {n}",
                super::escape_label(&transform)
            );
        }
    }
}
