//! In-memory stores: fast, per-user (per-job, per-owner) entries with no global lock, and
//! nothing kept across restarts. A product feature for single-instance deployments and
//! embedding, not only for tests.

mod bus;
mod jobs;
mod sessions;

pub use bus::MemoryEventBus;
pub use jobs::{DEFAULT_MAX_JOBS, MemoryJobStore};
pub use sessions::MemorySessionStore;

use std::sync::atomic::{AtomicU64, Ordering};

/// Versions handed out by the memory stores: globally increasing, so a removed and
/// re-created entry never repeats a version (no ABA).
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}
