//! `type = "redis"` with `list = "KEY"`: a Redis list that applications
//! `RPUSH` to (Monolog's `RedisHandler`, python-logstash's Redis
//! transport, Logstash's `redis` output with `data_type = "list"`, ...),
//! read as a reliable queue.
//!
//! Each value is moved, in the same command that reads it, from the head
//! of the list to the tail of this consumer's processing list (`LMOVE`, up
//! to a batch per round in one script; `BLMOVE` to wait when the list is
//! empty), and removed from there (`LREM`) only once every sink it was
//! routed to has written it, or it went to the dead letters. A process
//! killed at any point leaves what it had read in its processing list; the
//! next start of the same consumer delivers that first (at least once: a
//! value written but not yet removed at the kill comes again, and is
//! counted in the log line `redelivered=N`). Values are read as the file
//! source reads lines, by `format`: with `auto` (the default) a JSON object
//! is the event and any other value `{"message": VALUE}`; with `json` a
//! value that is not an object goes to the dead letters with the reason,
//! and is removed from the processing list once they have it.
//!
//! At most `max_in_flight` values (default four reads' `count`) are in
//! the processing list at once: reading waits for removals below that, so
//! what a killed process delivers again is bounded however slow the sinks
//! are, not by the depth of the pipeline's channels.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::redis_list";

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use super::redis::{connect, default_consumer, lost_connection, RedisSourceConfig};
use super::{Batcher, Format, LineDecoder, SourceContext};
use crate::base::ack::Ack;
use crate::base::metrics::ComponentMetrics;
use crate::base::output::Shutdown;
use crate::base::redis::{Conn, Target};
use crate::delivery::Backoff;

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Move up to `ARGV[1]` values from the head of `KEYS[1]` to the tail of
/// `KEYS[2]`, in one round trip; the values moved, in order.
const MOVE_SCRIPT: &str = r"
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not v then break end
  out[#out + 1] = v
end
return out
";

/// The processing list of `consumer` on `list`: in the list's hash slot
/// (so `LMOVE` works on a Redis Cluster), `{LIST}:processing:CONSUMER`, or,
/// when the list's name has a hash tag of its own,
/// `LIST:processing:CONSUMER`. (A name with braces that are no hash tag,
/// such as `a{}b`, needs `processing_list` set on a cluster.)
pub fn processing_list(list: &str, consumer: &str) -> String {
    let tagged = list
        .find('{')
        .is_some_and(|i| list[i + 1..].find('}').is_some_and(|j| j > 0));
    if tagged {
        format!("{list}:processing:{consumer}")
    } else {
        format!("{{{list}}}:processing:{consumer}")
    }
}

/// Values delivered (or dead-lettered): to be removed from the processing
/// list.
type Done = Vec<Vec<u8>>;

/// Values in the processing list that this run knows of: read (or
/// recovered) and not yet removed.
#[derive(Default)]
struct InFlight {
    values: AtomicUsize,
    removed: tokio::sync::Notify,
}

impl InFlight {
    fn add(&self, n: usize) {
        self.values.fetch_add(n, Ordering::SeqCst);
    }

    fn remove(&self, n: usize) {
        // Saturating: never below zero, whatever the order of updates.
        let _ = self
            .values
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_sub(n))
            });
        self.removed.notify_one();
    }

    /// Until `room` more values fit under `max` (or nothing is in flight).
    async fn room(&self, room: usize, max: usize) {
        loop {
            let removed = self.removed.notified();
            let now = self.values.load(Ordering::SeqCst);
            if now == 0 || now + room <= max {
                return;
            }
            removed.await;
        }
    }
}

/// Removes delivered values from the processing list, gathering what is
/// waiting into one pipeline; retried with backoff on failure.
async fn remover(
    target: Target,
    processing: String,
    metrics: Arc<ComponentMetrics>,
    in_flight: Arc<InFlight>,
    mut rx: mpsc::UnboundedReceiver<Done>,
) {
    let mut con: Option<Conn> = None;
    while let Some(mut values) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            values.extend(more);
        }
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            if con.is_none() {
                con = target.connect().await.ok();
            }
            if let Some(c) = con.as_mut() {
                let mut pipe = redis::pipe();
                for v in &values {
                    // Equal values are interchangeable: the first one found
                    // (the oldest) goes.
                    pipe.cmd("LREM").arg(&processing).arg(1).arg(v).ignore();
                }
                match pipe.query_async::<()>(c).await {
                    Ok(()) => {
                        in_flight.remove(values.len());
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(target: LOG_TARGET, error = %e, list = %processing, "LREM failed; retrying");
                        con = None;
                    }
                }
            }
            ComponentMetrics::add(&metrics.retries, 1);
            backoff.wait().await;
        }
    }
}

pub async fn run(cfg: RedisSourceConfig, list: String, ctx: SourceContext) -> anyhow::Result<()> {
    let target = Target::open_tls(&cfg.url, cfg.cluster, cfg.tls.as_ref())
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("source {}: bad redis url", ctx.name))?;
    let consumer = cfg
        .consumer
        .clone()
        .unwrap_or_else(|| default_consumer(&ctx.name));
    let processing = cfg
        .processing_list
        .clone()
        .unwrap_or_else(|| processing_list(&list, &consumer));
    let count = cfg.count.unwrap_or(ctx.batch.max_events).max(1);
    let max_in_flight = cfg.max_in_flight.unwrap_or(4 * count).max(1);
    let in_flight = Arc::new(InFlight::default());
    let Some(mut con) = connect(&target, &ctx, "reader").await else {
        return Ok(());
    };
    ctx.metrics.set_down(None);
    tracing::info!(target: LOG_TARGET, source = %ctx.name, %list, %processing, cluster = target.is_cluster(), "reading redis list");
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
    let remover = tokio::spawn(remover(
        target.clone(),
        processing.clone(),
        ctx.metrics.clone(),
        in_flight.clone(),
        done_rx,
    ));
    // Batches not delivered (a sink gave up, no dead letter took them) are
    // still in the processing list: they are sent again.
    let (redo_tx, mut redo_rx) = mpsc::unbounded_channel::<Done>();
    let mut decoder = LineDecoder::new(cfg.format.unwrap_or(Format::Auto), &ctx.name, None)
        .with_times(cfg.timestamp.clone(), ctx.metrics.clone());
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    // What a killed run left in our processing list, delivered first.
    let mut recovered: Option<Vec<Vec<u8>>> = None;
    let result = loop {
        if shutdown.is_set() {
            break Ok(());
        }
        let read: redis::RedisResult<Vec<Vec<u8>>> = if let Ok(again) = redo_rx.try_recv() {
            Ok(again)
        } else if recovered.is_none() {
            let left: redis::RedisResult<Vec<Vec<u8>>> = redis::cmd("LRANGE")
                .arg(&processing)
                .arg(0)
                .arg(-1)
                .query_async(&mut con)
                .await;
            match left {
                Ok(left) => {
                    tracing::info!(target: LOG_TARGET, source = %ctx.name, list = %processing, redelivered = left.len(), "redis list: values a former run read and did not finish, delivered again");
                    in_flight.add(left.len());
                    recovered = Some(left);
                    continue;
                }
                Err(e) => Err(e),
            }
        } else if let Some(left) = recovered.as_mut().filter(|l| !l.is_empty()) {
            let rest = left.split_off(left.len().min(count));
            Ok(std::mem::replace(left, rest))
        } else {
            // Read only once this read fits under the bound.
            let take = count.min(max_in_flight);
            tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                () = in_flight.room(take, max_in_flight) => {}
            }
            let Some(moved) =
                move_values(&mut con, &list, &processing, take, cfg.block, &mut shutdown).await
            else {
                break Ok(());
            };
            if let Ok(v) = &moved {
                in_flight.add(v.len());
            }
            moved
        };
        let values = match read {
            Ok(v) => {
                if backoff.attempts() > 0 {
                    tracing::info!(target: LOG_TARGET, source = %ctx.name, %list, "reading again");
                    ctx.metrics.set_down(None);
                    backoff.reset();
                }
                v
            }
            Err(e) => {
                if backoff.attempts() == 0 {
                    tracing::warn!(target: LOG_TARGET, source = %ctx.name, %list, error = %e, "redis list read failed; retrying");
                }
                ctx.metrics
                    .set_down(Some(format!("cannot read the redis list {list}: {e}")));
                ComponentMetrics::add(&ctx.metrics.retries, 1);
                if lost_connection(&e) {
                    if let Ok(c) = target.connect().await {
                        con = c;
                    }
                }
                tokio::select! {
                    _ = shutdown.wait() => break Ok(()),
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                continue;
            }
        };
        if values.is_empty() {
            continue;
        }
        if let Err(closed) = deliver(&ctx, &mut decoder, values, &done_tx, &redo_tx).await {
            break Err(anyhow::Error::new(closed));
        }
    };
    drop(done_tx);
    drop(redo_tx);
    // Removals of batches still in the pipeline arrive as sinks write them.
    let _ = tokio::time::timeout(Duration::from_secs(60), remover).await;
    result
}

/// Up to `take` values moved from `list` to the end of `processing` in
/// one step (waiting `block` for one with BLMOVE when none is there);
/// `None` when shutdown came first.
async fn move_values(
    con: &mut Conn,
    list: &str,
    processing: &str,
    take: usize,
    block: Duration,
    shutdown: &mut Shutdown,
) -> Option<redis::RedisResult<Vec<Vec<u8>>>> {
    // The script is small: sent whole each round (no SHA to lose when a
    // master fails over).
    let moved: redis::RedisResult<Vec<Vec<u8>>> = redis::cmd("EVAL")
        .arg(MOVE_SCRIPT)
        .arg(2)
        .arg(list)
        .arg(processing)
        .arg(take)
        .query_async(con)
        .await;
    match moved {
        Ok(v) if v.is_empty() => {
            // Nothing waiting: wait for the next value.
            let mut blmove = redis::cmd("BLMOVE");
            blmove
                .arg(list)
                .arg(processing)
                .arg("LEFT")
                .arg("RIGHT")
                .arg(block.as_secs_f64());
            let wait = tokio::select! {
                _ = shutdown.wait() => return None,
                r = blmove.query_async::<Option<Vec<u8>>>(con) => r,
            };
            Some(wait.map(|v| v.into_iter().collect()))
        }
        other => Some(other),
    }
}

/// One round's values into a batch (and the dead letters); removed from
/// the processing list when all of them are delivered.
async fn deliver(
    ctx: &SourceContext,
    decoder: &mut LineDecoder,
    values: Vec<Vec<u8>>,
    done: &mpsc::UnboundedSender<Done>,
    redo: &mpsc::UnboundedSender<Done>,
) -> Result<(), crate::base::output::Closed> {
    let mut batcher = Batcher::new(ctx.batch);
    for v in &values {
        batcher.line(decoder, v);
    }
    let (done, redo) = (done.clone(), redo.clone());
    let ack = Ack::new(move |ok| {
        if ok {
            let _ = done.send(values);
        } else {
            let _ = redo.send(values);
        }
    });
    batcher.flush_acked(ctx, ack).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_processing_list_shares_the_lists_slot() {
        assert_eq!(processing_list("monolog", "w1"), "{monolog}:processing:w1");
        assert_eq!(
            processing_list("logs:{app}", "w1"),
            "logs:{app}:processing:w1"
        );
    }
}
