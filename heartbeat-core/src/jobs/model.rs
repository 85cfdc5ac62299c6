//! Jobs and the rule that their state only moves forward.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Longest owner id accepted, in bytes.
pub const MAX_OWNER_LEN: usize = 128;
/// Longest error text a failed job keeps, in bytes.
pub const MAX_ERROR_LEN: usize = 1024;

/// A job id: positive, increasing in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = JobError;

    /// A decimal id from 1 to 2^64 - 1, digits only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(JobError::InvalidId);
        }
        match s.parse::<u64>() {
            Ok(0) | Err(_) => Err(JobError::InvalidId),
            Ok(n) => Ok(JobId(n)),
        }
    }
}

/// Who owns a job: the `uuid` query parameter of the HeyGen API. Non-empty, at most
/// [`MAX_OWNER_LEN`] bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Owner(String);

impl Owner {
    /// Checks and wraps an owner id.
    pub fn new(owner: impl Into<String>) -> Result<Self, JobError> {
        let owner = owner.into();
        if owner.is_empty() || owner.len() > MAX_OWNER_LEN || owner.chars().any(char::is_control) {
            return Err(JobError::InvalidOwner);
        }
        Ok(Owner(owner))
    }

    /// The owner id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Owner {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Owner::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Where a job is. States only move forward: `pending → running → completed | failed`
/// (running may be skipped); `completed` and `failed` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Created, not started.
    Pending,
    /// A worker is on it.
    Running,
    /// Finished successfully. Final.
    Completed,
    /// Finished with an error. Final.
    Failed,
}

impl JobState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    /// True for `completed` and `failed`.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
    }

    fn rank(self) -> u8 {
        match self {
            JobState::Pending => 0,
            JobState::Running => 1,
            JobState::Completed | JobState::Failed => 2,
        }
    }
}

impl FromStr for JobState {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(JobState::Pending),
            "running" => Ok(JobState::Running),
            "completed" => Ok(JobState::Completed),
            "failed" => Ok(JobState::Failed),
            _ => Err(JobError::InvalidState),
        }
    }
}

/// A job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Who created it; only they see it.
    pub owner: Owner,
    /// Where it is.
    pub state: JobState,
    /// Percent done, 0 to 100; never goes down.
    pub progress: u8,
    /// Why it failed (only when `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When the simulator completes it by itself (`JOB_TIME`), if it is still pending or
    /// running then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_at: Option<Timestamp>,
}

/// A job about to be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Who creates it.
    pub owner: Owner,
    /// When.
    pub created_at: Timestamp,
    /// When the simulator completes it, if at all.
    pub complete_at: Option<Timestamp>,
}

impl NewJob {
    /// The job this becomes under `id`.
    pub fn into_job(self, id: JobId) -> Job {
        Job {
            id,
            owner: self.owner,
            state: JobState::Pending,
            progress: 0,
            error: None,
            created_at: self.created_at,
            updated_at: self.created_at,
            complete_at: self.complete_at,
        }
    }
}

/// A worker's change to a job. Absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobUpdate {
    /// The new state.
    #[serde(default)]
    pub state: Option<JobState>,
    /// The new progress, 0 to 100.
    #[serde(default)]
    pub progress: Option<u8>,
    /// The error text (only with `failed`).
    #[serde(default)]
    pub error: Option<String>,
}

/// A job request or update that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// Not a decimal id from 1 to 18446744073709551615.
    #[error("job id must be a whole number from 1 to 18446744073709551615")]
    InvalidId,
    /// The owner id is empty, too long or has control characters.
    #[error("owner (uuid) must be 1 to 128 bytes without control characters")]
    InvalidOwner,
    /// Not one of `pending`, `running`, `completed`, `failed`.
    #[error("state must be one of pending, running, completed, failed")]
    InvalidState,
    /// Progress above 100.
    #[error("progress must be a whole number from 0 to 100")]
    InvalidProgress,
    /// Progress lower than it already is.
    #[error("progress cannot go down from {current} to {requested}")]
    ProgressBackwards {
        /// The job's progress.
        current: u8,
        /// The requested progress.
        requested: u8,
    },
    /// A state change backwards, or any change to a finished job.
    #[error("a {from} job cannot become {to}")]
    Backwards {
        /// The job's state.
        from: &'static str,
        /// The requested state.
        to: &'static str,
    },
    /// A finished job never changes again.
    #[error("the job is {0} and never changes again")]
    Finished(&'static str),
    /// Error text on a job that is not `failed`, or too long.
    #[error("error text is only for failed jobs and at most 1024 bytes")]
    InvalidErrorText,
}

impl JobError {
    /// True when the request conflicts with the job's current state (it went further
    /// already, or is finished), rather than being invalid in itself.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            JobError::ProgressBackwards { .. } | JobError::Backwards { .. } | JobError::Finished(_)
        )
    }
}

impl Job {
    /// True while no worker has touched the job since it was created: still pending,
    /// without progress. Only such a job is completed by the `JOB_TIME` simulator: a job a
    /// worker set to running, or gave progress, is that worker's to finish.
    pub fn is_untouched(&self) -> bool {
        self.state == JobState::Pending && self.progress == 0
    }

    /// True when the job finished longer than `retention` before `now`: it and its events
    /// are no longer kept (`JOB_RETENTION`). Unfinished jobs are always kept.
    pub fn is_past_retention(&self, now: Timestamp, retention: std::time::Duration) -> bool {
        self.state.is_final() && self.updated_at + retention < now
    }

    /// Whether this is a later version of the same job than `other`: further along (a
    /// job's state and progress never move back, [`apply`](Self::apply), whatever the
    /// clocks of the instances that changed it), or as far along and changed later. A
    /// copy of a job is replaced by another only if the other supersedes it.
    ///
    /// ```
    /// use heartbeat_core::jobs::{JobId, JobState, NewJob, Owner};
    ///
    /// let at = "2026-03-01T12:00:00Z".parse().unwrap();
    /// let job = NewJob { owner: Owner::new("studio").unwrap(), created_at: at, complete_at: None }
    ///     .into_job(JobId(1));
    /// let mut running = job.clone();
    /// running.state = JobState::Running;
    /// assert!(running.supersedes(&job));
    /// assert!(!job.supersedes(&running));
    /// assert!(!job.supersedes(&job));
    /// ```
    pub fn supersedes(&self, other: &Job) -> bool {
        (self.state.rank(), self.progress, self.updated_at)
            > (other.state.rank(), other.progress, other.updated_at)
    }

    /// The due-index entry (its `complete_at`) that this version of the job no longer
    /// needs: a finished job is never due again, and a job a worker touched is left to the
    /// worker. A store drops the entry when it stores this version.
    pub fn due_entry_to_drop(&self) -> Option<Timestamp> {
        self.complete_at.filter(|_| !self.is_untouched())
    }

    /// The job after `update` at `now`, or `None` when the update changes nothing (an
    /// idempotent repeat). Refuses any move backwards and any change to a finished job.
    pub fn apply(&self, update: &JobUpdate, now: Timestamp) -> Result<Option<Job>, JobError> {
        let state = update.state.unwrap_or(self.state);
        if state.rank() < self.state.rank() || (self.state.is_final() && state != self.state) {
            return Err(JobError::Backwards {
                from: self.state.as_str(),
                to: state.as_str(),
            });
        }
        let mut progress = update.progress.unwrap_or(self.progress);
        if progress > 100 {
            return Err(JobError::InvalidProgress);
        }
        if progress < self.progress {
            return Err(JobError::ProgressBackwards {
                current: self.progress,
                requested: progress,
            });
        }
        if state == JobState::Completed {
            progress = 100;
        }
        let error = match &update.error {
            Some(text) if state != JobState::Failed || text.len() > MAX_ERROR_LEN => {
                return Err(JobError::InvalidErrorText);
            }
            Some(text) => Some(text.clone()),
            None => self.error.clone(),
        };
        let next = Job {
            state,
            progress,
            error,
            updated_at: now,
            ..self.clone()
        };
        let changed =
            next.state != self.state || next.progress != self.progress || next.error != self.error;
        match (changed, self.state.is_final()) {
            (false, _) => Ok(None),
            (true, true) => Err(JobError::Finished(self.state.as_str())),
            (true, false) => Ok(Some(next)),
        }
    }
}
