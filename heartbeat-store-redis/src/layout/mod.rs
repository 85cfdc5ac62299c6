//! The Redis layout: every key name, which keys a read consults, and the channel and
//! command (`PUBLISH` or `SPUBLISH`) events and notices travel on (see the crate docs for
//! the table). One [`Layout`] value answers all of it, from the topology and the layout
//! version the Redis holds ([`version`]); the names earlier builds wrote sit in
//! [`earlier`], read only until `migrate-redis` has moved them.
//!
//! A user's own keys (progress, history) and their analytics index entries are written by
//! the same script as the Node server's session key, so on a Redis Cluster they must hash
//! to its slot. Node's key name cannot change (a mixed fleet shares it), and a user id may
//! hold braces that move its hash tag, so the slot is computed from the session key's name
//! as Redis computes it, and our keys carry a short tag that hashes to that slot
//! ([`slot_tag`]): `hb_progress:{<tag>}:<user>`.

pub(crate) mod earlier;
pub(crate) mod version;

use std::fmt::Display;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use heartbeat_core::Id;
use heartbeat_core::jobs::{JobId, Owner};
use heartbeat_core::sessions::analytics::Index;

/// Hash slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16_384;

/// For each hash slot, the first text of the sequence `0, 1, …, 9, a, …, z, 10, …` (base
/// 36) that hashes to it. Key names depend on it: it must never change.
static SLOT_TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut tags = vec![String::new(); usize::from(SLOTS)];
    let mut missing = tags.len();
    let mut n: u32 = 0;
    while missing > 0 {
        let tag = base36(n);
        let slot = usize::from(slot_of(tag.as_bytes()));
        if tags[slot].is_empty() {
            tags[slot] = tag;
            missing -= 1;
        }
        n += 1;
    }
    tags
});

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut text = Vec::new();
    loop {
        text.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    text.reverse();
    String::from_utf8(text).expect("ASCII digits")
}

/// The hash slot of a key, by Redis Cluster's rule (the text of its first non-empty
/// `{…}` if any, else the whole name).
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    fred::util::redis_keyslot(key)
}

/// A short tag (`[0-9a-z]+`) that hashes to `slot`: a key named `…{<tag>}…` (with no `{`
/// before it) lives in that slot.
pub(crate) fn slot_tag(slot: u16) -> &'static str {
    &SLOT_TAGS[usize::from(slot % SLOTS)]
}

/// How keys are spread: what the scripts may touch together, and where events travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server (or Sentinel's master): one analytics index key per index
    /// (`{hb_history_index}:<index>`) and one due index, read with one command; events
    /// and notices on one channel each that every instance hears (`PUBLISH`).
    OneServer,
    /// A Redis Cluster (or a proxy that routes by slot): every script's keys in one slot,
    /// the analytics index in a part per slot (`hb_index:{<tag>}:<index>`), the due index
    /// in [`DUE_SHARDS`], and events and notices on a sharded channel per slot
    /// (`SPUBLISH`), heard only by the instances watching there.
    Cluster,
}

/// Every key name, which keys each read consults, and where events travel.
pub(crate) struct Layout {
    namespace: String,
    topology: Topology,
    /// Whether keys an earlier build wrote may still be there (layout version 1, until
    /// `migrate-redis` has moved them): reads consult their names too ([`earlier`]).
    reads_earlier: AtomicBool,
}

/// Where a job's due entry lives ([`Layout::due_entry`]).
pub(crate) enum DueEntry {
    /// In this key, which the job's own script writes.
    InJobScript(String),
    /// In this key, in another slot: written by a command of its own.
    Beside(String),
}

/// A user's keys that one commit script writes, all in the slot of the session key.
pub(crate) struct UserKeys {
    pub(crate) sessions: String,
    pub(crate) progress: String,
    pub(crate) history: String,
    pub(crate) finished: String,
    pub(crate) refusals: String,
}

impl Layout {
    /// The layout of `topology`, reading earlier builds' names too until
    /// [`migrated`](Self::migrated) says otherwise.
    pub(crate) fn new(namespace: String, topology: Topology) -> Self {
        Self {
            namespace,
            topology,
            reads_earlier: AtomicBool::new(true),
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn topology(&self) -> Topology {
        self.topology
    }

    /// Whether reads still consult earlier builds' names (layout version 1).
    pub(crate) fn reads_earlier(&self) -> bool {
        self.reads_earlier.load(Ordering::Relaxed)
    }

    /// The Redis holds only this build's names (layout version 2): from now on each read
    /// consults one key. Never undone.
    pub(crate) fn migrated(&self) {
        self.reads_earlier.store(false, Ordering::Relaxed);
    }

    /// What analytics index reads cost here.
    pub(crate) fn index_reads(&self) -> heartbeat_core::sessions::analytics::IndexReads {
        use heartbeat_core::sessions::analytics::IndexReads;
        match self.topology {
            Topology::OneServer => IndexReads::Cheap,
            Topology::Cluster => IndexReads::Spread,
        }
    }

    /// The Node server's key: `<ns>hb_sessions:<user>:active_sessions`.
    pub(crate) fn sessions(&self, user: &(impl Display + ?Sized)) -> String {
        self.sessions_of(&user.to_string())
    }

    /// [`sessions`](Self::sessions) of a user's id, without formatting it (every load).
    pub(crate) fn user_sessions(&self, user: &Id) -> String {
        user.with_text(|user| self.sessions_of(user))
    }

    /// Key names are joined with `concat` (sized once), not `format!`: a heartbeat names
    /// six of them.
    fn sessions_of(&self, user: &str) -> String {
        [
            self.namespace.as_str(),
            "hb_sessions:",
            user,
            ":active_sessions",
        ]
        .concat()
    }

    /// Every key a commit of `user` writes (the Node server's progress hash aside).
    pub(crate) fn user(&self, user: &Id) -> UserKeys {
        user.with_text(|user| {
            let sessions = self.sessions_of(user);
            let slot = slot_of(sessions.as_bytes());
            let [finished, refusals] =
                [Index::Finished, Index::Refusals].map(|index| match self.topology {
                    Topology::OneServer => self.one_index(index),
                    Topology::Cluster => self.slot_index(index, slot),
                });
            UserKeys {
                progress: self.tagged_of("hb_progress", slot, user),
                history: self.tagged_of("hb_history", slot, user),
                sessions,
                finished,
                refusals,
            }
        })
    }

    /// `<ns><kind>:{<tag of slot>}:<user>`.
    fn tagged(&self, kind: &str, slot: u16, user: &(impl Display + ?Sized)) -> String {
        self.tagged_of(kind, slot, &user.to_string())
    }

    fn tagged_of(&self, kind: &str, slot: u16, user: &str) -> String {
        [
            self.namespace.as_str(),
            kind,
            ":{",
            slot_tag(slot),
            "}:",
            user,
        ]
        .concat()
    }

    /// A user's progress hash: asset → progress record.
    pub(crate) fn progress(&self, user: &(impl Display + ?Sized)) -> String {
        self.tagged("hb_progress", self.user_slot(user), user)
    }

    /// A user's history list, newest first.
    pub(crate) fn history(&self, user: &(impl Display + ?Sized)) -> String {
        self.tagged("hb_history", self.user_slot(user), user)
    }

    /// The Node server's progress hash.
    pub(crate) fn node_progress(&self) -> String {
        format!("{}user_progress", self.namespace)
    }

    /// A job: in the slot its id names ([`job_slot`]).
    pub(crate) fn job(&self, id: JobId) -> String {
        format!(
            "{}hb_job:{{{}}}:{id}",
            self.namespace,
            slot_tag(job_slot(id))
        )
    }

    /// The counter job ids are drawn from, one per hash slot: the owner's.
    pub(crate) fn job_counter(&self, owner: &(impl Display + ?Sized)) -> String {
        format!("{}hb_jobs:{{{}}}:last_id", self.namespace, owner_tag(owner))
    }

    /// An owner's jobs, by id.
    pub(crate) fn owner_jobs(&self, owner: &(impl Display + ?Sized)) -> String {
        format!(
            "{}hb_jobs:{{{}}}:owner:{owner}",
            self.namespace,
            owner_tag(owner)
        )
    }

    /// The due index in one key (one server).
    pub(crate) fn one_due_jobs(&self) -> String {
        format!("{}hb_jobs:due", self.namespace)
    }

    /// The shard of the due index that jobs of owners in `slot` go to on a cluster
    /// ([`Topology::Cluster`]): one of [`DUE_SHARDS`], each in a slot of its own,
    /// spread over the slot range (so over the masters).
    pub(crate) fn due_shard(&self, slot: u16) -> String {
        let shard = slot % DUE_SHARDS;
        format!(
            "{}hb_jobs:due:{{{}}}",
            self.namespace,
            slot_tag(shard * (SLOTS / DUE_SHARDS))
        )
    }

    /// Where the due entry of a job of `slot` lives. One server: in the one key, which
    /// the job's own script writes. A cluster: in a shard (another slot), written beside.
    pub(crate) fn due_entry(&self, slot: u16) -> DueEntry {
        match self.topology {
            Topology::OneServer => DueEntry::InJobScript(self.one_due_jobs()),
            Topology::Cluster => DueEntry::Beside(self.due_shard(slot)),
        }
    }

    /// Every key of the due index a poll reads.
    pub(crate) fn due_keys(&self) -> Vec<String> {
        match self.topology {
            Topology::OneServer => vec![self.one_due_jobs()],
            Topology::Cluster => {
                let mut keys: Vec<String> =
                    (0..DUE_SHARDS).map(|shard| self.due_shard(shard)).collect();
                keys.extend(self.earlier_due_jobs());
                keys
            }
        }
    }

    /// The counter event ids are drawn from, one per hash slot: the owner's slot, so that
    /// one script draws the id and stores the event on a cluster, and owners' events
    /// spread over every master. Ids never go back for an owner (its slot's counter, which
    /// also never falls behind the time floor).
    pub(crate) fn event_counter(&self, owner: &(impl Display + ?Sized)) -> String {
        format!(
            "{}hb_events:{{{}}}:last_id",
            self.namespace,
            owner_tag(owner)
        )
    }

    /// An owner's newest events, by id.
    pub(crate) fn owner_events(&self, owner: &(impl Display + ?Sized)) -> String {
        format!(
            "{}hb_events:{{{}}}:owner:{owner}",
            self.namespace,
            owner_tag(owner)
        )
    }

    /// An analytics index (SPEC §3.9) kept in one key ([`Topology::OneServer`]); both
    /// indexes share a hash tag.
    pub(crate) fn one_index(&self, index: Index) -> String {
        [
            self.namespace.as_str(),
            "{hb_history_index}:",
            index_name(index),
        ]
        .concat()
    }

    /// The part of an analytics index kept in `slot` ([`Topology::Cluster`]).
    pub(crate) fn slot_index(&self, index: Index, slot: u16) -> String {
        [
            self.namespace.as_str(),
            "hb_index:{",
            slot_tag(slot),
            "}:",
            index_name(index),
        ]
        .concat()
    }

    /// The pub/sub channel of job events every instance listens on (one server).
    pub(crate) fn event_channel(&self) -> String {
        format!("{}hb_job_events", self.namespace)
    }

    /// The sharded channel of the job events of owners in `slot` (Redis Cluster): an
    /// instance listens only on the slots of the owners its streams watch.
    pub(crate) fn slot_event_channel(&self, slot: u16) -> String {
        format!("{}hb_job_events:{{{}}}", self.namespace, slot_tag(slot))
    }

    /// The pub/sub channel of session notices (SPEC §3.7), which every instance listens on
    /// (one server).
    pub(crate) fn notice_channel(&self) -> String {
        format!("{}hb_session_notices", self.namespace)
    }

    /// The sharded channel of the session notices of users in `slot` (Redis Cluster): an
    /// instance listens only on the slots of the users its streams watch.
    pub(crate) fn slot_notice_channel(&self, slot: u16) -> String {
        format!(
            "{}hb_session_notices:{{{}}}",
            self.namespace,
            slot_tag(slot)
        )
    }

    /// Where `owner`'s job events go, and with which command.
    pub(crate) fn event_route(&self, owner: &Owner) -> (String, &'static str) {
        match self.topology {
            Topology::OneServer => (self.event_channel(), "PUBLISH"),
            Topology::Cluster => (self.slot_event_channel(owner_slot(owner)), "SPUBLISH"),
        }
    }

    /// Where `user`'s session notices go, and with which command.
    pub(crate) fn notice_route(&self, user: &Id) -> (String, &'static str) {
        match self.topology {
            Topology::OneServer => (self.notice_channel(), "PUBLISH"),
            Topology::Cluster => (self.slot_notice_channel(self.user_slot(user)), "SPUBLISH"),
        }
    }

    /// The channels every instance listens on from its start: one server's two; on a
    /// cluster, where earlier builds publish ([`earlier`]), or none.
    pub(crate) fn shared_channels(&self) -> Vec<String> {
        match self.topology {
            Topology::OneServer => vec![self.event_channel(), self.notice_channel()],
            Topology::Cluster => self.earlier_channels(),
        }
    }

    /// The slot of `user`'s keys (the slot of the Node server's session key).
    pub(crate) fn user_slot(&self, user: &(impl Display + ?Sized)) -> u16 {
        slot_of(self.sessions(user).as_bytes())
    }
}

/// The slot of an owner's keys (the slot of the owner's name).
pub(crate) fn owner_slot(owner: &(impl Display + ?Sized)) -> u16 {
    slot_of(owner.to_string().as_bytes())
}

fn owner_tag(owner: &(impl Display + ?Sized)) -> &'static str {
    slot_tag(owner_slot(owner))
}

/// Shards of the due index on a cluster. A poll of the JOB_TIME simulator reads every
/// shard (a command each), and a job's due entry is written beside the job, not in its
/// script: a few keys spread over the masters, not one per slot.
pub(crate) const DUE_SHARDS: u16 = 16;

/// The first job id drawn from a counter in the owner's slot: such an id is
/// `n × 16384 + slot`, so a job's key is found from its id alone, and ids of one owner
/// increase. Ids below were drawn by earlier builds from one counter (`hb_jobs:last_id`);
/// 2^34 leaves their counter 17 billion jobs of room, and keeps ids far below 2^53 (exact
/// in a JavaScript number) for 5 × 10^11 jobs per slot.
pub(crate) const FIRST_TAGGED_JOB_ID: u64 = 1 << 34;

/// The slot a job's key is in: `id mod 16384`, the owner's slot for ids this build draws
/// (an earlier build's job, moved by `migrate-redis`, keeps its id in whatever slot that
/// names).
pub(crate) fn job_slot(id: JobId) -> u16 {
    (id.0 % u64::from(SLOTS)) as u16
}

/// The id of the `n`-th job drawn in `slot` (counting from 1).
pub(crate) fn job_id(slot: u16, n: u64) -> Option<JobId> {
    let first = FIRST_TAGGED_JOB_ID / u64::from(SLOTS);
    n.checked_add(first)?
        .checked_mul(u64::from(SLOTS))?
        .checked_add(u64::from(slot))
        .map(JobId)
}

fn index_name(index: Index) -> &'static str {
    match index {
        Index::Finished => "finished",
        Index::Refusals => "refusals",
    }
}

/// Why a namespace cannot be used with [`Topology::Cluster`] keys, if it cannot: a `{`
/// in it would decide the slot of every key instead of the slot tags.
pub(crate) fn check_cluster_namespace(namespace: &str) -> Result<(), String> {
    if namespace.contains(['{', '}']) {
        return Err(format!(
            "the namespace {namespace:?} holds a brace: on a Redis Cluster a {{…}} in the \
             namespace would put every key in one hash slot; choose one without braces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for slot in 0..SLOTS {
            let tag = slot_tag(slot);
            assert!(tag.bytes().all(|b| b.is_ascii_alphanumeric()), "{tag}");
            assert_eq!(slot_of(tag.as_bytes()), slot, "{tag}");
        }
    }

    /// Key names of stored data: a change of the sequence would orphan every tagged key.
    #[test]
    fn the_tags_are_the_ones_stored_keys_were_named_with() {
        // 12182 is the slot Redis documents for `foo` (CLUSTER KEYSLOT foo).
        let tags: Vec<&str> = [0, 1, 866, 12_182, 16_383].map(slot_tag).to_vec();
        assert_eq!(tags, ["1bz", "emj", "9l2", "foo", "hia"]);
        let keys = Layout::new("prod:".into(), Topology::Cluster).user(&Id::Int(13));
        assert_eq!(keys.progress, "prod:hb_progress:{5kh}:13");
        assert_eq!(keys.history, "prod:hb_history:{5kh}:13");
        assert_eq!(keys.finished, "prod:hb_index:{5kh}:finished");
    }

    /// The due shards sit in slots spread evenly over the range, so a cluster's masters
    /// share them (a 3-master cluster: 6, 5 and 5).
    #[test]
    fn the_due_shards_spread_over_the_slot_range() {
        let keys = Layout::new("prod:".into(), Topology::Cluster);
        let slots: Vec<u16> = keys
            .due_keys()
            .iter()
            .take(usize::from(DUE_SHARDS))
            .map(|key| slot_of(key.as_bytes()))
            .collect();
        let expected: Vec<u16> = (0..DUE_SHARDS).map(|s| s * (SLOTS / DUE_SHARDS)).collect();
        assert_eq!(slots, expected);
        // Every owner's shard is one of them.
        let owner = Owner::new("alice").unwrap();
        assert!(
            keys.due_keys()
                .contains(&keys.due_shard(owner_slot(&owner)))
        );
    }

    #[test]
    fn a_namespace_with_braces_is_refused_on_a_cluster() {
        assert!(check_cluster_namespace("prod:").is_ok());
        let error = check_cluster_namespace("{prod}:").unwrap_err();
        assert!(error.contains("without braces"), "{error}");
    }

    proptest! {
        /// Whatever the user id (braces included), a user's keys share the session key's slot.
        #[test]
        fn a_users_keys_share_the_session_keys_slot(
            user in prop_oneof![any::<i64>().prop_map(Id::Int), "\\PC{1,40}".prop_map(Id::Str)],
            namespace in "[a-z:]{0,8}",
        ) {
            let keys = Layout::new(namespace, Topology::Cluster).user(&user);
            let slot = slot_of(keys.sessions.as_bytes());
            for key in [&keys.progress, &keys.history, &keys.finished, &keys.refusals] {
                prop_assert_eq!(slot_of(key.as_bytes()), slot, "{}", key);
            }
        }
    }
}
