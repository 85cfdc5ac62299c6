//! The key names builds before the slot tag wrote (layout version 1; see CHANGELOG), and
//! nothing writes any more. They are read only while the Redis may still hold them: until
//! `migrate-redis` has moved their content to today's names and set the layout version
//! to 2 ([`super::version`]). From then on every method here answers `None` (or nothing),
//! and each read consults one key.
//!
//! Removing layout version 1 is deleting this file and the merges of the stores that use
//! its answers (each a `match` on an `earlier_…` name); docs/operations.md says when.

use heartbeat_core::Id;
use heartbeat_core::jobs::{JobId, Owner};
use heartbeat_core::sessions::analytics::Index;

use super::{FIRST_TAGGED_JOB_ID, Layout, Topology, slot_tag};

/// What an earlier build's key holds, and so how it is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Earlier {
    /// A user's progress hash (`hb_progress:<user>`): merged, the newer entry of each asset.
    Progress,
    /// A user's history list (`hb_history:<user>`): merged by when sessions ended.
    History,
    /// An owner's job ids (`hb_jobs:owner:<owner>`): a sorted set, merged.
    OwnerJobs,
    /// An owner's newest events (`{hb_events}:owner:<owner>`): a sorted set, merged.
    OwnerEvents,
    /// A job with an id below 2^34 (`hb_job:<id>`): moved to the slot its id names.
    Job,
}

impl Earlier {
    /// The Redis type (as `TYPE` names it) an earlier build wrote under such a name.
    pub(crate) fn redis_type(self) -> &'static str {
        match self {
            Earlier::Progress => "hash",
            Earlier::History => "list",
            Earlier::OwnerJobs | Earlier::OwnerEvents => "zset",
            Earlier::Job => "string",
        }
    }
}

/// A key an earlier build wrote, found by a scan, and the key its content goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EarlierKey {
    /// What it holds.
    pub(crate) kind: Earlier,
    /// The earlier build's key.
    pub(crate) from: String,
    /// Today's key its content goes to.
    pub(crate) to: String,
}

/// A key of one name where an earlier build kept entries that this build spreads over
/// parts (a Redis Cluster): the analytics indexes and the due jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spread {
    /// An analytics index: each entry goes to the part of its user's slot.
    Index(Index),
    /// The due jobs: each goes to the shard of its job's slot.
    DueJobs,
}

impl Layout {
    fn while_earlier(&self, name: impl FnOnce() -> String) -> Option<String> {
        self.reads_earlier().then(name)
    }

    /// A user's progress hash as earlier builds named it.
    pub(crate) fn earlier_progress(&self, user: &Id) -> Option<String> {
        self.while_earlier(|| format!("{}hb_progress:{user}", self.namespace))
    }

    /// A user's history list as earlier builds named it.
    pub(crate) fn earlier_history(&self, user: &Id) -> Option<String> {
        self.while_earlier(|| format!("{}hb_history:{user}", self.namespace))
    }

    /// An owner's job ids as earlier builds indexed them.
    pub(crate) fn earlier_owner_jobs(&self, owner: &Owner) -> Option<String> {
        self.while_earlier(|| format!("{}hb_jobs:owner:{owner}", self.namespace))
    }

    /// An owner's events as earlier builds kept them, all in the `{hb_events}` slot.
    pub(crate) fn earlier_owner_events(&self, owner: &Owner) -> Option<String> {
        self.while_earlier(|| format!("{}{{hb_events}}:owner:{owner}", self.namespace))
    }

    /// Where an earlier build stored job `id` (ids below 2^34): read before
    /// [`job`](Layout::job), since the migration deletes it only once it is copied there.
    pub(crate) fn earlier_job(&self, id: JobId) -> Option<String> {
        (id.0 < FIRST_TAGGED_JOB_ID)
            .then(|| self.while_earlier(|| format!("{}hb_job:{id}", self.namespace)))
            .flatten()
    }

    /// The due index earlier builds kept in one key on a cluster too.
    pub(crate) fn earlier_due_jobs(&self) -> Option<String> {
        (self.topology == Topology::Cluster)
            .then(|| self.while_earlier(|| self.one_due_jobs()))
            .flatten()
    }

    /// Where an earlier build put the due entry of job `id` on a cluster (the one key),
    /// for an id it drew (below 2^34).
    pub(crate) fn earlier_due_entry(&self, id: JobId) -> Option<String> {
        (id.0 < FIRST_TAGGED_JOB_ID)
            .then(|| self.earlier_due_jobs())
            .flatten()
    }

    /// The analytics index earlier builds kept in one key on a cluster too.
    pub(crate) fn earlier_index(&self, index: Index) -> Option<String> {
        (self.topology == Topology::Cluster)
            .then(|| self.while_earlier(|| self.one_index(index)))
            .flatten()
    }

    /// The channels earlier builds publish on a cluster (the one server's).
    pub(crate) fn earlier_channels(&self) -> Vec<String> {
        if self.topology == Topology::Cluster && self.reads_earlier() {
            vec![self.event_channel(), self.notice_channel()]
        } else {
            Vec::new()
        }
    }

    /// What `key`, found by a scan of the namespace, is if an earlier build wrote it.
    ///
    /// A user key is today's when it reads `<kind>:{<tag>}:<user>` with the tag of that
    /// user's slot: an earlier build's key of a user whose id itself reads
    /// `{<tag>}:<user>` with that tag is taken for today's (and left alone).
    pub(crate) fn classify(&self, key: &str) -> Option<EarlierKey> {
        let name = key.strip_prefix(self.namespace.as_str())?;
        let (kind, to) = if let Some(user) = name.strip_prefix("hb_progress:") {
            (!self.is_tagged_user_key(user)).then(|| (Earlier::Progress, self.progress(user)))?
        } else if let Some(user) = name.strip_prefix("hb_history:") {
            (!self.is_tagged_user_key(user)).then(|| (Earlier::History, self.history(user)))?
        } else if let Some(owner) = name.strip_prefix("hb_jobs:owner:") {
            (Earlier::OwnerJobs, self.owner_jobs(owner))
        } else if let Some(owner) = name.strip_prefix("{hb_events}:owner:") {
            (Earlier::OwnerEvents, self.owner_events(owner))
        } else {
            // Only an id as earlier builds wrote it (no leading zeros): `hb_job:0041` was
            // never a job's key, and must not overwrite job 41.
            let text = name.strip_prefix("hb_job:")?;
            let id: u64 = text.parse().ok()?;
            (id < FIRST_TAGGED_JOB_ID && id.to_string() == text)
                .then(|| (Earlier::Job, self.job(JobId(id))))?
        };
        Some(EarlierKey {
            kind,
            from: key.to_owned(),
            to,
        })
    }

    /// Whether `rest` (after `hb_progress:` or `hb_history:`) is `{<tag>}:<user>` with the
    /// tag of that user's slot: a key of today's layout.
    fn is_tagged_user_key(&self, rest: &str) -> bool {
        rest.strip_prefix('{')
            .and_then(|rest| rest.split_once("}:"))
            .is_some_and(|(tag, user)| slot_tag(self.user_slot(user)) == tag)
    }

    /// The keys of one name whose entries an earlier build kept together and this build
    /// spreads (a cluster only; one server keeps these names).
    pub(crate) fn earlier_spread_keys(&self) -> Vec<(Spread, String)> {
        if self.topology != Topology::Cluster {
            return Vec::new();
        }
        [Index::Finished, Index::Refusals]
            .map(|index| (Spread::Index(index), self.one_index(index)))
            .into_iter()
            .chain([(Spread::DueJobs, self.one_due_jobs())])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_keys_are_told_from_todays() {
        let layout = Layout::new("ns:".into(), Topology::Cluster);
        let user = Id::Str("fan{42}".into());
        let today = [
            layout.progress(&user),
            layout.history(&user),
            layout.job(JobId(41)),
            layout.job(JobId(FIRST_TAGGED_JOB_ID + 5)),
            layout.owner_jobs("studio"),
            layout.owner_events("studio"),
            layout.one_index(Index::Finished),
            "ns:hb_job:0041".to_owned(),
            "ns:hb_job:+41".to_owned(),
            layout.sessions(&user),
            "other:hb_progress:7".to_owned(),
        ];
        for key in today {
            assert_eq!(layout.classify(&key), None, "{key}");
        }
        let cases = [
            ("ns:hb_progress:fan{42}", layout.progress(&user)),
            ("ns:hb_history:fan{42}", layout.history(&user)),
            ("ns:hb_progress:{x}:7", layout.progress("{x}:7")),
            ("ns:hb_jobs:owner:studio", layout.owner_jobs("studio")),
            ("ns:{hb_events}:owner:studio", layout.owner_events("studio")),
            ("ns:hb_job:41", layout.job(JobId(41))),
        ];
        for (earlier, to) in cases {
            let found = layout.classify(earlier).expect(earlier);
            assert_eq!(found.from, earlier);
            assert_eq!(found.to, to, "{earlier}");
        }
    }

    #[test]
    fn once_migrated_no_earlier_name_is_read() {
        for topology in [Topology::OneServer, Topology::Cluster] {
            let layout = Layout::new(String::new(), topology);
            let (user, owner) = (Id::Int(7), Owner::new("studio").unwrap());
            assert!(layout.earlier_progress(&user).is_some());
            layout.migrated();
            assert_eq!(layout.earlier_progress(&user), None);
            assert_eq!(layout.earlier_history(&user), None);
            assert_eq!(layout.earlier_owner_jobs(&owner), None);
            assert_eq!(layout.earlier_owner_events(&owner), None);
            assert_eq!(layout.earlier_job(JobId(41)), None);
            assert_eq!(layout.earlier_due_jobs(), None);
            assert_eq!(layout.earlier_due_entry(JobId(41)), None);
            assert_eq!(layout.earlier_index(Index::Finished), None);
            assert!(layout.earlier_channels().is_empty());
        }
    }
}
