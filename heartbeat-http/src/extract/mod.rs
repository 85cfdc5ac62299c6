//! What handlers read from a request, each in one place: credentials ([`auth`]), bodies
//! ([`body`]) and path segments and query strings ([`query`]).

pub mod auth;
pub mod body;
pub mod query;
