//! [`StoreHealth`]: what a store's ping found, for readiness probes.

use std::fmt;

/// What [`SessionStore::ping`](crate::SessionStore::ping) found.
///
/// ```
/// use heartbeat_core::store::StoreHealth;
/// let health = StoreHealth::Degraded { answering: 2, total: 3 };
/// assert_eq!(health.to_string(), "degraded: 2 of 3 store nodes answer");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreHealth {
    /// Every part of the store answers.
    Up,
    /// Some of the store's nodes do not answer (a Redis Cluster master failing over): the
    /// users whose data lives there get 503 until it ends, everyone else is served.
    Degraded {
        /// Nodes (Redis Cluster masters) that answered.
        answering: usize,
        /// Nodes the store spreads its data over.
        total: usize,
    },
}

impl fmt::Display for StoreHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreHealth::Up => f.write_str("up"),
            StoreHealth::Degraded { answering, total } => {
                write!(f, "degraded: {answering} of {total} store nodes answer")
            }
        }
    }
}
