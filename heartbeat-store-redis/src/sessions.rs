//! [`SessionStore`] on Redis: the Node server's session hash, compared and set by a script.

use std::collections::HashMap;
use std::sync::Arc;

use fred::prelude::ClientLike;
use heartbeat_core::live::LiveStream;
use heartbeat_core::sessions::SessionWrite;
use heartbeat_core::sessions::analytics::{Index, IndexKey, IndexReads};
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

/// The arguments of `lua/commit_all.lua`: the counts, written into one argument, and the
/// strings they count, in the script's order.
struct CommitArgs {
    counts: String,
    strings: Vec<String>,
}

impl CommitArgs {
    /// Appends a count (written with `itoa`: no formatting machinery per number).
    fn count(&mut self, n: impl itoa::Integer) {
        if !self.counts.is_empty() {
            self.counts.push(' ');
        }
        self.counts.push_str(itoa::Buffer::new().format(n));
    }

    fn into_args(self) -> Vec<String> {
        let mut args = Vec::with_capacity(1 + self.strings.len());
        args.push(self.counts);
        args.extend(self.strings);
        args
    }
}

impl RedisStore {
    /// The arguments of `COMMIT_ALL` for `write` on the sessions `version` holds.
    fn commit_args(
        &self,
        user: &Id,
        version: &HashSnapshot,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<Vec<String>, StoreError> {
        let mut args = CommitArgs {
            counts: String::with_capacity(64),
            strings: Vec::with_capacity(
                2 * version.0.len() + write.remove.len() + 2 * write.upserts.len() + 10,
            ),
        };
        let strings = &mut args.strings;
        for (field, value) in &version.0 {
            strings.push(field.clone());
            strings.push(value.clone());
        }
        strings.extend(write.remove.iter().cloned());
        for (session, record) in &write.upserts {
            strings.push(session.clone());
            strings.push(record.to_json());
        }
        if let Some((asset, progress)) = &write.progress {
            strings.push(asset.to_string());
            strings.push(encode(progress)?);
        }
        let node_progress = write.progress.as_ref().filter(|_| self.inner.node_progress);
        if let Some((asset, progress)) = node_progress {
            strings.push(format!("{user}:{asset}"));
            strings.push(progress.progress.to_string());
        }
        for entry in &write.ended {
            strings.push(encode(entry)?);
        }
        let index = &write.index;
        let indexed = !index.finished.is_empty() || index.refusal.is_some();
        if indexed {
            for step in &index.finished {
                strings.push(step.from.as_ref().map_or("", IndexKey::as_str).to_owned());
                strings.push(step.to.as_str().to_owned());
            }
            strings.push(
                index
                    .refusal
                    .as_ref()
                    .map_or("", IndexKey::as_str)
                    .to_owned(),
            );
            // The entries past the retention are dropped only every few thousand commits:
            // a trim costs a range operation, and the entries are few.
            strings.push(match index.keep_from {
                Some(keep_from) if self.inner.index_trims.sweep_now() => {
                    IndexKey::floor(keep_from).as_str().to_owned()
                }
                _ => String::new(),
            });
        }
        let retention = limits.retention_secs.saturating_mul(1000).max(1);
        args.count(version.0.len());
        args.count(write.remove.len());
        args.count(write.upserts.len());
        args.count(write.keep_millis.max(1));
        args.count(retention);
        args.count(usize::from(write.progress.is_some()));
        args.count(usize::from(node_progress.is_some()));
        args.count(write.ended.len());
        args.count(limits.history_cap.max(1));
        args.count(usize::from(indexed));
        args.count(if indexed { index.finished.len() } else { 0 });
        Ok(args.into_args())
    }
}

impl SessionStore for RedisStore {
    type Version = HashSnapshot;

    async fn load(&self, user: &Id) -> Result<Loaded<HashSnapshot>, StoreError> {
        let key = self.inner.layout.user_sessions(user);
        let fields: HashMap<String, String> = self
            .run("session load", &key, "HGETALL", vec![key.as_str().into()])
            .await?;
        let fields: Vec<(String, String)> = fields.into_iter().collect();
        let sessions =
            UserSessions::from_stored(fields.iter().map(|(id, json)| (id.as_str(), json.as_str())));
        Ok(Loaded {
            sessions: Arc::new(sessions),
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
        let args = self.commit_args(user, version, write, limits)?;
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
