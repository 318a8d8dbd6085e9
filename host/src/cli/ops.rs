//! `sluice tap`, `sluice top`: clients of a running pipeline's admin port.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::config::PipelineConfig;

/// Where a pipeline file's admin port is, and the token it wants (from
/// the variable `auth_token_env` names, in this process's environment).
pub struct AdminPort {
    pub address: String,
    pub token: Option<String>,
}

/// The admin port of a pipeline file.
pub fn admin_address(pipeline: &Path) -> anyhow::Result<AdminPort> {
    let config = PipelineConfig::load(pipeline)?;
    let admin = config.admin.with_context(|| {
        format!(
            "{} has no [admin] section: add `[admin] address = \"127.0.0.1:9598\"` and restart the pipeline",
            pipeline.display()
        )
    })?;
    Ok(AdminPort {
        token: admin.token()?,
        address: admin.address,
    })
}

/// Send a GET to the admin port; returns the response.
async fn get(
    port: &AdminPort,
    path: &str,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    send(port, hyper::Method::GET, path, Bytes::new()).await
}

/// Send a request to the admin port; returns the response.
pub async fn send(
    port: &AdminPort,
    method: hyper::Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let address = &port.address;
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| {
            format!("cannot reach the admin port at {address}: is the pipeline running?")
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // Bytes of a component, or nothing (a POST's body is always one or
    // the other here); the admin port refuses other types on a POST.
    let content_type = if body.is_empty() {
        "application/json"
    } else {
        "application/wasm"
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", address)
        .header("content-type", content_type);
    if let Some(token) = &port.token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(http_body_util::Full::new(body))?;
    Ok(sender.send_request(req).await?)
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Print the events leaving a component, live.
pub async fn tap(
    pipeline: &Path,
    component: &str,
    filter: Option<&str>,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let address = admin_address(pipeline)?;
    let mut path = format!("/tap?component={}", encode(component));
    if let Some(f) = filter {
        path.push_str(&format!("&filter={}", encode(f)));
    }
    if let Some(l) = limit {
        path.push_str(&format!("&limit={l}"));
    }
    let mut resp = get(&address, &path).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::bail!(
            "tap refused ({status}): {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let mut stdout = std::io::stdout();
    while let Some(frame) = resp.body_mut().frame().await {
        if let Ok(data) = frame?.into_data() {
            stdout.write_all(&data)?;
            stdout.flush()?;
        }
    }
    Ok(())
}

async fn stats(port: &AdminPort) -> anyhow::Result<serde_json::Value> {
    let resp = get(port, "/stats").await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "the admin port answered {status}: {}",
        String::from_utf8_lossy(&body).trim()
    );
    Ok(serde_json::from_slice(&body)?)
}

/// Show per-component rates, refreshed every `interval`.
pub async fn top(
    pipeline: &Path,
    interval: Duration,
    iterations: Option<u64>,
) -> anyhow::Result<()> {
    let address = admin_address(pipeline)?;
    let mut last = stats(&address).await?;
    let mut n = 0;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        tokio::time::sleep(interval).await;
        let now = stats(&address).await?;
        let secs = interval.as_secs_f64();
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&top_table(&now, &last, secs));
        print!("{out}");
        std::io::stdout().flush()?;
        last = now;
        n += 1;
        if iterations.is_some_and(|i| n >= i) {
            return Ok(());
        }
    }
}

/// One screen of `sluice top`: per component, the rates between two
/// `/stats` answers `secs` apart, in columns that line up.
fn top_table(now: &serde_json::Value, last: &serde_json::Value, secs: f64) -> String {
    let empty = vec![];
    let before = last["components"].as_array().unwrap_or(&empty);
    let rows = now["components"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or("?");
            let prev = before.iter().find(|p| p["name"] == c["name"]);
            let rate = |field: &str| {
                let a = c[field].as_u64().unwrap_or(0);
                let b = prev.and_then(|p| p[field].as_u64()).unwrap_or(0);
                format!("{:.0}", a.saturating_sub(b) as f64 / secs)
            };
            let count = |field: &str| c[field].as_u64().unwrap_or(0).to_string();
            let queue = now["queues"][name]
                .as_u64()
                .map_or("-".to_string(), |q| q.to_string());
            let status = c["down"]
                .as_str()
                .map_or("ok".to_string(), |d| format!("DOWN: {d}"));
            vec![
                c["kind"].as_str().unwrap_or("?").to_string(),
                name.to_string(),
                rate("events_in"),
                rate("events_out"),
                count("dropped"),
                count("failed"),
                queue,
                status,
            ]
        });
    crate::base::metrics::table(
        &[
            "kind",
            "component",
            "in/s",
            "out/s",
            "dropped",
            "failed",
            "queue",
        ],
        2,
        rows,
    )
    .lines()
    .enumerate()
    .map(|(i, l)| {
        if i == 0 {
            format!("{l}  status\n")
        } else {
            format!("{l}\n")
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_columns_line_up() {
        let last = serde_json::json!({"components": [
            {"name": "gen", "kind": "source", "events_in": 0, "events_out": 0, "dropped": 0, "failed": 0},
        ]});
        let now = serde_json::json!({"components": [
            {"name": "gen", "kind": "source", "events_in": 1000, "events_out": 1000, "dropped": 0, "failed": 0},
            {"name": "a-rather-long-transform-name", "kind": "transform", "events_in": 5, "events_out": 5, "dropped": 12345, "failed": 1, "down": "plugin restarting"},
        ], "queues": {"a-rather-long-transform-name": 3}});
        let t = top_table(&now, &last, 1.0);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        // The `queue` column ends at the same place on every line.
        let queue_end = |l: &str| {
            l.find("  status")
                .or_else(|| l.find("  ok"))
                .or_else(|| l.find("  DOWN"))
        };
        let ends: Vec<_> = lines.iter().map(|l| queue_end(l)).collect();
        assert!(ends.iter().all(|e| e.is_some() && *e == ends[0]), "{t}");
        assert!(lines[1].contains(" 1000 "), "{t}");
        assert!(lines[2].ends_with("DOWN: plugin restarting"), "{t}");
    }
}
