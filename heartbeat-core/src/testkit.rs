//! The store conformance suite (feature `testkit`).
//!
//! One suite, run unchanged by every store: the memory store here, sled and Redis in their
//! crates. A store crate implements [`Fixture`] (how to reach a fresh, isolated storage, and
//! how to open another client onto it, as a second server instance would) and writes one
//! line:
//!
//! ```ignore
//! heartbeat_core::conformance_tests!(my_fixture);
//! ```
//!
//! where `my_fixture` is an `async fn() -> impl Fixture`. The test crate needs `tokio` with
//! the `macros` and `rt-multi-thread` features.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::future::Future;
use std::time::Duration;

use crate::SessionStore;
use crate::jobs::{EventBus, JobStore};

pub mod devices;
pub mod gone;
pub mod jobs;
pub mod replays;
pub mod report_only;
pub mod sessions;

/// Access to one fresh, isolated storage for one test.
pub trait Fixture: Send + Sync + 'static {
    /// The session store type.
    type Sessions: SessionStore + Clone;
    /// The job store type.
    type Jobs: JobStore + Clone;
    /// The event bus type.
    type Bus: EventBus + Clone;

    /// A client of the session storage. Each call may be a new, independent client on the
    /// same data (as separate server instances would have).
    fn sessions(&self) -> impl Future<Output = Self::Sessions> + Send;
    /// A client of the job storage, as [`sessions`](Self::sessions).
    fn jobs(&self) -> impl Future<Output = Self::Jobs> + Send;
    /// A client of the event bus, as [`sessions`](Self::sessions).
    fn bus(&self) -> impl Future<Output = Self::Bus> + Send;
}

/// How long a test waits for an event that must arrive before failing.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Generates one `#[tokio::test]` per conformance check, each on a fresh fixture from
/// `$setup` (an `async fn() -> impl Fixture`).
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@tests $setup;
            sessions::compare_and_set_contract,
            sessions::unknown_record_fields_survive,
            sessions::first_heartbeat_starts_a_session,
            sessions::rotated_token_continues_the_session,
            sessions::early_heartbeat_continues_its_session,
            sessions::a_token_presented_twice_continues_one_session,
            sessions::expired_sessions_leave_for_the_history,
            sessions::least_recent_refuses_the_oldest_device,
            sessions::most_recent_refuses_the_newest_device,
            sessions::sessions_edge_refuses_every_session,
            sessions::a_backend_token_presented_again_continues_its_session,
            sessions::a_refused_token_is_recorded_once_per_cycle,
            sessions::a_node_record_expires_alike_everywhere,
            sessions::rejected_heartbeat_writes_nothing,
            sessions::progress_is_recorded_per_asset,
            sessions::progress_of_many_assets_is_each_the_last_report,
            sessions::numeric_and_text_ids_are_one_user,
            sessions::stop_frees_the_slot_at_once,
            sessions::evict_removes_one_session,
            sessions::a_session_that_ended_by_itself_is_not_evicted,
            sessions::history_is_capped_newest_first,
            sessions::a_session_that_times_out_is_in_the_history_without_a_return,
            sessions::an_evicted_device_is_refused_and_a_fresh_token_plays,
            sessions::history_and_progress_are_kept_as_long_as_the_retention,
            sessions::concurrent_devices_never_exceed_the_limit,
            sessions::finished_sessions_are_exported_once_in_order,
            sessions::an_exported_end_stays_where_it_was,
            sessions::a_resumed_session_is_exported_once_per_play,
            replays::a_spent_token_replayed_is_refused,
            replays::devices_replaying_each_others_tokens_never_both_play,
            replays::a_backend_token_resent_after_expiry_is_refused_at_the_limit,
            replays::backend_tokens_without_an_edge_are_bounded,
            replays::a_lost_answer_retried_plays_on,
            replays::a_start_again_in_the_same_millisecond_spends_the_first_answer,
            replays::an_old_authenticated_token_is_refused_as_expired,
            replays::honest_flows_play_on,
            replays::a_session_of_the_previous_build_continues,
            replays::a_heartbeat_whose_answer_cannot_be_sealed_stores_nothing,
            devices::family_and_asset_limits_refuse_with_their_reason,
            devices::a_legacy_refusal_lists_no_sessions,
            devices::a_legacy_begun_session_stays_unauthenticated,
            devices::a_takeover_ends_the_other_session_and_admits,
            devices::racing_takeovers_keep_the_limit,
            devices::notices_reach_the_watched_session,
            gone::a_session_whose_stream_closed_ends_as_gone,
            gone::a_stopped_session_closes_its_streams_at_once,
            report_only::report_only_limits_report_what_enforcing_refuses,
            report_only::the_admin_view_shows_what_devices_would_be_told,
            jobs::ids_increase_and_unknown_ids_are_absent,
            jobs::states_only_move_forward,
            jobs::stale_versions_conflict,
            jobs::owners_see_only_their_jobs,
            jobs::due_jobs_complete_once,
            jobs::due_jobs_carry_their_versions,
            jobs::events_reach_their_owner_only,
            jobs::replay_returns_events_after_an_id,
            jobs::events_cross_clients,
            jobs::event_streams_resume_without_loss,
            jobs::a_lagging_event_stream_replays_what_it_missed,
            jobs::the_completion_loop_completes_due_jobs,
            jobs::the_simulator_never_overrides_a_worker,
            jobs::a_resume_from_an_unknown_id_is_never_silent,
            jobs::event_ids_are_above_the_time_floor,
            jobs::finished_jobs_are_kept_for_the_retention,
        );
    };
    (@tests $setup:path; $($module:ident :: $test:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let fixture = $setup().await;
                $crate::testkit::$module::$test(&fixture).await;
            }
        )+
    };
}

/// An event bus that refuses its first `failures` publications (as a Redis that times out
/// would), then passes everything to `inner`: for tests of what happens when publishing
/// fails after a job change was stored.
#[derive(Debug, Clone)]
pub struct FlakyBus<B> {
    inner: B,
    failures: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<B: EventBus> FlakyBus<B> {
    /// A bus over `inner` that refuses its next `failures` publications.
    pub fn new(inner: B, failures: usize) -> Self {
        Self {
            inner,
            failures: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(failures)),
        }
    }
}

impl<B: EventBus> EventBus for FlakyBus<B> {
    async fn publish(
        &self,
        job: &crate::jobs::Job,
    ) -> Result<crate::jobs::JobEvent, crate::live::BusError> {
        use std::sync::atomic::Ordering;
        let refused = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if refused {
            return Err(crate::StoreError::unavailable(
                "the bus refused this publication (FlakyBus)",
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            )
            .into());
        }
        self.inner.publish(job).await
    }

    async fn subscribe(
        &self,
        owner: &crate::jobs::Owner,
    ) -> Result<crate::jobs::EventStream, crate::live::BusError> {
        self.inner.subscribe(owner).await
    }

    async fn replay(
        &self,
        owner: &crate::jobs::Owner,
        after: Option<crate::jobs::EventId>,
    ) -> Result<Vec<crate::jobs::JobEvent>, crate::live::BusError> {
        self.inner.replay(owner, after).await
    }
}
