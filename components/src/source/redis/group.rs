//! Reading a consumer group: one read of a stream (own pending entries,
//! claims, new entries), delivery as batches whose acknowledgement XACKs
//! them, and the tidying of idle consumers.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::redis::group";

use super::*;

/// Entries of one stream to acknowledge.
pub(super) type Acked = (Arc<str>, Vec<String>);

/// The entries this process has sent into its pipeline and not yet
/// acknowledged, per stream: neither claimed nor re-read while there.
#[derive(Default)]
pub(super) struct InFlight(
    pub(super) std::sync::Mutex<HashMap<Arc<str>, std::collections::HashSet<String>>>,
);

impl InFlight {
    pub(super) fn add(&self, stream: &Arc<str>, ids: &[String]) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(stream.clone())
            .or_default()
            .extend(ids.iter().cloned());
    }

    pub(super) fn remove(&self, stream: &str, ids: &[String]) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = m.get_mut(stream) {
            for id in ids {
                set.remove(id);
            }
        }
    }

    /// Drop from `items` those whose id (`None`: not this process's to
    /// check) is in flight on `stream`.
    pub(super) fn retain_absent<T>(
        &self,
        stream: &str,
        items: &mut Vec<T>,
        id: impl Fn(&T) -> Option<&str>,
    ) {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = m.get(stream) {
            items.retain(|item| id(item).is_none_or(|id| !set.contains(id)));
        }
    }
}

/// Acknowledges entries as their events are delivered: what is waiting is
/// gathered, one pipeline per stream, the streams at once (on a cluster
/// each goes to its own shard); a stream whose ack failed is retried.
pub(super) async fn acker(
    target: Target,
    group: String,
    delete: bool,
    metrics: Arc<ComponentMetrics>,
    in_flight: Arc<InFlight>,
    mut rx: mpsc::UnboundedReceiver<Acked>,
) {
    let mut con: Option<Conn> = None;
    while let Some((stream, ids)) = rx.recv().await {
        let mut todo: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        todo.entry(stream).or_default().extend(ids);
        while let Ok((stream, more)) = rx.try_recv() {
            todo.entry(stream).or_default().extend(more);
        }
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        while !todo.is_empty() {
            if con.is_none() {
                con = target.connect().await.ok();
            }
            if let Some(c) = con.as_ref() {
                let acks = todo.iter().map(|(stream, ids)| {
                    let mut pipe = redis::pipe();
                    pipe.cmd("XACK")
                        .arg(&**stream)
                        .arg(&group)
                        .arg(ids)
                        .ignore();
                    if delete {
                        pipe.cmd("XDEL").arg(&**stream).arg(ids).ignore();
                    }
                    let mut c = c.clone();
                    let stream = stream.clone();
                    async move { (stream, pipe.query_async::<()>(&mut c).await) }
                });
                let mut failed = false;
                for (stream, r) in futures_util::future::join_all(acks).await {
                    match r {
                        Ok(()) => {
                            if let Some(ids) = todo.remove(&stream) {
                                in_flight.remove(&stream, &ids);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(target: LOG_TARGET, error = %e, %stream, "XACK failed; retrying");
                            failed = true;
                        }
                    }
                }
                if !failed {
                    break;
                }
                con = None;
            }
            ComponentMetrics::add(&metrics.retries, 1);
            backoff.wait().await;
        }
    }
}

/// What every read of a source shares.
pub(super) struct Io<'a> {
    pub(super) target: &'a Target,
    pub(super) ctx: &'a SourceContext,
    pub(super) consumer: &'a str,
    pub(super) count: usize,
    pub(super) ack_tx: &'a mpsc::UnboundedSender<Acked>,
    pub(super) in_flight: &'a Arc<InFlight>,
    /// Where an event without `timestamp` has its time, ready to be caught
    /// in the pass that checks it.
    pub(super) times: &'a Candidates,
}

impl Io<'_> {
    /// The acknowledgement of entries sent into the pipeline, in flight
    /// until it fires: delivered, they are acked; not delivered, they stay
    /// pending, and are claimed again once idle for `claim_idle` (or read
    /// after a restart, or by another consumer once this one is gone).
    pub(super) fn ack(&self, stream: &Arc<str>, ids: Vec<String>) -> Arc<Ack> {
        self.in_flight.add(stream, &ids);
        let tx = self.ack_tx.clone();
        let in_flight = self.in_flight.clone();
        let stream = stream.clone();
        Ack::new(move |ok| {
            if ok {
                let _ = tx.send((stream, ids));
            } else {
                in_flight.remove(&stream, &ids);
            }
        })
    }
}

impl RedisSourceConfig {
    /// One read of a stream: our own pending entries first (after a start
    /// or a reconnect), then a claim round when one is due, then, once
    /// nothing a former owner holds is left, new entries. `None`: nothing
    /// came. With the entries, how often each redelivered one was delivered.
    pub(super) async fn step(
        &self,
        io: &Io<'_>,
        part: &mut Partition,
        con: &mut Conn,
        block: Option<Duration>,
    ) -> redis::RedisResult<Option<(Vec<Entry>, HashMap<String, u64>)>> {
        let consumer = io.consumer;
        let count = io.count;
        let stream = &*part.stream.clone();
        let claiming = part.claim_cursor.is_some()
            || part.last_claim.elapsed() >= self.claim_idle / 2
            || (part.taking_over && part.last_claim.elapsed() >= TAKEOVER_CHECK);
        let (entries, redelivered) = if let Some(cursor) = part.pending_cursor.clone() {
            let v = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(stream)
                .arg(&cursor)
                .query_async::<Value>(con)
                .await?;
            let mut entries = read_reply(&v);
            match entries.last() {
                Some(e) => part.pending_cursor = Some(e.id.clone()),
                None => part.pending_cursor = None,
            }
            // After a reconnect: what is still in our pipeline stays there.
            io.in_flight
                .retain_absent(stream, &mut entries, |e| Some(e.id.as_str()));
            if entries.is_empty() && part.pending_cursor.is_some() {
                // Go on with the next page of pending entries.
                return Ok(None);
            }
            (entries, true)
        } else if claiming {
            (self.claim(io, part, con, stream).await?, true)
        } else if part.taking_over && others_pending(con, stream, &self.group, consumer).await? > 0
        {
            // A former owner still holds entries: they are acked as its
            // sinks write them, or claimed here once idle; new ones wait.
            return Ok(None);
        } else {
            if part.taking_over {
                part.taking_over = false;
                tracing::debug!(target: LOG_TARGET, source = %io.ctx.name, %stream, "taken over; reading new entries");
            }
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&self.group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count);
            if let Some(block) = block {
                cmd.arg("BLOCK").arg(block.as_millis() as u64);
            }
            cmd.arg("STREAMS").arg(stream).arg(">");
            (read_reply(&cmd.query_async::<Value>(con).await?), false)
        };
        if entries.is_empty() {
            return Ok(None);
        }
        // Delivery counts of redelivered entries (new ones have one).
        let deliveries = if redelivered {
            self.deliveries(con, stream, &entries).await
        } else {
            HashMap::new()
        };
        Ok(Some((entries, deliveries)))
    }

    /// Entries idle past `claim_idle` in other consumers (or in this one,
    /// but not in its pipeline), claimed a page at a time; now and then,
    /// consumers idle long enough with nothing pending are removed first.
    async fn claim(
        &self,
        io: &Io<'_>,
        part: &mut Partition,
        con: &mut Conn,
        stream: &str,
    ) -> redis::RedisResult<Vec<Entry>> {
        let consumer = io.consumer;
        let count = io.count;
        if part.claim_cursor.is_none() {
            part.last_claim = tokio::time::Instant::now();
            if part.last_sweep.elapsed() >= self.claim_idle / 2 {
                part.last_sweep = tokio::time::Instant::now();
                self.remove_idle_consumers(con, stream, consumer, io.ctx)
                    .await;
            }
        }
        let from = match part.claim_cursor.take() {
            Some(after) => format!("({after}"),
            None => "-".to_string(),
        };
        let idle = self.claim_idle.as_millis() as u64;
        let v = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&self.group)
            .arg("IDLE")
            .arg(idle)
            .arg(&from)
            .arg("+")
            .arg(count)
            .query_async::<Value>(con)
            .await?;
        let mut rows = pending_rows(&v);
        if rows.len() >= count {
            part.claim_cursor = rows.last().map(|r| r.0.clone());
        }
        // Other consumers' entries, and ours that are not in our
        // pipeline (idle there only because the sink is slow).
        io.in_flight
            .retain_absent(stream, &mut rows, |(id, owner)| {
                (owner == consumer).then_some(id.as_str())
            });
        let theirs: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
        let entries = if theirs.is_empty() {
            Vec::new()
        } else {
            let v = redis::cmd("XCLAIM")
                .arg(stream)
                .arg(&self.group)
                .arg(consumer)
                .arg(idle)
                .arg(&theirs)
                .query_async::<Value>(con)
                .await?;
            parse_entries(&v)
        };
        ComponentMetrics::add(&io.ctx.metrics.claimed, entries.len());
        Ok(entries)
    }

    /// How many times each of `entries` (read again) was delivered.
    async fn deliveries(
        &self,
        con: &mut Conn,
        stream: &str,
        entries: &[Entry],
    ) -> HashMap<String, u64> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return HashMap::new();
        };
        let v: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&self.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len() * 2)
            .query_async(con)
            .await
            .unwrap_or(Value::Nil);
        array(&v)
            .iter()
            .filter_map(|p| {
                let p = array(p);
                let id = text(p.first()?)?;
                let n = match p.get(3)? {
                    Value::Int(n) => *n as u64,
                    other => text(other)?.parse().ok()?,
                };
                Some((id, n))
            })
            .collect()
    }

    /// Remove the group's other consumers that have been idle longer than
    /// `remove_idle_consumers` with nothing pending: what crashed or moved
    /// processes leave behind. Entries pending to a consumer are never
    /// lost this way (those consumers are kept until claimed from).
    pub(super) async fn remove_idle_consumers(
        &self,
        con: &mut Conn,
        stream: &str,
        me: &str,
        ctx: &SourceContext,
    ) {
        if self.remove_idle_consumers.is_zero() {
            return;
        }
        let Ok(v) = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(&self.group)
            .query_async::<Value>(con)
            .await
        else {
            return;
        };
        let limit = self.remove_idle_consumers.as_millis() as i64;
        for c in consumers(&v) {
            if c.name == me || c.pending > 0 || c.idle_ms < limit {
                continue;
            }
            let removed: redis::RedisResult<i64> = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(stream)
                .arg(&self.group)
                .arg(&c.name)
                .query_async(con)
                .await;
            if removed.is_ok() {
                tracing::info!(target: LOG_TARGET, source = %ctx.name, group = %self.group, consumer = %c.name, idle_s = c.idle_ms / 1000, "removed an idle consumer with nothing pending");
            }
        }
    }

    /// Send entries on as one batch whose acknowledgement XACKs them;
    /// entries that cannot be events, or were delivered too often, go to
    /// the dead letters (and are acked once those are written).
    pub(super) async fn deliver(
        &self,
        io: &Io<'_>,
        stream: &Arc<str>,
        entries: Vec<Entry>,
        deliveries: &HashMap<String, u64>,
        clock: &mut Clock,
    ) -> anyhow::Result<()> {
        let ctx = io.ctx;
        let mut batch = Batch::with_capacity(entries.len(), entries.len() * 200);
        let mut ids = Vec::with_capacity(entries.len());
        let mut dead: Vec<(Vec<u8>, ErrorKind, String, String)> = Vec::new();
        for e in &entries {
            let n = deliveries.get(&e.id).copied().unwrap_or(1);
            let mut raw = Vec::new();
            let decoded = entry_event(
                e,
                &self.id_field,
                clock,
                io.times,
                Some(&ctx.metrics),
                &mut raw,
            );
            if n > self.max_deliveries {
                let event = if decoded.is_ok() { raw } else { fields_json(e) };
                dead.push((
                    event,
                    ErrorKind::Decode,
                    format!(
                        "entry {} delivered {n} times (max_deliveries = {})",
                        e.id, self.max_deliveries
                    ),
                    e.id.clone(),
                ));
                continue;
            }
            match decoded {
                Ok(()) => {
                    batch.data.extend_from_slice(&raw);
                    batch.seal();
                    ids.push(e.id.clone());
                }
                Err(reason) => dead.push((
                    fields_json(e),
                    ErrorKind::Decode,
                    format!("entry {}: {reason}", e.id),
                    e.id.clone(),
                )),
            }
        }
        if !dead.is_empty() {
            let dead_ids: Vec<String> = dead.iter().map(|d| d.3.clone()).collect();
            let ack = io.ack(stream, dead_ids);
            let letters: Vec<DeadLetter<'_>> = dead
                .iter()
                .map(|(event, kind, message, _)| DeadLetter {
                    event,
                    kind: *kind,
                    message: message.clone(),
                })
                .collect();
            ctx.dead.send(&ctx.metrics, &letters, &[ack]).await;
        }
        if batch.is_empty() {
            return Ok(());
        }
        batch.acks.push(io.ack(stream, ids));
        let mut batcher = Batcher::new(ctx.batch);
        batcher.batch = batch;
        batcher.pushed();
        batcher.flush(ctx).await?;
        Ok(())
    }
}
