//! Job creation rate limits per owner (SPEC §4 "Job creation is rate-limited per owner"),
//! with `governor`'s keyed GCRA limiter.

use std::num::NonZeroU32;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use heartbeat_core::jobs::Owner;
use serde_json::json;

/// Owners remembered before idle ones are forgotten (an owner that has not created a job
/// for a burst's worth of time is back at a full burst anyway).
const FORGET_IDLE_ABOVE: usize = 10_000;

/// The job creation rate of each owner: `per_second` sustained, `burst` at once
/// (`JOBS_PER_OWNER_PER_SEC`, `JOBS_BURST`). Clones share the counts.
#[derive(Debug, Clone)]
pub struct JobCreations {
    limiter: Option<std::sync::Arc<DefaultKeyedRateLimiter<String>>>,
}

impl JobCreations {
    /// A limit of `per_second` jobs per owner with bursts of `burst`; no limit when
    /// `per_second` is 0.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            std::sync::Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Self { limiter }
    }

    /// Takes one job creation from `owner`'s allowance, or says when to retry.
    pub fn check(&self, owner: &Owner) -> Result<(), RateLimited> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() > FORGET_IDLE_ABOVE {
            limiter.retain_recent();
        }
        limiter
            .check_key(&owner.as_str().to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            })
    }
}

/// An owner created jobs faster than allowed: 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Whole seconds until the next job may be created.
    pub retry_after_secs: u64,
}

impl RateLimited {
    /// The answer of the HeyGen routes: plain text.
    pub fn text(self) -> Response {
        self.answer("too many jobs: retry later".into_response())
    }

    /// The answer of the `/v1` routes: `{"error": …}`.
    pub fn json(self) -> Response {
        let message = format!(
            "This owner creates jobs faster than allowed; retry in {} s.",
            self.retry_after_secs
        );
        self.answer(axum::Json(json!({ "error": message })).into_response())
    }

    fn answer(self, mut response: Response) -> Response {
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_owner_has_its_own_burst_and_zero_is_no_limit() {
        let limits = JobCreations::new(1, 3);
        let (alice, bob) = (
            Owner::new("alice").unwrap_or_else(|_| unreachable!()),
            Owner::new("bob").unwrap_or_else(|_| unreachable!()),
        );
        for _ in 0..3 {
            assert_eq!(limits.check(&alice), Ok(()));
        }
        let limited = limits.check(&alice).err();
        assert!(limited.is_some_and(|l| l.retry_after_secs >= 1));
        assert_eq!(limits.check(&bob), Ok(()));
        let off = JobCreations::new(0, 0);
        assert!((0..1000).all(|_| off.check(&alice).is_ok()));
    }
}
