//! `GET /tap` and `/ui/tap`: live events of a component, filtered, as
//! a stream of lines.

use super::*;

/// A response body fed by a channel: the tap's stream of lines.
pub(super) struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// The parameters of a query string, decoded (losslessly: see `form`).
pub(super) fn decoded(query: Option<&str>) -> std::collections::BTreeMap<String, String> {
    crate::source::http::form::form_pairs(query.unwrap_or("")).collect()
}

/// `field=value` (or `field!=value`) over a dotted path of an event.
pub(super) struct TapFilter {
    field: String,
    value: String,
    negate: bool,
}

impl TapFilter {
    fn parse(s: &str) -> Option<TapFilter> {
        let (field, value, negate) = match s.split_once("!=") {
            Some((f, v)) => (f, v, true),
            None => {
                let (f, v) = s.split_once('=')?;
                (f, v, false)
            }
        };
        Some(TapFilter {
            field: field.trim().to_string(),
            value: value.trim().to_string(),
            negate,
        })
    }

    fn matches(&self, event: &serde_json::Value) -> bool {
        let mut v = event;
        for part in self.field.split('.') {
            match v.get(part) {
                Some(x) => v = x,
                None => return self.negate,
            }
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (text == self.value) != self.negate
    }
}

/// Stream a component's output as JSON lines until `limit` events or the
/// client goes away.
pub(super) fn tap(
    admin: &Arc<Admin>,
    q: &std::collections::BTreeMap<String, String>,
) -> Response<Body> {
    let Some(component) = q.get("component") else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "give ?component=NAME\n".into(),
        );
    };
    let Some(metrics) = admin.metrics.find(component) else {
        let known: Vec<String> = admin
            .metrics
            .snapshot()
            .into_iter()
            .map(|s| s.name)
            .collect();
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no component `{component}` (known: {})\n", known.join(", ")),
        );
    };
    let filter = match q.get("filter").filter(|f| !f.is_empty()) {
        Some(f) => match TapFilter::parse(f) {
            Some(t) => Some(t),
            None => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("bad filter `{f}`: write field=value\n"),
                )
            }
        },
        None => None,
    };
    let limit: Option<u64> = q.get("limit").and_then(|l| l.parse().ok());
    let taps = admin.metrics.taps.clone();
    if taps.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_TAPS {
        taps.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{MAX_TAPS} taps are open already; close one\n"),
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        /// Gives the tap's place back however the task ends.
        struct Open(Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _open = Open(taps);
        let mut guard = metrics.tap.subscribe();
        let mut sent = 0u64;
        loop {
            // A client that went away ends the tap at once, even when the
            // filter lets nothing through (nothing would be sent to notice).
            let batch = tokio::select! {
                _ = tx.closed() => return,
                r = guard.rx.recv() => match r {
                    Ok(b) => b,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(batches = n, "tap fell behind; copies dropped");
                        continue;
                    }
                    Err(_) => return,
                },
            };
            let mut lines = Vec::new();
            for event in batch.iter() {
                if let Some(f) = &filter {
                    match serde_json::from_slice::<serde_json::Value>(event) {
                        Ok(v) if f.matches(&v) => {}
                        _ => continue,
                    }
                }
                lines.extend_from_slice(event);
                lines.push(b'\n');
                sent += 1;
                if limit.is_some_and(|l| sent >= l) {
                    break;
                }
            }
            if crate::base::secrets::any() {
                let text = String::from_utf8_lossy(&lines);
                if let std::borrow::Cow::Owned(redacted) = crate::base::secrets::redact(&text) {
                    lines = redacted.into_bytes();
                }
            }
            if !lines.is_empty() && tx.send(Bytes::from(lines)).await.is_err() {
                return;
            }
            if limit.is_some_and(|l| sent >= l) {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(ChannelBody { rx }.boxed())
        .expect("static response parts are valid")
}
