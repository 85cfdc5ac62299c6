//! What both sides' stores share, at the bottom of the crate: the one [`StoreError`], the
//! compare-and-set answer [`Commit`], the [`StoreHealth`] a ping reports, and helpers for
//! store implementations ([`kit`]). The stores behind trait objects, for applications
//! that choose their store at run time, are at the top: [`crate::storage`].

mod error;
mod health;
pub mod kit;

pub use error::{BoxError, Commit, StoreError};
pub use health::StoreHealth;
