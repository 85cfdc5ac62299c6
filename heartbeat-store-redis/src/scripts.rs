//! The Lua scripts: each touches one key (or keys sharing a hash tag).

use fred::clients::Client;
use fred::types::scripts::Script;

/// Compare-and-set of a user's session hash (the start of both commit scripts).
///
/// `ARGV`: n, n × (field, value) as loaded, r, r × field to delete, u, u × (field, value)
/// to set, keep milliseconds. Returns 0 when the hash changed; otherwise falls through with
/// `i` at the next argument.
macro_rules! compare_and_apply_sessions {
    () => {
        r"
local hash = KEYS[1]
local n = tonumber(ARGV[1])
if redis.call('HLEN', hash) ~= n then return 0 end
local i = 2
for _ = 1, n do
  if redis.call('HGET', hash, ARGV[i]) ~= ARGV[i + 1] then return 0 end
  i = i + 2
end
local removals = tonumber(ARGV[i]); i = i + 1
for _ = 1, removals do
  redis.call('HDEL', hash, ARGV[i]); i = i + 1
end
local upserts = tonumber(ARGV[i]); i = i + 1
for _ = 1, upserts do
  redis.call('HSET', hash, ARGV[i], ARGV[i + 1]); i = i + 2
end
if redis.call('EXISTS', hash) == 1 then redis.call('PEXPIRE', hash, ARGV[i]) end
i = i + 1
"
    };
}

/// The session hash only (Redis Cluster: progress and history keys live in other slots
/// and are written by their own scripts after an applied commit). 1 applied, 0 changed.
const COMMIT_SESSIONS: &str = concat!(compare_and_apply_sessions!(), "return 1\n");

/// The whole commit in one round trip (a single Redis server): the session hash
/// (`KEYS[1]`), then, only if it applied, progress (`KEYS[2]`), history (`KEYS[3]`) and the
/// Node server's progress hash (`KEYS[4]`). After the session arguments, `ARGV` has:
/// retention ms, p, p × (asset, progress JSON), q, q × (field, value) for Node's hash,
/// e, history cap, e × entry (oldest first). 1 applied, 0 changed.
const COMMIT_ALL: &str = concat!(
    compare_and_apply_sessions!(),
    r"
local retention = ARGV[i]; i = i + 1
local progress = tonumber(ARGV[i]); i = i + 1
for _ = 1, progress do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2
  redis.call('PEXPIRE', KEYS[2], retention)
end
local node = tonumber(ARGV[i]); i = i + 1
for _ = 1, node do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2
  redis.call('PEXPIRE', KEYS[4], retention)
end
local ended = tonumber(ARGV[i]); local cap = tonumber(ARGV[i + 1]); i = i + 2
if ended > 0 then
  for _ = 1, ended do
    redis.call('LPUSH', KEYS[3], ARGV[i]); i = i + 1
  end
  redis.call('LTRIM', KEYS[3], 0, cap - 1)
  redis.call('PEXPIRE', KEYS[3], retention)
end
return 1
"
);

/// Sets hash fields and the key's TTL. `ARGV`: ttl ms, then (field, value) pairs.
const HASH_SET: &str = r"
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Pushes entries (oldest first) to the head of a capped list. `ARGV`: ttl ms, cap, entries.
const LIST_PUSH: &str = r"
for i = 3, #ARGV do redis.call('LPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Increments a counter and refreshes its TTL. `ARGV`: ttl ms. Returns the new value.
const NEXT_ID: &str = r"
local id = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return id
";

/// Adds a member to a sorted set and refreshes its TTL. `ARGV`: ttl ms, score, member.
const INDEX_ADD: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Compare-and-set of a string. `ARGV`: expected, new value, ttl ms. 1 applied, 0 changed.
const COMPARE_AND_SET: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Publishes a job event: draws its id, keeps it in the owner's bounded history and
/// publishes it, atomically (so every subscriber sees one owner's events in id order).
/// `KEYS`: event counter, owner's events. `ARGV`: channel, job JSON, history bound, ttl ms.
/// Returns the event id.
const PUBLISH_EVENT: &str = r#"
local id = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local event = '{"id":' .. string.format('%d', id) .. ',"job":' .. ARGV[2] .. '}'
redis.call('ZADD', KEYS[2], id, event)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], event)
return id
"#;

pub(crate) struct Scripts {
    pub(crate) commit_sessions: Script,
    pub(crate) commit_all: Script,
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
            hash_set: Script::from_lua(HASH_SET),
            list_push: Script::from_lua(LIST_PUSH),
            next_id: Script::from_lua(NEXT_ID),
            index_add: Script::from_lua(INDEX_ADD),
            compare_and_set: Script::from_lua(COMPARE_AND_SET),
            publish_event: Script::from_lua(PUBLISH_EVENT),
        }
    }

    fn all(&self) -> [&Script; 8] {
        [
            &self.commit_sessions,
            &self.commit_all,
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
