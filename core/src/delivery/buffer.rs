//! A sink's disk buffer (`buffer = { type = "disk" }`): a stage between the
//! sink's input channel and the sink, over a [`sluice_buffer::Buffer`].
//!
//! - **The writer** takes what arrives on the input channel (as many
//!   batches as wait, up to a group), appends them to the buffer and syncs
//!   them once, and only then drops them: that is what acknowledges them to
//!   their sources (an HTTP answer, an `XACK`, a file checkpoint). So a slow
//!   or down destination never fills the channel, and never pushes back,
//!   until the buffer is full; then `when_full` decides: `block` (stop
//!   taking: backpressure, as a memory buffer), `drop_newest` (counted) or
//!   `dead_letter`. A failed write (a full disk) is cut back by the buffer
//!   and tried again with a backoff: nothing half-written is acknowledged,
//!   and the writer takes nothing new meanwhile.
//! - **The reader** hands the records to the sink in order as batches whose
//!   [`Ack`] gives them back to the buffer: delivered, or not (the sink
//!   gave up), when the record is handed out again after a wait that
//!   doubles up to 30 s.
//! - A stop drains what the sink takes before the pipeline's
//!   `shutdown_timeout`; the rest stays on disk for the next start. A sink
//!   restarted by a reload takes its buffer over: the old stage is asked
//!   to stop handing out, and the new one goes on with the same open
//!   buffer (what the old sink still holds comes back to it).

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::delivery::buffer";

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use sluice_buffer::{Buffer, Record, Stats};
use tokio::sync::{mpsc, Notify};

use super::{Backoff, DeadLetter, DeadLetters, ErrorKind};
use crate::base::ack::Ack;
use crate::base::event::{Batch, SharedBatch};
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{DiskBufferConfig, WhenFull};

/// Most batches written (and synced) together.
const GROUP: usize = 64;
/// How long a new stage waits for the old one of the same folder to stop
/// handing out before it gives up.
const TAKEOVER: Duration = Duration::from_secs(60);

/// A buffer open in this process.
struct Open {
    /// Asked to stop handing out (a reload restarts or removes its sink).
    stop: AtomicBool,
    wake: Notify,
    stats: Arc<Stats>,
    /// The buffer, while anything holds it (its stage, or batches it
    /// handed out that a sink still holds).
    buffer: std::sync::Weak<Buffer>,
    /// Its reader has stopped handing out.
    reader_done: AtomicBool,
}

impl Open {
    /// Stop handing out (the reader wakes to see it).
    fn ask_to_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// The buffers open in this process, by folder.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Arc<Open>>>> = LazyLock::new(Default::default);

fn open_map() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Arc<Open>>> {
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Events waiting in the buffer of folder `dir`, if it is open here.
pub fn waiting(dir: &Path) -> Option<u64> {
    open_map()
        .get(dir)
        .map(|o| o.stats.events.load(Ordering::Relaxed))
}

/// Ask the stage of folder `dir` to stop handing out (its events stay on
/// disk).
pub fn stop(dir: &Path) {
    if let Some(o) = open_map().get(dir) {
        o.ask_to_stop();
    }
}

/// The segment size for a buffer of `max_size` bytes: an eighth of it
/// (space comes back a segment at a time), between 1 and 128 MiB.
fn segment_size(max_size: u64) -> u64 {
    (max_size / 8).clamp(1 << 20, 128 << 20)
}

/// A disk buffer between a sink's input channel and the sink.
pub struct DiskStage {
    pub name: Arc<str>,
    pub dir: PathBuf,
    pub config: DiskBufferConfig,
    /// The sink's input channel, fed by the router.
    pub front: mpsc::Receiver<SharedBatch>,
    /// What the sink reads.
    pub to_sink: mpsc::Sender<SharedBatch>,
    pub metrics: Arc<ComponentMetrics>,
    pub dead: Option<DeadLetters>,
}

/// Mark the component down for a buffer reason, or up again if the reason
/// standing is the buffer's (never clearing the sink's own).
fn buffer_down(metrics: &ComponentMetrics, reason: Option<String>) {
    let mut down = metrics.down.lock().unwrap_or_else(|e| e.into_inner());
    match reason {
        Some(r) => *down = Some(r),
        None => {
            if down
                .as_deref()
                .is_some_and(|d| d.starts_with("disk buffer"))
            {
                *down = None;
            }
        }
    }
}

impl DiskStage {
    pub async fn run(self) -> anyhow::Result<()> {
        let DiskStage {
            name,
            dir,
            config,
            front,
            to_sink,
            metrics,
            dead,
        } = self;
        let max = config.max_size as u64;
        let buffer = open_taking_over(&dir, segment_size(max), &name).await?;
        let stats = buffer.stats().clone();
        stats.max_size.store(max, Ordering::Relaxed);
        let open = Arc::new(Open {
            stop: AtomicBool::new(false),
            wake: Notify::new(),
            stats: stats.clone(),
            buffer: Arc::downgrade(&buffer),
            reader_done: AtomicBool::new(false),
        });
        open_map().insert(dir.clone(), open.clone());
        *metrics.buffer.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
        tracing::info!(target: LOG_TARGET, sink = %name, dir = %dir.display(), "disk buffer open");
        let writer_done = Arc::new(AtomicBool::new(false));
        let writer = write_loop(
            &name,
            front,
            buffer.clone(),
            config.when_full,
            max,
            &metrics,
            dead,
            &open,
            &writer_done,
        );
        let reader = async {
            read_loop(
                &name,
                to_sink,
                buffer.clone(),
                &open,
                &writer_done,
                &metrics,
            )
            .await;
            open.reader_done.store(true, Ordering::Release);
        };
        tokio::join!(writer, reader);
        if let Err(e) = buffer.close() {
            tracing::warn!(target: LOG_TARGET, sink = %name, error = %e, "disk buffer: saving its pointers at the stop failed; a restart hands out again what was delivered since the last save");
        }
        tracing::info!(target: LOG_TARGET, sink = %name, waiting = buffer.stats().events.load(Ordering::Relaxed), "disk buffer closed");
        Ok(())
    }
}

/// Open the buffer in `dir`. When a stage of this process has it (a
/// reload restarting the sink), that stage is asked to stop handing out,
/// and the buffer is taken over as it is, once its reader has stopped:
/// what the old sink still holds is acknowledged (or handed out again)
/// through the same buffer, so nothing waits for the old sink to let go.
async fn open_taking_over(dir: &Path, segment: u64, name: &str) -> anyhow::Result<Arc<Buffer>> {
    let started = Instant::now();
    loop {
        let old = open_map().get(dir).cloned();
        if let Some(old) = old.filter(|o| o.buffer.strong_count() > 0) {
            old.ask_to_stop();
            if old.reader_done.load(Ordering::Acquire) {
                if let Some(b) = old.buffer.upgrade() {
                    tracing::info!(target: LOG_TARGET, sink = %name, dir = %dir.display(), "disk buffer taken over from the sink's previous instance");
                    return Ok(b);
                }
            }
            anyhow::ensure!(
                started.elapsed() < TAKEOVER,
                "sink {name}: its previous instance did not let go of its disk buffer {}",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let d = dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || Buffer::open(&d, segment)).await?;
        match opened {
            Ok((b, _)) => return Ok(Arc::new(b)),
            // Let go of just now.
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && started.elapsed() < Duration::from_secs(2) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(e).context(format!(
                    "sink {name}: opening its disk buffer {}",
                    dir.display()
                )))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    name: &str,
    mut front: mpsc::Receiver<SharedBatch>,
    buffer: Arc<Buffer>,
    when_full: WhenFull,
    max: u64,
    metrics: &ComponentMetrics,
    dead: Option<DeadLetters>,
    open: &Open,
    done: &AtomicBool,
) {
    let mut full_logged = false;
    'next: while let Some(first) = front.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP {
            match front.try_recv() {
                Ok(b) => group.push(b),
                Err(_) => break,
            }
        }
        let need: u64 = group
            .iter()
            .map(|b| Buffer::record_size(b.len(), b.bytes()))
            .sum();
        // Room: at once, or as `when_full` says.
        loop {
            let size = buffer.size();
            if size == 0 || size + need <= max {
                break;
            }
            if !full_logged {
                full_logged = true;
                tracing::warn!(target: LOG_TARGET, sink = %name, size, max, ?when_full, "disk buffer full");
            }
            match when_full {
                WhenFull::Block => {
                    buffer_down(
                        metrics,
                        Some(format!(
                            "disk buffer full ({size} of {max} bytes): taking no more events"
                        )),
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                WhenFull::DropNewest => {
                    let events: usize = group.iter().map(|b| b.len()).sum();
                    buffer
                        .stats()
                        .dropped
                        .fetch_add(events as u64, Ordering::Relaxed);
                    ComponentMetrics::add(&metrics.dropped, events);
                    continue 'next;
                }
                WhenFull::DeadLetter => {
                    let events: usize = group.iter().map(|b| b.len()).sum();
                    buffer
                        .stats()
                        .dropped
                        .fetch_add(events as u64, Ordering::Relaxed);
                    if let Some(dead) = &dead {
                        let message = format!("disk buffer full ({size} of {max} bytes)");
                        for b in &group {
                            let letters: Vec<DeadLetter<'_>> = b
                                .iter()
                                .map(|event| DeadLetter {
                                    event,
                                    kind: ErrorKind::BufferFull,
                                    message: message.clone(),
                                })
                                .collect();
                            dead.send(metrics, &letters, &b.acks).await;
                        }
                    } else {
                        ComponentMetrics::add(&metrics.dropped, events);
                    }
                    continue 'next;
                }
            }
        }
        full_logged = false;
        // Written and synced, or tried again: what is not on disk is
        // never acknowledged.
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut failing = false;
        loop {
            let b = buffer.clone();
            let g = group.clone();
            let written = tokio::task::spawn_blocking(move || {
                let parts: Vec<(&[u8], &[u32])> =
                    g.iter().map(|b| (&b.data[..], &b.ends[..])).collect();
                b.append(&parts)
            })
            .await;
            let error = match written {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            if !failing {
                failing = true;
                tracing::error!(target: LOG_TARGET, sink = %name, error = %error, "disk buffer: write failed; taking no more events until it works");
            }
            ComponentMetrics::add(&metrics.retries, 1);
            buffer_down(metrics, Some(format!("disk buffer: write failed: {error}")));
            tokio::time::sleep(backoff.next_delay()).await;
        }
        if failing {
            tracing::info!(target: LOG_TARGET, sink = %name, "disk buffer: writing again");
        }
        buffer_down(metrics, None);
        drop(group);
        open.wake.notify_one();
    }
    done.store(true, Ordering::Release);
    open.wake.notify_one();
}

/// A record as a batch whose acknowledgement goes back to the buffer.
fn batch_of(
    record: Record,
    buffer: &Arc<Buffer>,
    open: &Arc<Open>,
    failed: &Arc<AtomicBool>,
) -> SharedBatch {
    let pos = record.pos;
    let (b, o, f) = (buffer.clone(), open.clone(), failed.clone());
    let ack = Ack::new(move |delivered| {
        if let Err(e) = b.ack(pos, delivered) {
            tracing::error!(target: LOG_TARGET, dir = %b.dir().display(), error = %e, "disk buffer: saving an acknowledgement failed");
        }
        if !delivered {
            f.store(true, Ordering::Relaxed);
            o.wake.notify_one();
        }
    });
    Arc::new(Batch {
        data: record.data,
        ends: record.ends,
        acks: vec![ack],
    })
}

async fn read_loop(
    name: &str,
    to_sink: mpsc::Sender<SharedBatch>,
    buffer: Arc<Buffer>,
    open: &Arc<Open>,
    writer_done: &AtomicBool,
    metrics: &ComponentMetrics,
) {
    const FIRST_RETRY: Duration = Duration::from_secs(1);
    let failed = Arc::new(AtomicBool::new(false));
    let mut retry_wait = FIRST_RETRY;
    let mut retry_at: Option<Instant> = None;
    let mut last_sync = Instant::now();
    let mut read_failing = false;
    loop {
        if open.stop.load(Ordering::Relaxed) {
            tracing::info!(target: LOG_TARGET, sink = %name, "disk buffer: handing over; what waits stays on disk");
            break;
        }
        if last_sync.elapsed() >= Duration::from_secs(1) {
            last_sync = Instant::now();
            let b = buffer.clone();
            let _ = tokio::task::spawn_blocking(move || b.sync()).await;
        }
        if failed.swap(false, Ordering::Relaxed) && retry_at.is_none() {
            retry_at = Some(Instant::now() + retry_wait);
        }
        let mut record = None;
        if buffer.has_retries() && retry_at.is_none_or(|t| Instant::now() >= t) {
            match buffer.read_retry() {
                Ok(r) => record = r,
                Err(e) => {
                    tracing::error!(target: LOG_TARGET, sink = %name, error = %e, "disk buffer: reading a record again failed")
                }
            }
            retry_at = None;
            retry_wait = (retry_wait * 2).min(Duration::from_secs(30));
        } else if !buffer.has_retries() {
            retry_wait = FIRST_RETRY;
        }
        if record.is_none() {
            match buffer.read_next() {
                Ok(r) => {
                    record = r;
                    if read_failing {
                        read_failing = false;
                        buffer_down(metrics, None);
                    }
                }
                Err(e) => {
                    if !read_failing {
                        read_failing = true;
                        tracing::error!(target: LOG_TARGET, sink = %name, error = %e, "disk buffer: reading failed; trying again");
                    }
                    buffer_down(metrics, Some(format!("disk buffer: reading failed: {e}")));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        match record {
            Some(r) => {
                if to_sink
                    .send(batch_of(r, &buffer, open, &failed))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            None => {
                if writer_done.load(Ordering::Acquire)
                    && buffer.is_drained()
                    && !buffer.has_retries()
                {
                    break;
                }
                let wait = retry_at.map_or(Duration::from_millis(200), |t| {
                    t.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(200))
                });
                let _ = tokio::time::timeout(wait, open.wake.notified()).await;
            }
        }
    }
}
