//! The Lua scripts (`src/lua/*.lua`). The keys a script writes share one hash slot; the
//! scripts that read an analytics index kept per slot read the keys one node serves.

use fred::types::scripts::Script;

/// The whole commit in one round trip, its keys all in the slot of the user's session
/// hash: the session hash (`KEYS[1]`), then, only if it applied, progress (`KEYS[2]`),
/// history (`KEYS[3]`), the analytics indexes (`KEYS[4]`, `KEYS[5]`) and, on one server
/// only, the Node server's progress hash (`KEYS[6]`). `ARGV`: the counts in one argument,
/// then the strings they count (`lua/commit_all.lua`, written by `sessions.rs`
/// `CommitArgs`). 1 applied, 0 changed.
const COMMIT_ALL: &str = include_str!("lua/commit_all.lua");

/// The first entries of an index kept per hash slot (the analytics indexes on a cluster),
/// from the parts one node serves, merged. `ARGV`: min, max, limit, keys. Returns the
/// members in order.
const MERGE_RANGE: &str = include_str!("lua/merge_range.lua");

/// How many entries of an analytics index kept per hash slot one node holds from an
/// entry on. `ARGV`: from, keys.
const INDEX_COUNT_KEYS: &str = include_str!("lua/index_count_keys.lua");

/// Increments a counter, not below a floor, and refreshes its TTL. `ARGV`: ttl ms, floor.
/// Returns the new value.
const NEXT_ID: &str = include_str!("lua/next_id.lua");

/// Stores a new job and indexes it (owner; due time when `KEYS[3]`, the due index, is
/// given), unless a job with its id is stored. `KEYS`: job, owner's jobs, [due index];
/// `ARGV`: job JSON, ttl ms, id, due time or `''`. 1 stored, 0 the id is taken.
const CREATE_JOB: &str = include_str!("lua/create_job.lua");

/// Adds a member to a sorted set and refreshes its TTL. `ARGV`: ttl ms, score, member.
const INDEX_ADD: &str = include_str!("lua/index_add.lua");

/// Compare-and-set of a job, dropping its due entry when `KEYS[2]` (the due index) is
/// given. `ARGV`: expected, new value, ttl ms, id. 1 applied, 0 changed.
const COMPARE_AND_SET: &str = include_str!("lua/compare_and_set.lua");

/// Publishes a job event: draws its id, keeps it in the owner's bounded history and
/// publishes it, atomically (so every subscriber sees one owner's events in id order).
/// `KEYS`: event counter, owner's events. `ARGV`: channel, job JSON, history bound, ttl ms,
/// the id floor of now ([`EventId::floor_now`](heartbeat_core::jobs::EventId::floor_now)),
/// `PUBLISH` or `SPUBLISH`.
/// Returns the event id.
const PUBLISH_EVENT: &str = include_str!("lua/publish_event.lua");

/// The migration's merges (`migrate-redis`), each on today's key (`KEYS[1]`) with the
/// earlier build's key's PTTL first in `ARGV`, which the key keeps if it is the longer.
const MIGRATE_HASH_FIELDS: &str = concat!(
    include_str!("lua/keep_longest_ttl.lua"),
    include_str!("lua/migrate_hash_fields.lua")
);
/// See [`MIGRATE_HASH_FIELDS`].
const MIGRATE_LIST: &str = concat!(
    include_str!("lua/keep_longest_ttl.lua"),
    include_str!("lua/migrate_list.lua")
);
/// See [`MIGRATE_HASH_FIELDS`].
const MIGRATE_ZSET: &str = concat!(
    include_str!("lua/keep_longest_ttl.lua"),
    include_str!("lua/migrate_zset.lua")
);

/// Deletes a string only if it holds what was copied (the migration's move of a job).
const DELETE_IF: &str = include_str!("lua/delete_if.lua");

/// Sets a string only if it holds what was read (`''`: absent). `ARGV`: expected, new
/// value, ttl ms (`''`: none). 1 set, 0 changed.
const REPLACE_IF: &str = include_str!("lua/replace_if.lua");

pub(crate) struct Scripts {
    pub(crate) commit_all: Script,
    pub(crate) merge_range: Script,
    pub(crate) index_count_keys: Script,
    pub(crate) next_id: Script,
    pub(crate) create_job: Script,
    pub(crate) index_add: Script,
    pub(crate) compare_and_set: Script,
    pub(crate) publish_event: Script,
    pub(crate) migrate_hash_fields: Script,
    pub(crate) migrate_list: Script,
    pub(crate) migrate_zset: Script,
    pub(crate) delete_if: Script,
    pub(crate) replace_if: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            commit_all: Script::from_lua(COMMIT_ALL),
            merge_range: Script::from_lua(MERGE_RANGE),
            index_count_keys: Script::from_lua(INDEX_COUNT_KEYS),
            next_id: Script::from_lua(NEXT_ID),
            create_job: Script::from_lua(CREATE_JOB),
            index_add: Script::from_lua(INDEX_ADD),
            compare_and_set: Script::from_lua(COMPARE_AND_SET),
            publish_event: Script::from_lua(PUBLISH_EVENT),
            migrate_hash_fields: Script::from_lua(MIGRATE_HASH_FIELDS),
            migrate_list: Script::from_lua(MIGRATE_LIST),
            migrate_zset: Script::from_lua(MIGRATE_ZSET),
            delete_if: Script::from_lua(DELETE_IF),
            replace_if: Script::from_lua(REPLACE_IF),
        }
    }

    /// Every script.
    pub(crate) fn all(&self) -> [&Script; 13] {
        [
            &self.commit_all,
            &self.merge_range,
            &self.index_count_keys,
            &self.next_id,
            &self.create_job,
            &self.index_add,
            &self.compare_and_set,
            &self.publish_event,
            &self.migrate_hash_fields,
            &self.migrate_list,
            &self.migrate_zset,
            &self.delete_if,
            &self.replace_if,
        ]
    }
}
