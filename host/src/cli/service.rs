//! `sluice run`: the daemon around a running pipeline. The admin port
//! bound before anything starts, the file watcher and SIGHUP for reloads,
//! systemd told where it stands (`Type=notify`), a progress line on a
//! terminal, and the shutdown: SIGTERM or Ctrl-C drains within
//! `shutdown_timeout`, a second one aborts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::base::metrics::Registry;
use crate::config::PipelineConfig;
use crate::plugin::Runtime;
use crate::topology;
use crate::topology::reload::ReloadHandle;

/// What the admin port needs from the pipeline file, checked before the
/// pipeline starts (its TLS files against the file's folder).
struct AdminSettings {
    address: String,
    hosts: Vec<String>,
    token: Option<String>,
    tls: Option<Arc<crate::base::tls::TlsListener>>,
}

impl AdminSettings {
    fn of(config: &PipelineConfig) -> anyhow::Result<Option<AdminSettings>> {
        let Some(admin) = config.admin.as_ref() else {
            return Ok(None);
        };
        let tls = match admin.tls.as_ref() {
            Some(t) => {
                let t = t.resolved(&config.build_context("admin"));
                Some(
                    crate::base::tls::TlsListener::new(&t, "admin", &[b"http/1.1"], None)
                        .map_err(|e| anyhow::anyhow!("[admin] tls: {e}"))?,
                )
            }
            None => None,
        };
        Ok(Some(AdminSettings {
            address: admin.address.clone(),
            hosts: admin.hosts.clone(),
            token: config.admin_token()?,
            tls,
        }))
    }
}

pub(super) async fn run(pipeline: &std::path::Path, quiet: bool) -> anyhow::Result<()> {
    let config = PipelineConfig::load(pipeline)?;
    let admin = AdminSettings::of(&config)?;
    let reload = config.reload;
    let shutdown_timeout = config.shutdown_timeout;
    let runtime = Arc::new(Runtime::new(Runtime::default_cache_dir())?);
    let plan = topology::plan(config, runtime).await?;
    let order = pipeline_order(plan.config());
    // Bind the admin port before anything starts: a port in use is a
    // clear error, not a pipeline torn down half-started.
    let admin_listener = match &admin {
        Some(a) => Some(crate::admin::bind(&a.address).await?),
        None => None,
    };
    let metrics = Registry::default();
    let started = Instant::now();
    let running = plan
        .start(metrics.clone())
        .context("starting the pipeline")?;
    tracing::info!(pipeline = %pipeline.display(), "pipeline running");
    // Signals are taken before systemd hears READY: a SIGHUP or SIGTERM
    // sent right after it must find its handler (SIGHUP's default action
    // would end the process).
    let signals = Signals::new();

    let mut background = Vec::new();
    if let (Some(listener), Some(a)) = (admin_listener, admin) {
        let admin = crate::admin::Admin {
            metrics: metrics.clone(),
            reload: running.reload_handle(),
            pipeline: pipeline.to_path_buf(),
            token: a.token,
            hosts: a.hosts,
            tls: a.tls,
        };
        let (_, task) = crate::admin::serve_listener(listener, admin)?;
        background.push(task);
    }
    if reload.watch {
        background.push(tokio::spawn(crate::topology::reload::watch(
            running.reload_handle(),
            pipeline.to_path_buf(),
            reload,
            metrics.clone(),
        )));
    }
    background.extend(reload_on_sighup(
        running.reload_handle(),
        pipeline,
        &metrics,
    ));
    // A progress line on a terminal; nothing on a pipe or a file.
    let progress = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    if progress {
        background.push(progress_line(metrics.clone(), started));
    }
    // Under systemd (Type=notify): started. Without NOTIFY_SOCKET, nothing.
    notify(&[sd_notify::NotifyState::Ready]);
    background.push(stop_on_signals(
        signals,
        running.stop_handle(),
        metrics.clone(),
        shutdown_timeout,
    ));
    let result = running.wait().await;
    // Finite sources done (or drained after a signal): stopping, either way.
    notify(&[sd_notify::NotifyState::Stopping]);
    for task in background {
        task.abort();
    }
    if progress {
        eprintln!();
    }
    if !quiet {
        let elapsed = started.elapsed();
        let read = events_read(&metrics);
        let order: Vec<&str> = order.iter().map(String::as_str).collect();
        eprintln!("\n{}", metrics.summary(&order));
        eprintln!(
            "{read} events in {:.2}s ({:.0} events/s)",
            elapsed.as_secs_f64(),
            read as f64 / elapsed.as_secs_f64().max(1e-9)
        );
    }
    result
}

/// SIGHUP reloads the pipeline file, systemd told `RELOADING` meanwhile.
fn reload_on_sighup(
    handle: ReloadHandle,
    pipeline: &std::path::Path,
    metrics: &Registry,
) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        let path = pipeline.to_path_buf();
        let m = metrics.clone();
        let mut hup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()?;
        Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading");
                let mut states = vec![sd_notify::NotifyState::Reloading];
                if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
                    states.push(now);
                }
                notify(&states);
                if let Err(e) = crate::topology::reload::reload_all(&handle, &path, &m, false).await
                {
                    tracing::error!(error = %format!("{e:#}"), "reload after SIGHUP failed");
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = (handle, pipeline, metrics);
        None
    }
}

/// Events read and their rate, on one line of the terminal every half
/// second.
fn progress_line(m: Registry, started: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let read = events_read(&m);
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\r\x1b[2K{read} events  {:.0} events/s  {secs:.1}s",
                read as f64 / secs.max(1e-9)
            );
        }
    })
}

/// The first SIGTERM or Ctrl-C drains the pipeline; a second one, or
/// `shutdown_timeout` passing, ends the process (what was not delivered
/// is left unacknowledged, so the sources read it again).
fn stop_on_signals(
    mut signals: Signals,
    stop: crate::topology::running::StopHandle,
    m: Registry,
    shutdown_timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        signals.next().await;
        notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!(timeout = ?shutdown_timeout, "stopping: draining in-flight events (press Ctrl-C again to abort)");
        stop.trigger();
        let code = tokio::select! {
            _ = signals.next() => {
                tracing::warn!("aborting without draining");
                130
            }
            _ = tokio::time::sleep(shutdown_timeout) => {
                let queued: usize = m.queue_depths().iter().map(|(_, n, _)| *n).sum();
                tracing::error!(
                    timeout = ?shutdown_timeout,
                    queued_batches = queued,
                    "shutdown_timeout passed before everything was delivered; exiting: what was not delivered is left unacknowledged, so the sources read it again"
                );
                1
            }
        };
        std::process::exit(code);
    })
}

/// Tell systemd (when it started us with `Type=notify`) what we are doing.
fn notify(states: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}

/// The components of a pipeline as its file lists them: sources, then
/// transforms, then sinks, each in the order they appear.
fn pipeline_order(c: &PipelineConfig) -> Vec<String> {
    fn by_position<T>(list: &[crate::config::Named<T>]) -> Vec<String> {
        let mut named: Vec<_> = list
            .iter()
            .map(|n| (n.span.start, n.name.clone()))
            .collect();
        named.sort();
        named.into_iter().map(|(_, n)| n).collect()
    }
    let mut out = by_position(&c.sources);
    out.push(crate::delivery::DEAD_LETTERS.to_string());
    out.extend(by_position(&c.transforms));
    out.extend(by_position(&c.sinks));
    out
}

/// Events read by all sources so far.
fn events_read(metrics: &Registry) -> u64 {
    metrics
        .snapshot()
        .iter()
        .filter(|s| {
            s.kind == crate::base::metrics::Kind::Source && s.name != crate::delivery::DEAD_LETTERS
        })
        .map(|s| s.events_in)
        .sum()
}

/// SIGTERM and Ctrl-C, listened to from the moment this is made (a
/// signal that comes before the first wait is not lost, nor left to its
/// default action).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next SIGTERM or Ctrl-C.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if self.term.is_none() && self.int.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            tokio::select! {
                _ = one(&mut self.term) => {}
                _ = one(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
