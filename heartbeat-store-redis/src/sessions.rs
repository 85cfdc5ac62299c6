//! [`SessionStore`] on Redis: the Node server's session hash, compared and set by a script.

use std::collections::HashMap;

use fred::prelude::ClientLike;
use heartbeat_core::live::LiveStream;
use heartbeat_core::sessions::SessionWrite;
use heartbeat_core::sessions::analytics::{Index, IndexKey, IndexReads, IndexWrite};
use heartbeat_core::sessions::notice::SessionNotice;
use heartbeat_core::sessions::{AnalyticsStore, Loaded, NoticeBus, Retention};
use heartbeat_core::store::{Commit, StoreHealth};
use heartbeat_core::{Id, PlayRecord, ProgressRecord, SessionStore, StoreError, UserSessions};

use heartbeat_core::store::kit::encode;

use crate::layout::Topology;
use crate::{RedisStore, decode, store_error};

/// A user's session hash as loaded, field by field: the compare-and-set checks it is
/// unchanged, whoever wrote it (this store or the Node server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSnapshot(Vec<(String, String)>);

/// The arguments of `lua/analytics_index.lua`; none when there is nothing to add. The
/// entries past the retention are dropped only when `trim` (every few thousand commits:
/// a trim costs a range operation, and the entries are few).
fn index_args(index: &IndexWrite, ttl: &str, trim: bool) -> Option<Vec<String>> {
    if index.finished.is_empty() && index.refusal.is_none() {
        return None;
    }
    let mut args = Vec::with_capacity(4 + 2 * index.finished.len());
    args.push(ttl.to_owned());
    args.push(index.finished.len().to_string());
    for step in &index.finished {
        args.push(
            step.from
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        );
        args.push(step.to.to_string());
    }
    args.push(
        index
            .refusal
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    );
    args.push(if trim {
        index.keep_from.to_string()
    } else {
        String::new()
    });
    Some(args)
}

/// The first `limit` of two lists of play records, each newest first, newest first (by
/// when the session ended, or was last seen if it has not); a record in both (while the
/// migration copies one list into the other) once.
pub(crate) fn newest_first<T: PartialEq>(
    a: Vec<T>,
    b: Vec<T>,
    limit: usize,
    record: impl Fn(&T) -> &PlayRecord,
) -> Vec<T> {
    if b.is_empty() {
        return a;
    }
    let when = |item: &T| {
        let record = record(item);
        record.ended_at.unwrap_or(record.last_heartbeat)
    };
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    let mut merged = Vec::with_capacity(limit.min(a.len() + b.len()));
    while merged.len() < limit {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => when(x) >= when(y),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let Some(next) = (if take_a { a.next() } else { b.next() }) else {
            break;
        };
        let duplicate = merged
            .iter()
            .rev()
            .take_while(|earlier| when(earlier) == when(&next))
            .any(|earlier| *earlier == next);
        if !duplicate {
            merged.push(next);
        }
    }
    merged
}

fn retention_millis(limits: &Retention) -> String {
    limits
        .retention_secs
        .saturating_mul(1000)
        .max(1)
        .to_string()
}

impl RedisStore {
    /// Pushes the arguments `COMMIT_ALL` reads after the session part: what an applied
    /// commit writes besides the session hash (retention, progress, the Node server's
    /// progress, history, the analytics index part).
    fn push_commit_tail(
        &self,
        args: &mut Vec<String>,
        user: &Id,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<(), StoreError> {
        let progress = match &write.progress {
            Some((asset, progress)) => Some([asset.to_string(), encode(progress)?]),
            None => None,
        };
        let node_progress = write
            .progress
            .as_ref()
            .filter(|_| self.inner.node_progress)
            .map(|(asset, progress)| [format!("{user}:{asset}"), progress.progress.to_string()]);
        let ttl = retention_millis(limits);
        let index = index_args(&write.index, &ttl, self.inner.index_trims.sweep_now());
        args.push(ttl);
        for pair in [progress, node_progress] {
            match pair {
                Some(pair) => {
                    args.push("1".to_owned());
                    args.extend(pair);
                }
                None => args.push("0".to_owned()),
            }
        }
        args.push(write.ended.len().to_string());
        args.push(limits.history_cap.max(1).to_string());
        for entry in &write.ended {
            args.push(encode(entry)?);
        }
        // An empty ttl: nothing to write in the indexes.
        args.extend(index.unwrap_or_else(|| vec![String::new()]));
        Ok(())
    }
}

impl SessionStore for RedisStore {
    type Version = HashSnapshot;

    async fn load(&self, user: &Id) -> Result<Loaded<HashSnapshot>, StoreError> {
        let key = self.inner.layout.sessions(user);
        let fields: HashMap<String, String> = self
            .run("session load", &key, "HGETALL", vec![key.as_str().into()])
            .await?;
        let fields: Vec<(String, String)> = fields.into_iter().collect();
        let sessions =
            UserSessions::from_stored(fields.iter().map(|(id, json)| (id.as_str(), json.as_str())));
        Ok(Loaded {
            sessions,
            version: HashSnapshot(fields),
        })
    }

    async fn commit(
        &self,
        user: &Id,
        version: &HashSnapshot,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<Commit, StoreError> {
        let mut args = Vec::with_capacity(4 + 2 * version.0.len() + write.remove.len() + 2);
        args.push(version.0.len().to_string());
        for (field, value) in &version.0 {
            args.push(field.clone());
            args.push(value.clone());
        }
        args.push(write.remove.len().to_string());
        args.extend(write.remove.iter().cloned());
        args.push(write.upserts.len().to_string());
        for (session, record) in &write.upserts {
            args.push(session.clone());
            args.push(record.to_json());
        }
        args.push(write.keep_millis.max(1).to_string());
        self.push_commit_tail(&mut args, user, write, limits)?;
        let keys = self.inner.layout.user(user);
        let mut keys = vec![
            keys.sessions,
            keys.progress,
            keys.history,
            keys.finished,
            keys.refusals,
        ];
        if self.inner.node_progress {
            keys.push(self.inner.layout.node_progress());
        }
        let applied: i64 = self
            .eval("session commit", &self.inner.scripts.commit_all, keys, args)
            .await?;
        Ok(if applied == 1 {
            Commit::Applied
        } else {
            Commit::Conflict
        })
    }

    async fn progress(&self, user: &Id, asset: &Id) -> Result<Option<ProgressRecord>, StoreError> {
        let layout = &self.inner.layout;
        let read = |key: String| async move {
            let json: Option<String> = self
                .run(
                    "progress read",
                    &key,
                    "HGET",
                    vec![key.as_str().into(), asset.to_string().into()],
                )
                .await?;
            json.map(|json| decode::<ProgressRecord>("a progress entry", &json))
                .transpose()
        };
        let Some(earlier) = layout.earlier_progress(user) else {
            return read(layout.progress(user)).await;
        };
        // Layout version 1: the newer of the two names is the user's progress.
        let (tagged, untagged) =
            futures_util::try_join!(read(layout.progress(user)), read(earlier))?;
        Ok(match (tagged, untagged) {
            (Some(tagged), Some(untagged)) if untagged.updated_at > tagged.updated_at => {
                Some(untagged)
            }
            (tagged, untagged) => tagged.or(untagged),
        })
    }

    async fn history(&self, user: &Id, limit: usize) -> Result<Vec<PlayRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let layout = &self.inner.layout;
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let read = |key: String| async move {
            let entries: Vec<String> = self
                .run(
                    "history read",
                    &key,
                    "LRANGE",
                    vec![key.as_str().into(), 0.into(), stop.into()],
                )
                .await?;
            entries
                .iter()
                .map(|json| decode::<PlayRecord>("a history entry", json))
                .collect::<Result<Vec<_>, _>>()
        };
        let Some(earlier) = layout.earlier_history(user) else {
            return read(layout.history(user)).await;
        };
        // Layout version 1: the earlier name's entries merged in by when sessions ended.
        let (tagged, untagged) =
            futures_util::try_join!(read(layout.history(user)), read(earlier))?;
        Ok(newest_first(tagged, untagged, limit, |record| record))
    }

    async fn ping(&self) -> Result<StoreHealth, StoreError> {
        // On a cluster every master is asked: while one fails over, the others still
        // serve their users, and the instance is still worth sending requests to.
        let masters = self.inner.nodes.each_master();
        let total = masters.len();
        let answers = futures_util::future::join_all(
            masters.iter().map(|client| client.ping::<String>(None)),
        )
        .await;
        let answering = answers.iter().filter(|answer| answer.is_ok()).count();
        match answers.into_iter().find_map(Result::err) {
            None => Ok(StoreHealth::Up),
            Some(error) if answering == 0 => Err(store_error("ping", error)),
            Some(_) => {
                // A master does not answer: the routing table is read again, so that a
                // promoted replica is the one asked next time.
                self.inner.nodes.refresh_soon();
                Ok(StoreHealth::Degraded { answering, total })
            }
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Durability is Redis's own (RDB/AOF); nothing is buffered here.
        Ok(())
    }
}

impl AnalyticsStore for RedisStore {
    async fn index_range(
        &self,
        index: Index,
        after: &IndexKey,
        before: &IndexKey,
        limit: usize,
    ) -> Result<Vec<IndexKey>, StoreError> {
        if after >= before || limit == 0 {
            return Ok(Vec::new());
        }
        let count = i64::try_from(limit).unwrap_or(i64::MAX);
        let keys = &self.inner.layout;
        let found: Vec<String> = match keys.topology() {
            Topology::OneServer => {
                let key = keys.one_index(index);
                self.run(
                    "analytics index read",
                    &key,
                    "ZRANGEBYLEX",
                    vec![
                        key.as_str().into(),
                        format!("({after}").into(),
                        format!("({before}").into(),
                        "LIMIT".into(),
                        0.into(),
                        count.into(),
                    ],
                )
                .await?
            }
            Topology::Cluster => {
                self.merged_range(
                    "analytics index read",
                    (after.as_str(), before.as_str()),
                    limit,
                    |slot| keys.slot_index(index, slot),
                    keys.earlier_index(index),
                )
                .await?
            }
        };
        Ok(found
            .into_iter()
            .filter_map(IndexKey::from_stored)
            .collect())
    }

    async fn index_count(&self, index: Index, from: &IndexKey) -> Result<u64, StoreError> {
        match self.inner.layout.topology() {
            Topology::OneServer => {
                let key = self.inner.layout.one_index(index);
                self.run(
                    "analytics index count",
                    &key,
                    "ZLEXCOUNT",
                    vec![key.as_str().into(), format!("[{from}").into(), "+".into()],
                )
                .await
            }
            Topology::Cluster => {
                let keys = &self.inner.layout;
                let counts: Vec<u64> = self
                    .on_every_node(
                        "analytics index count",
                        &self.inner.scripts.index_count_keys,
                        vec![from.to_string()],
                        |slot| keys.slot_index(index, slot),
                        keys.earlier_index(index),
                    )
                    .await?;
                Ok(counts.into_iter().sum())
            }
        }
    }

    fn index_reads(&self) -> IndexReads {
        self.inner.layout.index_reads()
    }
}

impl NoticeBus for RedisStore {
    async fn notify(&self, notice: &SessionNotice) -> Result<(), StoreError> {
        let (channel, publish) = self.inner.layout.notice_route(&notice.user_id);
        let _: i64 = self
            .run(
                "session notice",
                &channel,
                publish,
                vec![channel.as_str().into(), encode(notice)?.into()],
            )
            .await?;
        Ok(())
    }

    async fn watch(
        &self,
        user: &Id,
        session_id: &str,
    ) -> Result<LiveStream<SessionNotice>, StoreError> {
        let stream = self.inner.live.notices.watch(user, session_id);
        self.listen(
            crate::bus::Carries::Notices,
            self.inner.layout.user_slot(user),
        )
        .await?;
        Ok(stream)
    }
}
