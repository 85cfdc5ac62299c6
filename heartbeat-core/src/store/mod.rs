//! What both sides' stores share: the one [`StoreError`], the compare-and-set answer
//! [`Commit`], helpers for store implementations ([`kit`]), and the stores behind trait
//! objects ([`Storage`]) for applications that choose their store at run time.

mod erased;
mod error;
mod health;
pub mod kit;

pub use erased::{
    AnyVersion, BoxFuture, DynAnalyticsStore, DynEventBus, DynJobStore, DynNoticeBus,
    DynSessionStore, SharedClock, SharedEventBus, SharedHeartbeats, SharedJobStore, SharedJobs,
    SharedSessionStore, Storage,
};
pub use error::{BoxError, Commit, StoreError};
pub use health::StoreHealth;
