//! [`SessionStore`] on Redis: the Node server's session hash, compared and set by a script.

use std::collections::HashMap;

use fred::prelude::{ClientLike, HashesInterface, ListInterface};
use heartbeat_core::decision::SessionWrite;
use heartbeat_core::store::{Commit, Loaded, Retention};
use heartbeat_core::{Id, PlayRecord, ProgressRecord, SessionStore, StoreError, UserSessions};

use crate::{RedisStore, decode, encode, store_error};

/// A user's session hash as loaded, field by field: the compare-and-set checks it is
/// unchanged, whoever wrote it (this store or the Node server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSnapshot(Vec<(String, String)>);

fn retention_millis(limits: &Retention) -> String {
    limits
        .retention_secs
        .saturating_mul(1000)
        .max(1)
        .to_string()
}

impl RedisStore {
    /// The arguments `COMMIT_ALL` reads after the session part.
    fn push_progress_and_history(
        &self,
        user: &Id,
        write: &SessionWrite,
        limits: &Retention,
        args: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        args.push(retention_millis(limits));
        match &write.progress {
            Some((asset, progress)) => {
                args.extend(["1".to_owned(), asset.to_string(), encode(progress)?]);
                if self.inner.node_progress {
                    args.extend([
                        "1".to_owned(),
                        format!("{user}:{asset}"),
                        progress.progress.to_string(),
                    ]);
                } else {
                    args.push("0".to_owned());
                }
            }
            None => args.extend(["0".to_owned(), "0".to_owned()]),
        }
        args.push(write.ended.len().to_string());
        args.push(limits.history_cap.max(1).to_string());
        for ended in &write.ended {
            args.push(encode(ended)?);
        }
        Ok(())
    }

    async fn write_progress_and_history(
        &self,
        user: &Id,
        write: &SessionWrite,
        limits: &Retention,
    ) -> Result<(), StoreError> {
        let ttl = retention_millis(limits);
        let scripts = &self.inner.scripts;
        let keys = &self.inner.keys;
        let progress = async {
            let Some((asset, progress)) = &write.progress else {
                return Ok(());
            };
            let args = vec![ttl.clone(), asset.to_string(), encode(progress)?];
            self.eval::<()>(
                "progress write",
                &scripts.hash_set,
                vec![keys.progress(user)],
                args,
            )
            .await?;
            if self.inner.node_progress {
                let args = vec![
                    ttl.clone(),
                    format!("{user}:{asset}"),
                    progress.progress.to_string(),
                ];
                self.eval::<()>(
                    "progress write",
                    &scripts.hash_set,
                    vec![keys.node_progress()],
                    args,
                )
                .await?;
            }
            Ok(())
        };
        let history = async {
            if write.ended.is_empty() {
                return Ok(());
            }
            let mut args = vec![ttl.clone(), limits.history_cap.max(1).to_string()];
            for ended in &write.ended {
                args.push(encode(ended)?);
            }
            self.eval::<()>(
                "history write",
                &scripts.list_push,
                vec![keys.history(user)],
                args,
            )
            .await
        };
        let (progress, history) = tokio::join!(progress, history);
        progress.and(history)
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
        match &write.upsert {
            Some((session, record)) => {
                args.push("1".to_owned());
                args.push(session.clone());
                args.push(record.to_json());
            }
            None => args.push("0".to_owned()),
        }
        args.push(write.keep_millis.max(1).to_string());
        let keys = &self.inner.keys;
        if self.inner.single_script {
            self.push_progress_and_history(user, write, limits, &mut args)?;
            let applied: i64 = self
                .eval(
                    "session commit",
                    &self.inner.scripts.commit_all,
                    vec![
                        keys.sessions(user),
                        keys.progress(user),
                        keys.history(user),
                        keys.node_progress(),
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
        self.write_progress_and_history(user, write, limits).await?;
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

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .client()
            .ping(None)
            .await
            .map_err(|error| store_error("ping", error))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Durability is Redis's own (RDB/AOF); nothing is buffered here.
        Ok(())
    }
}
