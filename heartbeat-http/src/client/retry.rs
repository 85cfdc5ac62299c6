//! What both clients share: the backoff they retry with, and building request URLs.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use reqwest::Url;

/// Delays between retries that double from `min` up to `max` and stay there, restarting
/// from `min` after a success ([`reset`](Self::reset)).
#[derive(Debug)]
pub(crate) struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Doubling from `min` to `max`, without end.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
            max,
        }
    }

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts again from the shortest delay.
    pub(crate) fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

/// `base` with `segments` appended to its path and `query` as its query string (encoded
/// by `url`).
pub(crate) fn endpoint(base: &Url, segments: &[&str], query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    // An http(s) URL always has a path that can take segments.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

/// Reads a server's base URL: `http://` or `https://`, without query or fragment.
pub(crate) fn base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("`{text}` is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(format!("`{text}` is not an http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}` must not have a query or a fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_restart_after_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let delays: Vec<u64> = (0..6)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn endpoints_keep_the_base_path_and_encode_the_query() {
        let base = base_url("http://example.test:3000/api/").unwrap();
        let url = endpoint(&base, &["status", "7"], &[("uuid", "a b&c=é")]);
        assert_eq!(
            url.as_str(),
            "http://example.test:3000/api/status/7?uuid=a+b%26c%3D%C3%A9"
        );
        let root = base_url("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            endpoint(&root, &["heartbeat"], &[]).as_str(),
            "http://127.0.0.1:3000/heartbeat"
        );
    }

    #[test]
    fn base_urls_must_be_http() {
        assert!(base_url("ftp://example.test").is_err());
        assert!(base_url("localhost:3000").is_err());
        assert!(base_url("http://example.test/?x=1").is_err());
    }
}
