//! [`SessionStore`] on Redis: the Node server's session hash, compared and set by a script.

use std::collections::HashMap;

use fred::prelude::{
    ClientLike, HashesInterface, ListInterface, PubsubInterface, SortedSetsInterface,
};
use heartbeat_core::live::LiveStream;
use heartbeat_core::sessions::SessionWrite;
use heartbeat_core::sessions::analytics::{Index, IndexKey, IndexWrite};
use heartbeat_core::sessions::notice::SessionNotice;
use heartbeat_core::sessions::{AnalyticsStore, Loaded, NoticeBus, Retention};
use heartbeat_core::store::{Commit, StoreHealth};
use heartbeat_core::{Id, PlayRecord, ProgressRecord, SessionStore, StoreError, UserSessions};

use heartbeat_core::store::kit::encode;

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

fn retention_millis(limits: &Retention) -> String {
    limits
        .retention_secs
        .saturating_mul(1000)
        .max(1)
        .to_string()
}

/// What an applied commit writes besides the session hash, encoded once for either way
/// of writing it (inside the commit script, or by scripts of their own on a cluster).
struct Extras {
    /// Retention of progress and history, in milliseconds.
    ttl: String,
    /// Asset field and progress JSON for the user's progress hash.
    progress: Option<[String; 2]>,
    /// `<user>:<asset>` and the position, for the Node server's `user_progress` hash.
    node_progress: Option<[String; 2]>,
    /// History entries (oldest first) and the cap.
    history: Vec<String>,
    cap: String,
    /// The analytics index part (`lua/analytics_index.lua`), or none when the write
    /// moves nothing and refuses nothing.
    index: Option<Vec<String>>,
}

impl RedisStore {
    fn extras(
        &self,
        user: &Id,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<Extras, StoreError> {
        let progress = match &write.progress {
            Some((asset, progress)) => Some((asset, progress, encode(progress)?)),
            None => None,
        };
        let ttl = retention_millis(limits);
        Ok(Extras {
            index: index_args(&write.index, &ttl, self.inner.index_trims.sweep_now()),
            ttl,
            node_progress: progress.as_ref().filter(|_| self.inner.node_progress).map(
                |(asset, progress, _)| [format!("{user}:{asset}"), progress.progress.to_string()],
            ),
            progress: progress.map(|(asset, _, json)| [asset.to_string(), json]),
            history: write.ended.iter().map(encode).collect::<Result<_, _>>()?,
            cap: limits.history_cap.max(1).to_string(),
        })
    }
}

impl Extras {
    /// The arguments `COMMIT_ALL` reads after the session part.
    fn push_args(self, args: &mut Vec<String>) {
        args.push(self.ttl);
        for pair in [self.progress, self.node_progress] {
            match pair {
                Some(pair) => {
                    args.push("1".to_owned());
                    args.extend(pair);
                }
                None => args.push("0".to_owned()),
            }
        }
        args.push(self.history.len().to_string());
        args.push(self.cap);
        args.extend(self.history);
        // An empty ttl: nothing to write in the indexes.
        args.extend(self.index.unwrap_or_else(|| vec![String::new()]));
    }

    /// Writes them with one script per key (Redis Cluster).
    async fn write(self, store: &RedisStore, user: &Id) -> Result<(), StoreError> {
        let (scripts, keys) = (&store.inner.scripts, &store.inner.keys);
        let hashes = [
            (keys.progress(user), self.progress),
            (keys.node_progress(), self.node_progress),
        ];
        let progress = async {
            for (key, pair) in hashes {
                if let Some(pair) = pair {
                    let args = std::iter::once(self.ttl.clone()).chain(pair).collect();
                    store
                        .eval::<()>("progress write", &scripts.hash_set, vec![key], args)
                        .await?;
                }
            }
            Ok(())
        };
        let history = async {
            if self.history.is_empty() {
                return Ok(());
            }
            let args = [self.ttl.clone(), self.cap.clone()]
                .into_iter()
                .chain(self.history.iter().cloned())
                .collect();
            store
                .eval::<()>(
                    "history write",
                    &scripts.list_push,
                    vec![keys.history(user)],
                    args,
                )
                .await
        };
        let index = async {
            let Some(args) = &self.index else {
                return Ok(());
            };
            let keys = vec![
                keys.analytics(Index::Finished),
                keys.analytics(Index::Refusals),
            ];
            store
                .eval::<()>(
                    "analytics index write",
                    &scripts.analytics_index,
                    keys,
                    args.clone(),
                )
                .await
        };
        let (progress, history, index) = tokio::join!(progress, history, index);
        progress.and(history).and(index)
    }
}

impl SessionStore for RedisStore {
    type Version = HashSnapshot;

    async fn load(&self, user: &Id) -> Result<Loaded<HashSnapshot>, StoreError> {
        let fields: HashMap<String, String> = self
            .client()
            .hgetall(self.inner.keys.sessions(user))
            .await
            .map_err(|error| store_error("session load", error))?;
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
        let keys = &self.inner.keys;
        if self.inner.single_script {
            self.extras(user, write, limits)?.push_args(&mut args);
            let applied: i64 = self
                .eval(
                    "session commit",
                    &self.inner.scripts.commit_all,
                    vec![
                        keys.sessions(user),
                        keys.progress(user),
                        keys.history(user),
                        keys.node_progress(),
                        keys.analytics(Index::Finished),
                        keys.analytics(Index::Refusals),
                    ],
                    args,
                )
                .await?;
            return Ok(if applied == 1 {
                Commit::Applied
            } else {
                Commit::Conflict
            });
        }
        let applied: i64 = self
            .eval(
                "session commit",
                &self.inner.scripts.commit_sessions,
                vec![keys.sessions(user)],
                args,
            )
            .await?;
        if applied != 1 {
            return Ok(Commit::Conflict);
        }
        // Boxed: the cluster path joins three script calls, and held inline their futures
        // would triple the size of every commit's future (≈ 18 KB, copied into its box on
        // each heartbeat on one server too).
        Box::pin(self.extras(user, write, limits)?.write(self, user)).await?;
        Ok(Commit::Applied)
    }

    async fn progress(&self, user: &Id, asset: &Id) -> Result<Option<ProgressRecord>, StoreError> {
        let json: Option<String> = self
            .client()
            .hget(self.inner.keys.progress(user), asset.to_string())
            .await
            .map_err(|error| store_error("progress read", error))?;
        json.map(|json| decode("a progress entry", &json))
            .transpose()
    }

    async fn history(&self, user: &Id, limit: usize) -> Result<Vec<PlayRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let entries: Vec<String> = self
            .client()
            .lrange(self.inner.keys.history(user), 0, stop)
            .await
            .map_err(|error| store_error("history read", error))?;
        entries
            .iter()
            .map(|json| decode("a history entry", json))
            .collect()
    }

    async fn ping(&self) -> Result<StoreHealth, StoreError> {
        use fred::interfaces::ClusterInterface;
        let client = self.client();
        let Some(cluster) = client.cached_cluster_state() else {
            let _: String = client
                .ping(None)
                .await
                .map_err(|error| store_error("ping", error))?;
            return Ok(StoreHealth::Up);
        };
        // On a cluster every master is asked: while one fails over, the others still
        // serve their users, and the instance is still worth sending requests to.
        let masters = cluster.unique_primary_nodes();
        let total = masters.len();
        let answers =
            futures_util::future::join_all(masters.into_iter().map(|master| async {
                client.with_cluster_node(master).ping::<String>(None).await
            }))
            .await;
        let answering = answers.iter().filter(|answer| answer.is_ok()).count();
        match answers.into_iter().find_map(Result::err) {
            None => Ok(StoreHealth::Up),
            Some(error) if answering == 0 => Err(store_error("ping", error)),
            Some(_) => {
                // The routing table names a master that does not answer: read it again,
                // so that a promoted replica is the one asked next time. In the
                // background: while fred reconnects, that waits as long as the failover,
                // and a probe must answer now.
                let client = client.clone();
                tokio::spawn(async move {
                    let _ = client.sync_cluster().await;
                });
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
        let found: Vec<String> = self
            .client()
            .zrangebylex(
                self.inner.keys.analytics(index),
                format!("({after}"),
                format!("({before}"),
                Some((0, count)),
            )
            .await
            .map_err(|error| store_error("analytics index read", error))?;
        Ok(found
            .into_iter()
            .filter_map(IndexKey::from_stored)
            .collect())
    }

    async fn index_count(&self, index: Index, from: &IndexKey) -> Result<u64, StoreError> {
        self.client()
            .zlexcount(self.inner.keys.analytics(index), format!("[{from}"), "+")
            .await
            .map_err(|error| store_error("analytics index count", error))
    }
}

impl NoticeBus for RedisStore {
    async fn notify(&self, notice: &SessionNotice) -> Result<(), StoreError> {
        let _: i64 = self
            .client()
            .publish(self.inner.keys.notice_channel(), encode(notice)?)
            .await
            .map_err(|error| store_error("session notice", error))?;
        Ok(())
    }

    fn watch(&self, user: &Id, session_id: &str) -> LiveStream<SessionNotice> {
        self.inner.live.notices.watch(user, session_id)
    }
}
