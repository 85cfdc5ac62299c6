//! # heartbeat-core
//!
//! The heart of **heartbeat**: the rules a streaming platform needs to limit how many
//! streams a user plays at once, remember where they stopped and keep their play history,
//! and to tell clients when their long-running jobs finish. No network, no filesystem:
//! stores plug in through [`SessionStore`], [`jobs::JobStore`] and [`jobs::EventBus`].
//!
//! - [`token`]: the CryptoJS-compatible legacy token format and the authenticated `v2.`
//!   format, behind one [`TokenCodec`].
//! - [`HeartbeatData`]: what a token carries.
//! - [`sessions`]: the session side: [`Heartbeats`] (codec + rules + store, atomic by
//!   compare-and-set), the pure [`sessions::rules`], the store contract, notices and
//!   analytics.
//! - [`jobs`]: jobs whose state only moves forward, and their events.
//! - [`live`]: live delivery to this process's subscribers, shared by both sides.
//! - [`store`]: what every store shares ([`StoreError`], [`store::kit`]) and
//!   [`Storage`], the stores behind trait objects for applications that choose their
//!   store at run time.
//! - [`memory`]: in-memory stores.
//! - `testkit` (feature `testkit`): the conformance suite every store runs.
//!
//! ```no_run
//! use heartbeat_core::memory::MemorySessionStore;
//! use heartbeat_core::{HeartbeatOutcome, Heartbeats, TokenCodec};
//!
//! # async fn run(token_from_player: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let heartbeats = Heartbeats::new(TokenCodec::new("shared key")?, MemorySessionStore::new());
//! match heartbeats.heartbeat(token_from_player, Some(42.0)).await? {
//!     HeartbeatOutcome::Accepted { token, .. } => println!("keep playing, next token {token}"),
//!     HeartbeatOutcome::Rejected(reason) => println!("stop: {reason:?}"),
//!     other => println!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod clock;
mod data;
pub mod jobs;
pub mod json;
pub mod live;
pub mod memory;
pub mod sessions;
pub mod storage;
pub mod store;
mod time;
pub mod token;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use clock::{Clock, ManualClock, SystemClock};
pub use data::{
    CompactDataError, DataError, HeartbeatData, HeartbeatDataBuilder, Id, IdRef, JsonDataError,
    MAX_DEVICE_LEN, MAX_FAMILY_LEN, MAX_ID_LEN, Provenance, RejectStrategy, Seconds,
};
pub use sessions::{
    ActiveSession, DEFAULT_GONE_GRACE, DEFAULT_MAX_ATTEMPTS, EndReason, HeartbeatConfig,
    HeartbeatError, HeartbeatOutcome, Heartbeats, PlayRecord, ProgressRecord, SessionRecord,
    SessionStore, UserSessions,
};
pub use storage::{SharedClock, SharedHeartbeats, SharedJobs, Storage};
pub use store::StoreError;
pub use time::{Timestamp, TimestampError};
pub use token::{InvalidToken, KeyError, SealError, TokenCodec, TokenFormat};

/// Entry points for fuzz targets. Not a stable API.
#[doc(hidden)]
pub mod internal {
    use crate::{HeartbeatData, TokenCodec};

    /// Opens `input` as a token with a fixed key; must never panic.
    pub fn fuzz_open_token(input: &[u8]) {
        static CODEC: std::sync::OnceLock<Option<TokenCodec>> = std::sync::OnceLock::new();
        let Some(codec) = CODEC.get_or_init(|| TokenCodec::new("fuzz key").ok()) else {
            return;
        };
        let Ok(text) = std::str::from_utf8(input) else {
            return;
        };
        if let Ok(data) = codec.open(text) {
            // Whatever opens must seal and open again to the same data.
            if let Ok(token) = codec.seal(&data) {
                assert_eq!(codec.open(&token).ok(), Some(data));
            }
        }
    }

    /// Reads `input` as a `v3.` token's compact payload (which no forger reaches through a
    /// token: it sits behind the AEAD tag); what reads must write and read back the same,
    /// and hold nothing JSON data could not (the same data through JSON).
    pub fn fuzz_compact_payload(input: &[u8]) {
        let Ok(data) = HeartbeatData::from_compact_slice(input) else {
            return;
        };
        let again = HeartbeatData::from_compact_slice(&data.to_compact_vec()).ok();
        assert_eq!(again.as_ref(), Some(&data), "compact round trip");
        let through_json = HeartbeatData::from_json_slice(&data.to_json_vec()).ok();
        assert_eq!(through_json.as_ref(), Some(&data), "through JSON");
    }

    /// Reads `input` as heartbeat data JSON; what reads must write and read back the same.
    pub fn fuzz_heartbeat_json(input: &[u8]) {
        let Ok(data) = serde_json::from_slice::<HeartbeatData>(input) else {
            return;
        };
        let json = serde_json::to_string(&data).unwrap_or_default();
        let again: Option<HeartbeatData> = serde_json::from_str(&json).ok();
        assert_eq!(again.as_ref(), Some(&data), "round trip of {json}");
    }
}
