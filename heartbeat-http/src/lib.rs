//! # heartbeat-http
//!
//! The axum server (`heartbeat-server`) and the client library of heartbeat. The
//! implementation arrives with the server and client issues; this crate is part of the
//! workspace layout already so that the build and the CI cover it from the start.
#![deny(missing_docs)]
