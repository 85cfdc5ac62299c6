//! Key names (see the crate docs for the table).

use heartbeat_core::Id;
use heartbeat_core::jobs::{JobId, Owner};
use heartbeat_core::sessions::analytics::Index;

pub(crate) struct Keys {
    namespace: String,
}

impl Keys {
    pub(crate) fn new(namespace: String) -> Self {
        Self { namespace }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Node server's key: `<ns>hb_sessions:<user>:active_sessions`.
    pub(crate) fn sessions(&self, user: &Id) -> String {
        format!("{}hb_sessions:{user}:active_sessions", self.namespace)
    }

    pub(crate) fn progress(&self, user: &Id) -> String {
        format!("{}hb_progress:{user}", self.namespace)
    }

    pub(crate) fn history(&self, user: &Id) -> String {
        format!("{}hb_history:{user}", self.namespace)
    }

    /// The Node server's progress hash.
    pub(crate) fn node_progress(&self) -> String {
        format!("{}user_progress", self.namespace)
    }

    pub(crate) fn job(&self, id: JobId) -> String {
        format!("{}hb_job:{id}", self.namespace)
    }

    pub(crate) fn job_counter(&self) -> String {
        format!("{}hb_jobs:last_id", self.namespace)
    }

    pub(crate) fn owner_jobs(&self, owner: &Owner) -> String {
        format!("{}hb_jobs:owner:{owner}", self.namespace)
    }

    pub(crate) fn due_jobs(&self) -> String {
        format!("{}hb_jobs:due", self.namespace)
    }

    /// Event keys share the `{hb_events}` hash tag: one script writes two of them.
    pub(crate) fn event_counter(&self) -> String {
        format!("{}{{hb_events}}:last_id", self.namespace)
    }

    pub(crate) fn owner_events(&self, owner: &Owner) -> String {
        format!("{}{{hb_events}}:owner:{owner}", self.namespace)
    }

    /// An analytics index (SPEC §3.9); both share a hash tag, so that one script writes
    /// them on a cluster too.
    pub(crate) fn analytics(&self, index: Index) -> String {
        let name = match index {
            Index::Finished => "finished",
            Index::Refusals => "refusals",
        };
        format!("{}{{hb_history_index}}:{name}", self.namespace)
    }

    /// The pub/sub channel every instance listens on.
    pub(crate) fn event_channel(&self) -> String {
        format!("{}hb_job_events", self.namespace)
    }

    /// The pub/sub channel of session notices (SPEC §3.7), which every instance listens on.
    pub(crate) fn notice_channel(&self) -> String {
        format!("{}hb_session_notices", self.namespace)
    }
}
