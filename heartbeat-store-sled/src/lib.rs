//! # heartbeat-store-sled
//!
//! Embedded, persistent storage for heartbeat on `sled`: the server's default. The
//! implementation arrives with the stores issue; this crate is part of the workspace layout
//! already so that the build and the CI cover it from the start.
#![deny(missing_docs)]
