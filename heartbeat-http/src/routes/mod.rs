//! The handlers, one module per surface. Private: the router names them, nothing else.
//! A handler reads the request through [`crate::extract`], calls the core, and maps the
//! outcome to a status; no rule lives here.

pub(crate) mod admin;
pub(crate) mod analytics;
pub(crate) mod health;
pub(crate) mod heartbeat;
pub(crate) mod heygen;
pub(crate) mod jobs;
