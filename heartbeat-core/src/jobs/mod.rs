//! Long-running jobs whose owners learn their status from events (SPEC §4).
//!
//! [`Job::apply`] holds the one rule (states only move forward); [`JobStore`] and
//! [`EventBus`] only store and deliver; [`Jobs`] ties them together.

mod model;
mod outbox;
mod owner_key;
mod resume;
mod service;
mod store;

pub use model::{
    Job, JobError, JobId, JobState, JobUpdate, MAX_ERROR_LEN, MAX_OWNER_LEN, NewJob, Owner,
};
pub use owner_key::OwnerKey;
pub use service::{COMPLETION_TICK, DEFAULT_JOB_RETENTION, Jobs, JobsConfig, JobsError};
pub use store::{
    DEFAULT_EVENT_HISTORY, EventBus, EventId, EventStream, JobEvent, JobStore, jobs_past_retention,
};
