//! The Lua scripts (`src/lua/*.lua`): each touches one key (or keys sharing a hash tag).

use fred::clients::Client;
use fred::types::scripts::Script;

/// Compare-and-set of a user's session hash (the start of both commit scripts).
///
/// `ARGV`: n, n × (field, value) as loaded, r, r × field to delete, u, u × (field, value)
/// to set, keep milliseconds. Returns 0 when the hash changed; otherwise falls through with
/// `i` at the next argument.
macro_rules! compare_and_apply_sessions {
    () => {
        include_str!("lua/compare_and_apply_sessions.lua")
    };
}

/// The analytics indexes' part of a commit (SPEC §3.9).
macro_rules! analytics_index {
    () => {
        include_str!("lua/analytics_index.lua")
    };
}

/// The session hash only (Redis Cluster: progress and history keys live in other slots
/// and are written by their own scripts after an applied commit). 1 applied, 0 changed.
const COMMIT_SESSIONS: &str = concat!(compare_and_apply_sessions!(), "return 1\n");

/// The whole commit in one round trip (a single Redis server): the session hash
/// (`KEYS[1]`), then, only if it applied, progress (`KEYS[2]`), history (`KEYS[3]`) and the
/// Node server's progress hash (`KEYS[4]`). After the session arguments, `ARGV` has:
/// retention ms, p, p × (asset, progress JSON), q, q × (field, value) for Node's hash,
/// e, history cap, e × entry (oldest first), then the analytics index part
/// ([`ANALYTICS_INDEX`], with its two keys as `KEYS[5]` and `KEYS[6]`). 1 applied, 0
/// changed.
const COMMIT_ALL: &str = concat!(
    compare_and_apply_sessions!(),
    include_str!("lua/commit_all_tail.lua"),
    analytics_index!()
);

/// The analytics indexes' part of a commit on its own (Redis Cluster: the two index keys
/// share a hash tag). `KEYS`: finished, refusals; `ARGV` as in `lua/analytics_index.lua`.
const ANALYTICS_INDEX: &str = concat!("local i = 1\n", analytics_index!());

/// Sets hash fields and the key's TTL. `ARGV`: ttl ms, then (field, value) pairs.
const HASH_SET: &str = include_str!("lua/hash_set.lua");

/// Pushes entries (oldest first) to the head of a capped list. `ARGV`: ttl ms, cap, entries.
const LIST_PUSH: &str = include_str!("lua/list_push.lua");

/// Increments a counter and refreshes its TTL. `ARGV`: ttl ms. Returns the new value.
const NEXT_ID: &str = include_str!("lua/next_id.lua");

/// Adds a member to a sorted set and refreshes its TTL. `ARGV`: ttl ms, score, member.
const INDEX_ADD: &str = include_str!("lua/index_add.lua");

/// Compare-and-set of a string. `ARGV`: expected, new value, ttl ms. 1 applied, 0 changed.
const COMPARE_AND_SET: &str = include_str!("lua/compare_and_set.lua");

/// Publishes a job event: draws its id, keeps it in the owner's bounded history and
/// publishes it, atomically (so every subscriber sees one owner's events in id order).
/// `KEYS`: event counter, owner's events. `ARGV`: channel, job JSON, history bound, ttl ms,
/// the id floor of now ([`EventId::floor_now`](heartbeat_core::jobs::EventId::floor_now)).
/// Returns the event id.
const PUBLISH_EVENT: &str = include_str!("lua/publish_event.lua");

pub(crate) struct Scripts {
    pub(crate) commit_sessions: Script,
    pub(crate) commit_all: Script,
    pub(crate) analytics_index: Script,
    pub(crate) hash_set: Script,
    pub(crate) list_push: Script,
    pub(crate) next_id: Script,
    pub(crate) index_add: Script,
    pub(crate) compare_and_set: Script,
    pub(crate) publish_event: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            commit_sessions: Script::from_lua(COMMIT_SESSIONS),
            commit_all: Script::from_lua(COMMIT_ALL),
            analytics_index: Script::from_lua(ANALYTICS_INDEX),
            hash_set: Script::from_lua(HASH_SET),
            list_push: Script::from_lua(LIST_PUSH),
            next_id: Script::from_lua(NEXT_ID),
            index_add: Script::from_lua(INDEX_ADD),
            compare_and_set: Script::from_lua(COMPARE_AND_SET),
            publish_event: Script::from_lua(PUBLISH_EVENT),
        }
    }

    fn all(&self) -> [&Script; 9] {
        [
            &self.commit_sessions,
            &self.commit_all,
            &self.analytics_index,
            &self.hash_set,
            &self.list_push,
            &self.next_id,
            &self.index_add,
            &self.compare_and_set,
            &self.publish_event,
        ]
    }

    /// Loads every script (they are reloaded by themselves after a Redis restart).
    pub(crate) async fn load(&self, client: &Client) -> Result<(), fred::error::Error> {
        for script in self.all() {
            script.load(client).await?;
        }
        Ok(())
    }
}
