//! Where "now" comes from. Every rule that reads time takes a [`Clock`], so tests move a
//! [`ManualClock`] instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use heartbeat_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new("2026-01-01T00:00:00.000Z".parse()?);
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now().to_string(), "2026-01-01T00:00:01.500Z");
/// # Ok::<(), heartbeat_core::TimestampError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(start.unix_millis())),
        }
    }

    /// Moves the clock `by` later.
    pub fn advance(&self, by: Duration) {
        let now = self.now() + by;
        self.set(now);
    }

    /// Puts the clock at `to` (which may be earlier: clocks of real machines jump too).
    pub fn set(&self, to: Timestamp) {
        self.millis.store(to.unix_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        // Only valid timestamps are ever stored.
        Timestamp::from_unix_millis(self.millis.load(Ordering::SeqCst))
            .unwrap_or_else(|_| Timestamp::now())
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}
