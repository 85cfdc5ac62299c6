//! The layout version: read when an instance starts and while it runs, and raised to 2 by
//! [`RedisStore::migrate_layout`] (`heartbeat-server migrate-redis`), which moves what
//! builds before the slot tag wrote to today's names ([`crate::layout::earlier`]).
//!
//! The migration scans every master. Each earlier key's content is merged into today's
//! key by a script on that key (today's entries win where both hold one: nothing writes
//! an earlier name any more, so today's is the newer), keeping the longer of the two
//! TTLs, and then the earlier key is deleted. A job moves with a copy and a delete that
//! happens only if the job is unchanged, and instances of layout version 1 read the
//! earlier name first, so an update racing the move is never lost. Every step can run
//! twice: the migration resumes from each master's saved scan cursor, and can run while
//! instances serve.

use std::collections::BTreeMap;
use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::prelude::Client;
use fred::types::{ClusterHash, CustomCommand, Value};
use heartbeat_core::jobs::Job;
use heartbeat_core::sessions::analytics::{FinishedEntry, Index, IndexKey, RefusalEntry, user_id};
use heartbeat_core::{PlayRecord, ProgressRecord, StoreError};

use crate::layout::earlier::{Earlier, EarlierKey, Spread};
use crate::layout::version::{self, Stored};
use crate::layout::{Layout, job_slot};
use crate::{RedisStore, decode, store_error};

/// How a migration runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrateOptions {
    /// Stop, resumable, once about this many keys have been moved (the scan batch under
    /// way is finished first); `None` runs to the end.
    pub max_keys: Option<u64>,
    /// Keys a `SCAN` call asks each master for (its `COUNT`).
    pub scan_count: u32,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            max_keys: None,
            scan_count: 1000,
        }
    }
}

/// What a run of [`RedisStore::migrate_layout`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Keys the scan looked at.
    pub scanned: u64,
    /// Earlier builds' keys moved to today's names.
    pub moved: u64,
    /// Entries moved out of the one-key indexes earlier builds kept on a cluster.
    pub spread_entries: u64,
    /// Keys named like an earlier build's that hold, or whose today's name holds, another
    /// type than heartbeat writes there: left as they are.
    pub skipped: Vec<String>,
    /// Whether the migration is complete: the layout version is 2 and no earlier name is
    /// read any more. `false` when [`MigrateOptions::max_keys`] stopped it; run it again
    /// to resume.
    pub finished: bool,
}

/// What became of an earlier key.
enum Outcome {
    /// Merged into today's key and deleted.
    Moved,
    /// Gone before it was read (expired, or moved by another run).
    Gone,
    /// It, or today's key, holds another type than heartbeat writes: left alone.
    Skipped,
}

/// Members of an earlier sorted set copied per round trip.
const ZSET_BATCH: i64 = 1000;

/// Entries read from a one-key index per step of its spreading.
const SPREAD_BATCH: i64 = 500;

/// Times a merge is tried again when today's key changed between its read and its write.
const MERGE_ATTEMPTS: usize = 16;

/// A version key's value as a person reads it.
fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "none".to_owned(), |value| format!("{value:?}"))
}

/// `text` with the glob characters of `SCAN … MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

async fn command<R: fred::types::FromValue>(
    client: &Client,
    what: &str,
    name: &'static str,
    args: Vec<Value>,
) -> Result<R, StoreError> {
    client
        .custom(
            CustomCommand::new_static(name, ClusterHash::Random, false),
            args,
        )
        .await
        .map_err(|error| store_error(what, error))
}

/// The id a master's scan cursor is saved under: its run id, so that a cursor is never
/// used on another process (after a failover or a restart the scan starts again).
async fn run_id(client: &Client) -> Result<String, StoreError> {
    let info: String = client
        .info(Some(fred::types::InfoKind::Server))
        .await
        .map_err(|error| store_error("migration", error))?;
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .ok_or_else(|| StoreError::backend("Redis INFO server has no run_id", "no run_id"))
}

impl RedisStore {
    /// Reads the layout version the Redis holds. When `claim_empty` (an instance
    /// starting), a Redis with no key at all gets [`version::CURRENT`]: a new deployment
    /// has nothing to migrate. Not later: a Redis emptied while instances of earlier
    /// builds still run (a restart without persistence) would then hide what they write.
    pub(crate) async fn read_layout(
        nodes: &crate::nodes::Nodes,
        layout: &Layout,
        claim_empty: bool,
    ) -> Result<Result<Stored, String>, fred::error::Error> {
        let key = layout.version_key();
        let value: Option<String> = nodes.run(&key, "GET", vec![key.as_str().into()]).await?;
        if value.is_some() || !claim_empty {
            return Ok(version::parse(value.as_deref()));
        }
        let mut empty = true;
        for (client, _) in nodes.masters()? {
            let keys: u64 = client
                .custom(
                    CustomCommand::new_static("DBSIZE", ClusterHash::Random, false),
                    Vec::<Value>::new(),
                )
                .await?;
            empty &= keys == 0;
        }
        if !empty {
            return Ok(Ok(Stored::Earlier));
        }
        let _: Value = nodes
            .run(
                &key,
                "SET",
                vec![
                    key.as_str().into(),
                    version::CURRENT.to_string().into(),
                    "NX".into(),
                ],
            )
            .await?;
        let value: Option<String> = nodes.run(&key, "GET", vec![key.as_str().into()]).await?;
        Ok(version::parse(value.as_deref()))
    }

    /// Whether this instance still reads earlier builds' names (layout version 1).
    pub fn reads_earlier_layout(&self) -> bool {
        self.inner.layout.reads_earlier()
    }

    /// Moves every key builds before the slot tag wrote to today's names, then sets the
    /// layout version to 2, after which every instance (within
    /// [`RedisConfig::layout_check_every`](crate::RedisConfig::layout_check_every)) reads
    /// one name per call. Safe while instances of this build serve, resumable (each
    /// master's scan cursor is saved in `hb_layout:migration`), and idempotent.
    ///
    /// Run it once no instance of a build before the slot tag serves: such a build keeps
    /// writing the earlier names, which nothing reads after the migration.
    ///
    /// # Errors
    ///
    /// A Redis error; what was moved stays moved, and a run again resumes.
    pub async fn migrate_layout(
        &self,
        options: &MigrateOptions,
    ) -> Result<MigrationReport, StoreError> {
        let layout = &self.inner.layout;
        let mut report = MigrationReport::default();
        let version_key = layout.version_key();
        let stored: Option<String> = self.on_key("GET", &version_key, Vec::new()).await?;
        // At version 2 too the scan runs: it moves what a build before the slot tag may
        // still have written since (and finds nothing otherwise).
        version::parse(stored.as_deref())
            .map_err(|reason| StoreError::backend(reason, "layout"))?;
        let over = |report: &MigrationReport| {
            options
                .max_keys
                .is_some_and(|max| report.moved + report.spread_entries >= max)
        };
        let masters = self
            .inner
            .nodes
            .masters()
            .map_err(|error| store_error("migration", error))?;
        let cursors = layout.migration_key();
        let pattern = format!("{}*", glob_escape(layout.namespace()));
        for (client, _) in masters {
            let id = run_id(&client).await?;
            let saved: Option<String> = self
                .on_key("HGET", &cursors, vec![id.as_str().into()])
                .await?;
            let mut cursor = match saved.as_deref() {
                Some("done") => continue,
                Some(cursor) => cursor.to_owned(),
                None => "0".to_owned(),
            };
            loop {
                let (next, keys): (String, Vec<Value>) = command(
                    &client,
                    "migration scan",
                    "SCAN",
                    vec![
                        cursor.as_str().into(),
                        "MATCH".into(),
                        pattern.as_str().into(),
                        "COUNT".into(),
                        i64::from(options.scan_count.max(1)).into(),
                    ],
                )
                .await?;
                for key in &keys {
                    report.scanned += 1;
                    let Some(earlier) = key.as_str().and_then(|key| layout.classify(&key)) else {
                        continue;
                    };
                    match self.move_earlier(&earlier).await.map_err(|error| {
                        StoreError::backend(format!("migrating `{}`: {error}", earlier.from), error)
                    })? {
                        Outcome::Moved => report.moved += 1,
                        Outcome::Gone => {}
                        Outcome::Skipped => report.skipped.push(earlier.from.clone()),
                    }
                }
                cursor = if next == "0" { "done".to_owned() } else { next };
                let _: i64 = self
                    .on_key(
                        "HSET",
                        &cursors,
                        vec![id.as_str().into(), cursor.as_str().into()],
                    )
                    .await?;
                if cursor == "done" {
                    break;
                }
                if over(&report) {
                    return Ok(report);
                }
            }
        }
        for (spread, key) in layout.earlier_spread_keys() {
            while self.spread_batch(spread, &key, &mut report).await? {
                if over(&report) {
                    return Ok(report);
                }
            }
        }
        // Only over the version read at the start: one written meanwhile (a newer build's)
        // is not overwritten.
        let set: i64 = self
            .on_key_script(
                &self.inner.scripts.replace_if,
                &version_key,
                vec![
                    stored.clone().unwrap_or_default(),
                    version::CURRENT.to_string(),
                    String::new(),
                ],
            )
            .await?;
        if set != 1 {
            let now: Option<String> = self.on_key("GET", &version_key, Vec::new()).await?;
            // Another run finished first: the same end.
            if version::parse(now.as_deref()) != Ok(Stored::Current) {
                return Err(StoreError::backend(
                    format!(
                        "the layout version changed during the migration (from {} to {}); \
                         it was left as it is: find out who wrote it before running the \
                         migration again",
                        shown(stored.as_deref()),
                        shown(now.as_deref())
                    ),
                    "layout version changed",
                ));
            }
        }
        let _: i64 = self.on_key("DEL", &cursors, Vec::new()).await?;
        self.layout_migrated().await;
        report.finished = true;
        Ok(report)
    }

    /// This instance reads one name per call from now on; on a cluster it stops
    /// listening where earlier builds publish.
    pub(crate) async fn layout_migrated(&self) {
        let earlier_channels = self.inner.layout.earlier_channels();
        self.inner.layout.migrated();
        if !earlier_channels.is_empty() {
            let _ = fred::prelude::PubsubInterface::unsubscribe(
                &self.inner.subscriber,
                earlier_channels,
            )
            .await;
        }
    }

    /// Runs `command` on `key`, with `rest` after it: each read and plain write of the
    /// migration.
    async fn on_key<R: fred::types::FromValue>(
        &self,
        command: &'static str,
        key: &str,
        rest: Vec<Value>,
    ) -> Result<R, StoreError> {
        let mut args = Vec::with_capacity(1 + rest.len());
        args.push(Value::from(key));
        args.extend(rest);
        self.run("migration", key, command, args).await
    }

    /// Runs a migration script on `key` (today's key it writes, or the one it deletes).
    async fn on_key_script<R: fred::types::FromValue>(
        &self,
        script: &fred::types::scripts::Script,
        key: &str,
        args: Vec<String>,
    ) -> Result<R, StoreError> {
        self.eval("migration write", script, vec![key.to_owned()], args)
            .await
    }

    /// The PTTL of `key` as the migration scripts take it: -1 for none; `None` when the
    /// key is gone.
    async fn pttl(&self, key: &str) -> Result<Option<i64>, StoreError> {
        let pttl: i64 = self.on_key("PTTL", key, Vec::new()).await?;
        Ok((pttl != -2).then_some(pttl))
    }

    /// Merges one earlier key into today's and deletes it, unless either holds another
    /// type than heartbeat writes there.
    async fn move_earlier(&self, earlier: &EarlierKey) -> Result<Outcome, StoreError> {
        let (from, to) = (earlier.from.as_str(), earlier.to.as_str());
        let expected = earlier.kind.redis_type();
        let found: String = self.on_key("TYPE", from, Vec::new()).await?;
        if found == "none" {
            return Ok(Outcome::Gone);
        }
        let today: String = self.on_key("TYPE", to, Vec::new()).await?;
        if found != expected || !(today == "none" || today == expected) {
            return Ok(Outcome::Skipped);
        }
        let Some(pttl) = self.pttl(from).await? else {
            return Ok(Outcome::Gone);
        };
        match earlier.kind {
            Earlier::Progress => self.merge_progress(from, to, pttl).await?,
            Earlier::History => self.merge_history(from, to, pttl).await?,
            Earlier::OwnerJobs | Earlier::OwnerEvents => self.merge_zset(from, to, pttl).await?,
            Earlier::Job => return self.move_job(from, to, pttl).await,
        }
        // UNLINK: a large key is freed in the background, not while Redis serves. Gone
        // already: another run moved it too (merges are idempotent), and counts it.
        let deleted: i64 = self.on_key("UNLINK", from, Vec::new()).await?;
        Ok(if deleted == 1 {
            Outcome::Moved
        } else {
            Outcome::Gone
        })
    }

    /// Adds every member of the sorted set `from` to `to`, a batch at a time (nothing
    /// writes `from` any more, so its ranks stay put).
    async fn merge_zset(&self, from: &str, to: &str, pttl: i64) -> Result<(), StoreError> {
        let mut start = 0_i64;
        loop {
            let pairs: Vec<(String, f64)> = self
                .on_key(
                    "ZRANGE",
                    from,
                    vec![
                        start.into(),
                        (start + ZSET_BATCH - 1).into(),
                        "WITHSCORES".into(),
                    ],
                )
                .await?;
            let read = i64::try_from(pairs.len()).unwrap_or(i64::MAX);
            self.add_to_zset(to, pttl, pairs).await?;
            if read < ZSET_BATCH {
                return Ok(());
            }
            start += ZSET_BATCH;
        }
    }

    async fn add_to_zset(
        &self,
        to: &str,
        pttl: i64,
        pairs: Vec<(String, f64)>,
    ) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut args = Vec::with_capacity(1 + 2 * pairs.len());
        args.push(pttl.to_string());
        for (member, score) in pairs {
            args.push(score.to_string());
            args.push(member);
        }
        let _: i64 = self
            .on_key_script(&self.inner.scripts.migrate_zset, to, args)
            .await?;
        Ok(())
    }

    /// Each asset's newer entry of the two hashes goes to today's.
    async fn merge_progress(&self, from: &str, to: &str, pttl: i64) -> Result<(), StoreError> {
        let read = |key| self.on_key::<BTreeMap<String, String>>("HGETALL", key, Vec::new());
        let earlier = read(from).await?;
        let updated_at = |json: &str| {
            decode::<ProgressRecord>("a progress entry", json)
                .ok()
                .map(|p| p.updated_at)
        };
        for _ in 0..MERGE_ATTEMPTS {
            let today = read(to).await?;
            let mut args = vec![pttl.to_string()];
            for (asset, json) in &earlier {
                // Today's entry stays unless the earlier one is readable and newer (an
                // unreadable earlier entry is kept only where today's has none).
                let expected = match today.get(asset) {
                    None => String::new(),
                    Some(current) => match (updated_at(current), updated_at(json)) {
                        (Some(today), Some(earlier)) if earlier > today => current.clone(),
                        (None, Some(_)) => current.clone(),
                        _ => continue,
                    },
                };
                args.extend([asset.clone(), expected, json.clone()]);
            }
            let wanted = (args.len() - 1) / 3;
            if wanted == 0 {
                return Ok(());
            }
            let set: usize = self
                .on_key_script(&self.inner.scripts.migrate_hash_fields, to, args)
                .await?;
            if set == wanted {
                return Ok(());
            }
        }
        Err(self.busy(to))
    }

    /// Both lists merged, newest first, each entry once, in place of today's.
    async fn merge_history(&self, from: &str, to: &str, pttl: i64) -> Result<(), StoreError> {
        let read = |key| self.on_key::<Vec<String>>("LRANGE", key, vec![0.into(), (-1).into()]);
        // Readable entries in time order; an unreadable one (kept, not lost) after them.
        let records = |entries: &[String]| {
            let (mut readable, mut unreadable) = (Vec::new(), Vec::new());
            for json in entries {
                match decode::<PlayRecord>("a history entry", json) {
                    Ok(record) => readable.push((record, json.clone())),
                    Err(_) => unreadable.push(json.clone()),
                }
            }
            (readable, unreadable)
        };
        let (earlier, earlier_unreadable) = records(&read(from).await?);
        for _ in 0..MERGE_ATTEMPTS {
            let today_entries = read(to).await?;
            let (today, mut unreadable) = records(&today_entries);
            unreadable.extend(
                earlier_unreadable
                    .iter()
                    .filter(|json| !today_entries.contains(json))
                    .cloned(),
            );
            let merged =
                crate::sessions::newest_first(today, earlier.clone(), usize::MAX, |(record, _)| {
                    record
                })
                .into_iter()
                .map(|(_, json)| json)
                .chain(unreadable);
            let mut args = Vec::with_capacity(3 + today_entries.len() + earlier.len());
            args.push(pttl.to_string());
            args.push(today_entries.first().cloned().unwrap_or_default());
            args.push(today_entries.len().to_string());
            args.extend(merged);
            let replaced: i64 = self
                .on_key_script(&self.inner.scripts.migrate_list, to, args)
                .await?;
            if replaced == 1 {
                return Ok(());
            }
        }
        Err(self.busy(to))
    }

    /// Copies a job to today's name and deletes the earlier one if it is unchanged.
    ///
    /// While the earlier key exists every instance reads and updates the job there (it is
    /// read first, and it is never written again once deleted). Today's value is replaced
    /// only if it is absent, or a version of the job the earlier one supersedes (a copy
    /// an interrupted run left), and only if it is still what was read: a run whose reads
    /// straddle another run's move then finds today's value newer, and leaves it.
    async fn move_job(&self, from: &str, to: &str, pttl: i64) -> Result<Outcome, StoreError> {
        let get = |key| self.on_key::<Option<String>>("GET", key, Vec::new());
        let supersedes = |json: &str, other: &str| {
            let read = |json: &str| decode::<Job>("a job", json).ok();
            matches!((read(json), read(other)), (Some(job), Some(other)) if job.supersedes(&other))
        };
        let mut pttl = pttl;
        for _ in 0..MERGE_ATTEMPTS {
            let Some(json) = get(from).await? else {
                return Ok(Outcome::Gone);
            };
            let today = get(to).await?;
            let replace = match &today {
                None => true,
                Some(today) => *today != json && supersedes(&json, today),
            };
            if replace {
                // A TTL read as 0 is about to end: not "no TTL".
                let ttl = if pttl < 0 {
                    String::new()
                } else {
                    pttl.max(1).to_string()
                };
                let set: i64 = self
                    .on_key_script(
                        &self.inner.scripts.replace_if,
                        to,
                        vec![today.unwrap_or_default(), json.clone(), ttl],
                    )
                    .await?;
                if set != 1 {
                    continue;
                }
            }
            let deleted: i64 = self
                .on_key_script(&self.inner.scripts.delete_if, from, vec![json])
                .await?;
            if deleted == 1 {
                return Ok(Outcome::Moved);
            }
            // Updated meanwhile (which refreshes its TTL), or moved by another run.
            match self.pttl(from).await? {
                Some(now) => pttl = now,
                None => return Ok(Outcome::Gone),
            }
        }
        Err(self.busy(from))
    }

    /// Moves a batch of entries of a one-key index to the parts this build reads;
    /// `false` when none was left.
    async fn spread_batch(
        &self,
        spread: Spread,
        key: &str,
        report: &mut MigrationReport,
    ) -> Result<bool, StoreError> {
        let Some(pttl) = self.pttl(key).await? else {
            return Ok(false);
        };
        let batch: Vec<(String, f64)> = self
            .on_key(
                "ZRANGE",
                key,
                vec![0.into(), (SPREAD_BATCH - 1).into(), "WITHSCORES".into()],
            )
            .await?;
        if batch.is_empty() {
            return Ok(false);
        }
        let layout = &self.inner.layout;
        let mut parts: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for (member, score) in &batch {
            let part = spread_part(layout, spread, member);
            parts
                .entry(part)
                .or_default()
                .push((member.clone(), *score));
        }
        for (part, pairs) in parts {
            self.add_to_zset(&part, pttl, pairs).await?;
        }
        let members = batch.iter().map(|(member, _)| Value::from(member.as_str()));
        let _: i64 = self.on_key("ZREM", key, members.collect()).await?;
        report.spread_entries += batch.len() as u64;
        Ok(true)
    }

    fn busy(&self, key: &str) -> StoreError {
        StoreError::unavailable(
            format!(
                "migration: `{key}` changed {MERGE_ATTEMPTS} times while it was merged; \
                 run the migration again (it resumes)"
            ),
            "busy key",
        )
    }
}

/// The part of this build's layout where an entry of an earlier one-key index goes: the
/// slot of its user (an analytics index) or of its job (the due jobs). An entry that
/// names neither goes to slot 0's part, where reads still find it.
fn spread_part(layout: &Layout, spread: Spread, member: &str) -> String {
    match spread {
        Spread::Index(index) => {
            let user = IndexKey::from_stored(member).and_then(|key| match index {
                Index::Finished => FinishedEntry::from_key(&key).map(|entry| entry.user),
                Index::Refusals => RefusalEntry::from_key(&key).map(|entry| entry.user_id),
            });
            let slot = user.map_or(0, |user| layout.user_slot(&user_id(&user)));
            layout.slot_index(index, slot)
        }
        Spread::DueJobs => {
            let slot = member
                .parse()
                .map_or(0, |id| job_slot(heartbeat_core::jobs::JobId(id)));
            layout.due_shard(slot)
        }
    }
}

/// Reads the layout version every `every` until it says the Redis is migrated, then
/// switches the store to one name per read.
pub(crate) fn start_watching(
    store: std::sync::Weak<crate::Inner>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        let mut warned = false;
        loop {
            ticks.tick().await;
            let Some(inner) = store.upgrade() else { return };
            let store = RedisStore { inner };
            match RedisStore::read_layout(&store.inner.nodes, &store.inner.layout, false).await {
                Ok(Ok(Stored::Current)) => {
                    store.layout_migrated().await;
                    tracing::info!(
                        "the Redis layout is version {}: earlier builds' key names are no \
                         longer read",
                        version::CURRENT
                    );
                    return;
                }
                Ok(Err(reason)) if !warned => {
                    tracing::error!("{reason}");
                    warned = true;
                }
                _ => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_is_matched_literally() {
        assert_eq!(glob_escape("prod:"), "prod:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
