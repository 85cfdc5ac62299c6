//! Runnable examples of heartbeat; see the `[[example]]` targets of this package and run
//! them with `cargo run -p heartbeat-examples --example NAME`.
