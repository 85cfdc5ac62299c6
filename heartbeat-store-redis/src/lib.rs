//! # heartbeat-store-redis
//!
//! Redis storage for heartbeat, built on `fred`, compatible with the keys of the Node.js
//! heartbeat server. The implementation arrives with the stores issue; this crate is part
//! of the workspace layout already so that the build and the CI cover it from the start.
#![deny(missing_docs)]
