//! Job creation rate limits (SPEC §4 "Job creation is rate-limited per owner, per client
//! address and in total"), with `governor`'s GCRA limiters: one keyed by owner, one keyed
//! by client address, one for the whole server.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use heartbeat_core::jobs::Owner;
use serde_json::json;

/// Owners (or addresses) remembered before idle ones are forgotten (a key that has not
/// created a job for a burst's worth of time is back at a full burst anyway).
const FORGET_IDLE_ABOVE: usize = 10_000;

/// One rate: `per_second` sustained and `burst` at once; `per_second` 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Creations per second, sustained; 0: no limit.
    pub per_second: u32,
    /// Creations at once before the per-second rate applies (0 is taken as `per_second`).
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        NonZeroU32::new(self.per_second).map(|rate| {
            let burst = NonZeroU32::new(self.burst).unwrap_or(rate);
            Quota::per_second(rate).allow_burst(burst)
        })
    }
}

/// The configured job creation rates (`JOBS_PER_OWNER_PER_SEC`, `JOBS_BURST`,
/// `JOBS_PER_ADDRESS_PER_SEC`, `JOBS_PER_ADDRESS_BURST`, `JOBS_TOTAL_PER_SEC`,
/// `JOBS_TOTAL_BURST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRates {
    /// Per owner.
    pub per_owner: Rate,
    /// Per client address; not applied to backends that prove who they are (a key, or
    /// the owner's token).
    pub per_address: Rate,
    /// For the whole server.
    pub total: Rate,
}

impl Default for JobRates {
    /// 10 per second and owner (bursts of 100), 20 per second and address (bursts of
    /// 200), 1,000 per second in all (bursts of 2,000).
    fn default() -> Self {
        Self {
            per_owner: Rate {
                per_second: 10,
                burst: 100,
            },
            per_address: Rate {
                per_second: 20,
                burst: 200,
            },
            total: Rate {
                per_second: 1000,
                burst: 2000,
            },
        }
    }
}

/// Which limit refused a creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The owner's rate.
    Owner,
    /// The client address's rate.
    Address,
    /// The server's rate.
    Total,
}

impl Limit {
    /// The limit's name, for metrics: `owner`, `address` or `total`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Owner => "owner",
            Limit::Address => "address",
            Limit::Total => "total",
        }
    }
}

/// The job creation allowances: per owner, per client address and in total. Clones share
/// the counts.
#[derive(Debug, Clone)]
pub struct JobCreations {
    per_owner: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    per_address: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    total: Option<Arc<DefaultDirectRateLimiter>>,
}

impl JobCreations {
    /// Allowances at `rates`.
    pub fn new(rates: JobRates) -> Self {
        Self {
            per_owner: rates
                .per_owner
                .quota()
                .map(|quota| Arc::new(RateLimiter::keyed(quota))),
            per_address: rates
                .per_address
                .quota()
                .map(|quota| Arc::new(RateLimiter::keyed(quota))),
            total: rates
                .total
                .quota()
                .map(|quota| Arc::new(RateLimiter::direct(quota))),
        }
    }

    /// Takes one job creation for `owner` from the allowances: the client `address`'s
    /// (skipped when `None`: a backend that proved who it is), the owner's and the
    /// server's, in that order; or says which limit refused and when to retry. A refusal
    /// by the address leaves the owner's and the server's allowances untouched.
    pub fn check(&self, owner: &Owner, address: Option<IpAddr>) -> Result<(), RateLimited> {
        if let (Some(limiter), Some(address)) = (&self.per_address, address) {
            keyed(limiter, &address).map_err(|wait| wait.by(Limit::Address))?;
        }
        if let Some(limiter) = &self.per_owner {
            keyed(limiter, &owner.as_str().to_owned()).map_err(|wait| wait.by(Limit::Owner))?;
        }
        if let Some(limiter) = &self.total {
            limiter
                .check()
                .map_err(|not_until| Wait::from(not_until).by(Limit::Total))?;
        }
        Ok(())
    }
}

fn keyed<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), Wait>
where
    K: std::hash::Hash + Eq + Clone,
{
    if limiter.len() > FORGET_IDLE_ABOVE {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(Wait::from)
}

/// Whole seconds until a limiter allows again (at least 1).
struct Wait(u64);

impl From<NotUntil<<DefaultClock as Clock>::Instant>> for Wait {
    fn from(not_until: NotUntil<<DefaultClock as Clock>::Instant>) -> Self {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        Wait(wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

impl Wait {
    fn by(self, limit: Limit) -> RateLimited {
        RateLimited {
            limit,
            retry_after_secs: self.0,
        }
    }
}

/// A job creation past a limit: 429 with `Retry-After`; nothing was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// The limit that refused it.
    pub limit: Limit,
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
        let who = match self.limit {
            Limit::Owner => "This owner creates",
            Limit::Address => "This client address creates",
            Limit::Total => "The server is asked to create",
        };
        let message = format!(
            "{who} jobs faster than allowed; retry in {} s.",
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

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    fn owner(name: &str) -> Owner {
        Owner::new(name).unwrap_or_else(|_| unreachable!())
    }

    const OFF: Rate = Rate {
        per_second: 0,
        burst: 0,
    };

    #[test]
    fn each_owner_has_its_own_burst_and_zero_is_no_limit() {
        let limits = JobCreations::new(JobRates {
            per_owner: rate(1, 3),
            per_address: OFF,
            total: OFF,
        });
        let (alice, bob) = (owner("alice"), owner("bob"));
        for _ in 0..3 {
            assert_eq!(limits.check(&alice, None), Ok(()));
        }
        let limited = limits.check(&alice, None).err();
        assert!(limited.is_some_and(|l| l.retry_after_secs >= 1 && l.limit == Limit::Owner));
        assert_eq!(limits.check(&bob, None), Ok(()));
        let off = JobCreations::new(JobRates {
            per_owner: OFF,
            per_address: OFF,
            total: OFF,
        });
        assert!((0..1000).all(|_| off.check(&alice, Some([127, 0, 0, 1].into())).is_ok()));
    }

    #[test]
    fn fresh_owners_from_one_address_are_refused_past_its_burst_and_the_total_holds() {
        let limits = JobCreations::new(JobRates {
            per_owner: rate(1, 3),
            per_address: rate(1, 5),
            total: rate(1, 8),
        });
        let (one, two) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        for n in 0..5 {
            assert_eq!(limits.check(&owner(&format!("a{n}")), Some(one)), Ok(()));
        }
        let refused = limits.check(&owner("a5"), Some(one)).err();
        assert_eq!(refused.map(|r| r.limit), Some(Limit::Address));
        // Another address, and a backend that proved who it is, are not that client.
        assert_eq!(limits.check(&owner("b0"), Some(two)), Ok(()));
        assert_eq!(limits.check(&owner("c0"), None), Ok(()));
        assert_eq!(limits.check(&owner("c1"), None), Ok(()));
        // 8 taken in all: the total refuses everyone, backends too.
        let refused = limits.check(&owner("c2"), None).err();
        assert_eq!(refused.map(|r| r.limit), Some(Limit::Total));
        let refused = limits.check(&owner("b1"), Some(two)).err();
        assert_eq!(refused.map(|r| r.limit), Some(Limit::Total));
    }
}
