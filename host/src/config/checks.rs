//! What a parsed pipeline is checked for before anything is built: the
//! bounds of every setting, names (reserved, duplicated, dangling
//! inputs), listeners that would share a port, declared metrics' names.
//! Each error names the key's line.

use super::*;

impl PipelineConfig {
    /// No two listeners (the admin port, HTTP sources) on one address: the
    /// second would fail to start only once the pipeline runs.
    pub(super) fn check_listeners(&self) -> Result<(), ConfigError> {
        let mut listeners: Vec<(String, &str)> = Vec::new();
        if let Some(a) = &self.admin {
            listeners.push(("admin.address".into(), &a.address));
        }
        for s in &self.sources {
            for (key, a) in s.config.kind().listens_on() {
                listeners.push((format!("sources.{}.{key}", s.name), a));
            }
        }
        let resolve = |a: &str| -> Vec<std::net::SocketAddr> {
            std::net::ToSocketAddrs::to_socket_addrs(a)
                .map(|it| it.filter(|s| s.port() != 0).collect())
                .unwrap_or_default()
        };
        let clash = |a: &std::net::SocketAddr, b: &std::net::SocketAddr| {
            a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        };
        for (i, (key, address)) in listeners.iter().enumerate() {
            let mine = resolve(address);
            for (other_key, other) in &listeners[..i] {
                let theirs = resolve(other);
                if mine.iter().any(|a| theirs.iter().any(|b| clash(a, b))) {
                    return Err(self.key_error(
                        key,
                        format!("`{address}` is where {other_key} (`{other}`) listens already; give each listener its own address"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every size, count and duration of the pipeline's own settings and
    /// of its transforms within bounds (the kinds check theirs in `build`).
    pub(super) fn check_bounds(&self) -> Result<(), ConfigError> {
        let check =
            |key: String, r: Result<(), BuildError>| r.map_err(|e| self.key_error(&key, e.message));
        let by_fields = self
            .sources
            .iter()
            .map(|c| ("sources", &c.name, &c.metrics))
            .chain(
                self.transforms
                    .iter()
                    .map(|c| ("transforms", &c.name, &c.metrics)),
            )
            .chain(self.sinks.iter().map(|c| ("sinks", &c.name, &c.metrics)));
        for (section, name, m) in by_fields {
            if let Some(m) = m {
                let key = |k: &str| format!("{section}.{name}.metrics.{k}");
                m.check().map_err(|e| {
                    let k = if e.starts_with("max_series") {
                        "max_series"
                    } else {
                        "by"
                    };
                    self.locator.error(
                        self.span_of(&key(k)).or(self.span_of(&key("by"))),
                        key(k),
                        e,
                    )
                })?;
            }
        }
        let b = &self.batch;
        check(
            "batch.max_events".into(),
            bounded("", b.max_events, 1, MAX_BATCH_EVENTS),
        )?;
        check("batch.buffer".into(), bounded("", b.buffer, 1, 65_536))?;
        check(
            "batch.max_wait".into(),
            bounded("", b.max_wait, Duration::ZERO, HOUR),
        )?;
        check(
            "shutdown_timeout".into(),
            bounded("", self.shutdown_timeout, Duration::ZERO, HOUR),
        )?;
        check(
            "reload.poll_interval".into(),
            bounded(
                "",
                self.reload.poll_interval,
                Duration::from_millis(10),
                HOUR,
            ),
        )?;
        for s in &self.sources {
            let Some(o) = s.config.kind().batch() else {
                continue;
            };
            let prefix = format!("sources.{}.batch", s.name);
            if let Some(n) = o.max_events {
                check(
                    format!("{prefix}.max_events"),
                    bounded("", n, 1, MAX_BATCH_EVENTS),
                )?;
            }
            if let Some(w) = o.max_wait {
                check(
                    format!("{prefix}.max_wait"),
                    bounded("", w, Duration::ZERO, HOUR),
                )?;
            }
        }
        for t in &self.transforms {
            let c = &t.config;
            let prefix = format!("transforms.{}", t.name);
            check(
                format!("{prefix}.memory_mib"),
                bounded("", c.memory_mib, 1, 4096),
            )?;
            // The plugin runs on a thread with a 2 MiB stack: more wasm
            // stack than that would overflow the thread, not the plugin.
            check(
                format!("{prefix}.stack_kib"),
                bounded("", c.stack_kib, 64, 1024),
            )?;
            check(
                format!("{prefix}.instances"),
                bounded("", c.instances, 1, 1000),
            )?;
            check(format!("{prefix}.tables"), bounded("", c.tables, 1, 10_000))?;
            if let Some(n) = c.concurrency {
                check(format!("{prefix}.concurrency"), bounded("", n, 1, 64))?;
                if n > 1 && c.is_stateful() {
                    check(
                        format!("{prefix}.concurrency"),
                        Err(crate::base::settings::BuildError::key(
                            "",
                            format!(
                                "`{}` keeps per-key state across events: it runs as one instance (remove `concurrency`)",
                                c.plugin.get_ref()
                            ),
                        )),
                    )?;
                }
            }
            check(
                format!("{prefix}.memories"),
                bounded("", c.memories, 1, 100),
            )?;
            check(
                format!("{prefix}.time_budget"),
                bounded(
                    "",
                    c.time_budget,
                    Duration::from_millis(1),
                    Duration::from_secs(60),
                ),
            )?;
        }
        Ok(())
    }

    pub(super) fn check_names(&self) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let all = self
            .sources
            .iter()
            .map(|s| ("sources", &s.name, &s.span))
            .chain(
                self.transforms
                    .iter()
                    .map(|t| ("transforms", &t.name, &t.span)),
            )
            .chain(
                self.sinks
                    .iter()
                    .map(|s| (self.sink_section(&s.name), &s.name, &s.span)),
            );
        for (kind, name, span) in all {
            let key = format!("{kind}.{name}");
            if RESERVED.contains(&name.as_str()) || name.contains('.') || name.is_empty() {
                return Err(self.locator.error(
                    Some(span.clone()),
                    key,
                    "this name is reserved or contains a dot; pick another",
                ));
            }
            if let Some(other) = seen.insert(name, kind) {
                return Err(self.locator.error(
                    Some(span.clone()),
                    key,
                    format!(
                        "the name `{name}` is already used by {other}.{name}; names must be unique"
                    ),
                ));
            }
        }
        if self.sources.is_empty() {
            return Err(self.locator.error(
                None,
                "sources",
                "a pipeline needs at least one source",
            ));
        }
        if self.sinks.is_empty() {
            return Err(self
                .locator
                .error(None, "sinks", "a pipeline needs at least one sink"));
        }
        Ok(())
    }

    /// No two `metric` sinks declare one name: `/metrics` would carry the
    /// family twice, which Prometheus refuses whole.
    pub(super) fn check_metric_names(&self) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for s in &self.sinks {
            let SinkConfig::Metric(m) = &s.config else {
                continue;
            };
            let metric = m.metric_name(&s.name);
            if let Some(other) = seen.insert(metric, &s.name) {
                let key = match m.name {
                    Some(_) => format!("{}.{}.name", self.sink_section(&s.name), s.name),
                    None => format!("{}.{}", self.sink_section(&s.name), s.name),
                };
                let span = self.span_of(&key).unwrap_or_else(|| s.span.clone());
                return Err(self.locator.error(
                    Some(span),
                    key,
                    format!(
                        "the metric `{metric}` is declared by {}.{other} already; give each its own name",
                        self.sink_section(other)
                    ),
                ));
            }
        }
        Ok(())
    }
}
