//! Partitions shared by the members of a group on a Redis Cluster: who
//! is alive (a sorted set and an epoch), which partitions are whose, and
//! the reading of one's own partitions with takeover from a former owner.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::redis::members";

use super::*;

/// The first and longest wait after a round of partition reads that found nothing.
pub(super) const IDLE_FIRST: Duration = Duration::from_millis(5);
pub(super) const IDLE_MAX: Duration = Duration::from_millis(100);
/// How often a partition just taken over checks what its former owner holds.
pub(super) const TAKEOVER_CHECK: Duration = Duration::from_millis(200);

/// Where the reading of one stream stands.
pub(super) struct Partition {
    pub(super) stream: Arc<str>,
    /// Re-reading our own pending entries, from here.
    pub(super) pending_cursor: Option<String>,
    /// Where the next claim round (`XPENDING ... IDLE`) goes on: claiming
    /// continues round after round until no idle entry is left, then waits.
    pub(super) claim_cursor: Option<String>,
    pub(super) last_claim: tokio::time::Instant,
    pub(super) last_sweep: tokio::time::Instant,
    /// Errors that are not a lost connection (the group deleted, a key of
    /// another type): retried with backoff, logged once per kind.
    pub(super) failing: Option<String>,
    /// Taken over from another process: new entries wait until what the
    /// others hold pending is acked or claimed.
    pub(super) taking_over: bool,
}

impl Partition {
    pub(super) fn new(stream: &str, claim_idle: Duration, taking_over: bool) -> Partition {
        let long_ago = tokio::time::Instant::now()
            .checked_sub(claim_idle)
            .unwrap_or_else(tokio::time::Instant::now);
        Partition {
            stream: stream.into(),
            pending_cursor: Some("0".to_string()),
            claim_cursor: None,
            last_claim: long_ago,
            last_sweep: long_ago,
            failing: None,
            taking_over,
        }
    }
}

/// The live processes of a partitioned group, in a sorted set scored by
/// the (Redis server's) time each last said it was alive.
pub(super) struct Members {
    pub(super) key: String,
    pub(super) me: String,
    pub(super) ttl: Duration,
}

/// How often a member looks at the group's epoch between heartbeats: a
/// twentieth of `member_ttl`, between 50 ms and 500 ms.
pub(super) fn epoch_poll(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

impl Members {
    /// The counter bumped by every join and leave (`KEY:epoch`): a member
    /// that sees it move beats at once and takes its new share, instead of
    /// at its next heartbeat.
    pub(super) fn epoch_key(&self) -> String {
        format!("{}:epoch", self.key)
    }

    /// Add ourselves to the set (scored by the server's clock, in ms).
    pub(super) async fn add(&self, con: &mut Conn) -> redis::RedisResult<i64> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(con).await?;
        let now = secs * 1000 + micros / 1000;
        let ttl = self.ttl.as_millis() as i64;
        redis::pipe()
            .cmd("ZADD")
            .arg(&self.key)
            .arg(now)
            .arg(&self.me)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&self.key)
            .arg("-inf")
            .arg(now - 100 * ttl)
            .ignore()
            .query_async::<()>(con)
            .await?;
        Ok(now)
    }

    /// Tell the others the set changed (after changing it, so a member
    /// that reads the new epoch and then the set sees the change).
    pub(super) async fn bump_epoch(&self, con: &mut Conn) -> redis::RedisResult<()> {
        redis::cmd("INCR")
            .arg(self.epoch_key())
            .query_async(con)
            .await
    }

    /// Announce a join: in the set, then the epoch moved.
    pub(super) async fn join(&self, con: &mut Conn) -> redis::RedisResult<()> {
        self.add(con).await?;
        self.bump_epoch(con).await
    }

    pub(super) async fn epoch(&self, con: &mut Conn) -> redis::RedisResult<i64> {
        let e: Option<i64> = redis::cmd("GET")
            .arg(self.epoch_key())
            .query_async(con)
            .await?;
        Ok(e.unwrap_or(0))
    }

    /// Say we are alive; the epoch read before the set, and the live
    /// members (silent less than `ttl`), sorted.
    pub(super) async fn beat(&self, con: &mut Conn) -> redis::RedisResult<(i64, Vec<String>)> {
        let now = self.add(con).await?;
        let epoch = self.epoch(con).await?;
        let mut live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.key)
            .arg(now - self.ttl.as_millis() as i64)
            .arg("+inf")
            .query_async(con)
            .await?;
        live.sort();
        Ok((epoch, live))
    }

    /// Out of the set, then the epoch moved: the others take our
    /// partitions within one poll.
    pub(super) async fn leave(&self, con: &mut Conn) -> redis::RedisResult<()> {
        redis::cmd("ZREM")
            .arg(&self.key)
            .arg(&self.me)
            .query_async::<()>(con)
            .await?;
        self.bump_epoch(con).await
    }
}

/// The live members as the last successful heartbeat saw them, and when.
pub(super) type Live = Option<(tokio::time::Instant, Vec<String>)>;

/// Say this process is alive every third of `member_ttl`, on a task of its
/// own: a reader held back by a slow sink still beats, so the others never
/// take its partitions (and claim what it has in flight) while it works.
/// Between beats it looks at the group's epoch every [`epoch_poll`] and
/// beats at once when a member joined or left. It announces itself first
/// and takes partitions one poll later, so processes started together
/// split the partitions from their first read. Leaves the set on shutdown.
pub(super) async fn heartbeat(
    members: Members,
    target: Target,
    mut con: Conn,
    ctx_name: Arc<str>,
    metrics: Arc<ComponentMetrics>,
    live: tokio::sync::watch::Sender<Live>,
    mut shutdown: crate::base::output::Shutdown,
) {
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let poll = epoch_poll(members.ttl);
    let mut joined = false;
    while !shutdown.is_set() {
        let step = if joined {
            members.beat(&mut con).await.map(Some)
        } else {
            members.join(&mut con).await.map(|()| None)
        };
        let wait = match step {
            Ok(None) => {
                // Announced: the others see the epoch move and give up
                // our share; the first beat, one poll later, takes it.
                backoff.reset();
                joined = true;
                poll
            }
            Ok(Some((epoch, now))) => {
                backoff.reset();
                live.send_replace(Some((tokio::time::Instant::now(), now)));
                // Until the next beat, or the epoch moving.
                let next = tokio::time::Instant::now() + members.ttl / 3;
                loop {
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep_until(next.min(tokio::time::Instant::now() + poll)) => {}
                    }
                    if shutdown.is_set() || tokio::time::Instant::now() >= next {
                        break;
                    }
                    match members.epoch(&mut con).await {
                        Ok(e) if e != epoch => {
                            tracing::debug!(target: LOG_TARGET, source = %ctx_name, "a member joined or left");
                            break;
                        }
                        Ok(_) => {}
                        // The beat says what is wrong.
                        Err(_) => break,
                    }
                }
                Duration::ZERO
            }
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, source = %ctx_name, error = %e, "cannot say this process is alive");
                ComponentMetrics::add(&metrics.retries, 1);
                if lost_connection(&e) {
                    if let Ok(c) = target.connect().await {
                        con = c;
                    }
                }
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Leave at once: the others take the partitions without waiting for
    // `member_ttl` (what is in flight here is still acked).
    let _ = members.leave(&mut con).await;
}

/// The partitions (of `n`) that `me` owns among the sorted `live` members:
/// partition `p` is the `p % live.len()`-th member's.
pub(super) fn owned_partitions(live: &[String], me: &str, n: usize) -> Vec<usize> {
    let Some(i) = live.iter().position(|m| m == me) else {
        return Vec::new();
    };
    (0..n).filter(|p| p % live.len() == i).collect()
}

/// The `(id, consumer)` of each row of an extended `XPENDING` reply.
pub(super) fn pending_rows(v: &Value) -> Vec<(String, String)> {
    array(v)
        .iter()
        .filter_map(|row| {
            let row = array(row);
            Some((text(row.first()?)?, text(row.get(1)?)?))
        })
        .collect()
}

/// Entries of the group's other consumers still pending on `stream`.
pub(super) async fn others_pending(
    con: &mut Conn,
    stream: &str,
    group: &str,
    me: &str,
) -> redis::RedisResult<i64> {
    let v: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    let per = array(&v).get(3).map(array).unwrap_or(&[]);
    Ok(per
        .iter()
        .filter_map(|c| {
            let c = array(c);
            let name = text(c.first()?)?;
            let n: i64 = text(c.get(1)?)?.parse().ok()?;
            (name != me).then_some(n)
        })
        .sum())
}

impl RedisSourceConfig {
    /// Partitioned streams shared out among the group's live processes:
    /// rounds of reads of the partitions this one owns, all at once
    /// (without `BLOCK`: one connection serves them all), waiting a little
    /// longer after each empty round, up to 100 ms.
    pub(super) async fn run_partitioned(
        &self,
        io: &Io<'_>,
        reader: &mut Conn,
        names: &[String],
    ) -> anyhow::Result<()> {
        let ctx = io.ctx;
        let mut shutdown = ctx.shutdown.clone();
        let members = Members {
            key: format!("sluice:members:{}:{}", self.group, self.stream),
            me: io.consumer.to_string(),
            ttl: self.member_ttl,
        };
        let (live_tx, mut live_rx) = tokio::sync::watch::channel::<Live>(None);
        let beats = tokio::spawn(heartbeat(
            members,
            io.target.clone(),
            reader.clone(),
            ctx.name.clone(),
            ctx.metrics.clone(),
            live_tx,
            ctx.shutdown.clone(),
        ));
        let mut owned: Vec<Partition> = Vec::new();
        let mut clock = Clock::default();
        let mut idle = IDLE_FIRST;
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let me = io.consumer;
        while !shutdown.is_set() {
            // Ours: what the last heartbeat says, if it is recent enough
            // that the others see us alive too; nothing otherwise.
            let live = live_rx.borrow_and_update().clone();
            let mine = match &live {
                Some((at, live)) if at.elapsed() < self.member_ttl => {
                    owned_partitions(live, me, names.len())
                }
                _ => Vec::new(),
            };
            let now: Vec<&str> = owned.iter().map(|p| &*p.stream).collect();
            let want: Vec<&str> = mine.iter().map(|&p| names[p].as_str()).collect();
            if now != want {
                let members = live.as_ref().map_or(0, |(_, l)| l.len());
                tracing::info!(target: LOG_TARGET, source = %ctx.name, members, partitions = ?mine, "partitions of this process");
                let mut next = Vec::with_capacity(mine.len());
                for &p in &mine {
                    match owned.iter().position(|o| *o.stream == *names[p]) {
                        Some(i) => next.push(owned.swap_remove(i)),
                        // Taken over (at a start too: others may have had
                        // it): what they hold pending goes first.
                        None => next.push(Partition::new(&names[p], self.claim_idle, true)),
                    }
                }
                owned = next;
            }
            if owned.is_empty() {
                // No partitions (yet): wait for the next heartbeat.
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = live_rx.changed() => {}
                    _ = tokio::time::sleep(self.member_ttl / 3) => {}
                }
                continue;
            }
            let reads = owned.iter_mut().map(|part| {
                let mut c = reader.clone();
                async move { self.step(io, part, &mut c, None).await }
            });
            let results = futures_util::future::join_all(reads).await;
            let mut any = false;
            let mut lost = None;
            let mut read = Vec::new();
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(Some(got)) => {
                        any = true;
                        read.push((i, got));
                    }
                    Ok(None) => {}
                    Err(e) => lost = Some((i, e)),
                }
            }
            for (i, (entries, deliveries)) in read {
                if owned[i].failing.take().is_some() {
                    tracing::info!(target: LOG_TARGET, source = %ctx.name, stream = %owned[i].stream, "reading again");
                    ctx.metrics.set_down(None);
                    backoff.reset();
                }
                let stream = owned[i].stream.clone();
                self.deliver(io, &stream, entries, &deliveries, &mut clock)
                    .await?;
            }
            if let Some((i, e)) = lost {
                if !self.recover(io, reader, &mut owned, i, e).await {
                    break;
                }
                any = false;
                idle = IDLE_MAX;
            }
            if any {
                idle = IDLE_FIRST;
                continue;
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(idle) => {}
            }
            idle = (idle * 2).min(IDLE_MAX);
        }
        let _ = beats.await;
        Ok(())
    }

    /// After a failed read of `parts[i]`: reconnect (all partitions re-read
    /// what they have pending), recreate a lost group, or note the error
    /// (retried with backoff, logged once per kind). False on shutdown.
    pub(super) async fn recover(
        &self,
        io: &Io<'_>,
        reader: &mut Conn,
        parts: &mut [Partition],
        i: usize,
        e: redis::RedisError,
    ) -> bool {
        let ctx = io.ctx;
        if lost_connection(&e) {
            tracing::warn!(target: LOG_TARGET, source = %ctx.name, error = %e, "redis read failed; reconnecting");
            ctx.metrics
                .set_down(Some(format!("redis read failed: {e}")));
            let Some(c) = connect(io.target, ctx, "reader").await else {
                return false;
            };
            *reader = c;
            // A read whose reply was lost with the connection left entries
            // pending for us: read those again.
            for p in parts.iter_mut() {
                p.pending_cursor = Some("0".to_string());
            }
            ComponentMetrics::add(&ctx.metrics.reconnects, 1);
            ctx.metrics.set_down(None);
            tracing::info!(target: LOG_TARGET, source = %ctx.name, "reconnected to redis");
            return true;
        }
        let part = &mut parts[i];
        let kind = e.code().unwrap_or("error").to_string();
        let reason = if kind == "NOGROUP" {
            format!(
                "the stream `{}` or its group `{}` is gone (deleted, or Redis restarted without persistence); recreating it at `{}`",
                part.stream, self.group, self.start
            )
        } else {
            format!("redis refused the read of {}: {e}", part.stream)
        };
        if part.failing.as_deref() != Some(kind.as_str()) {
            tracing::warn!(target: LOG_TARGET, source = %ctx.name, error = %e, "{reason}");
            part.failing = Some(kind.clone());
        }
        ctx.metrics.set_down(Some(reason));
        ComponentMetrics::add(&ctx.metrics.retries, 1);
        if kind == "NOGROUP" {
            match self.create_group(reader, &part.stream).await {
                Ok(()) => {
                    part.pending_cursor = Some("0".to_string());
                    part.claim_cursor = None;
                    part.failing = None;
                    tracing::info!(target: LOG_TARGET, source = %ctx.name, stream = %part.stream, group = %self.group, start = %self.start, "consumer group recreated");
                }
                Err(e) => {
                    tracing::debug!(target: LOG_TARGET, source = %ctx.name, error = %e, "recreating the group failed")
                }
            }
        }
        true
    }
}
