//! Who the client is behind a reverse proxy (SPEC §4 "A client's address is the peer's, or,
//! from a configured trusted proxy only, the one the proxy forwards").
//!
//! `TRUSTED_PROXIES` lists the addresses (IPs or CIDR networks) of the proxies in front of
//! the server. A request's client address is its peer's address, unless that peer is a
//! trusted proxy: then `X-Forwarded-For` (or, when the request has none, `Forwarded`,
//! RFC 7239) is read from the right, skipping trusted proxies, and the first address that
//! is not one is the client. Headers from any other peer are never read, so a client
//! cannot choose its own address. The accept loop resolves it once per request
//! ([`crate::streams::ClientAddress`]); the stream caps and the job creation limits both
//! count by it.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use axum::http::header::{FORWARDED, HeaderName};
use ipnet::IpNet;

/// The `X-Forwarded-For` header.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies whose forwarding headers are believed (`TRUSTED_PROXIES`). Empty: none,
/// every client is its peer's address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of IP addresses and CIDR networks
    /// (`10.0.0.0/8, 192.168.1.7, fd00::/8`); an empty list trusts no proxy.
    fn from_str(text: &str) -> Result<Self, String> {
        let networks = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map(|network| network.trunc())
                    .map_err(|_| {
                        format!(
                            "`{item}` is not an IP address or a CIDR network (like 10.0.0.0/8 or 192.168.1.7)"
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { networks })
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.networks.is_empty() {
            return f.write_str("none");
        }
        let list: Vec<String> = self.networks.iter().map(IpNet::to_string).collect();
        f.write_str(&list.join(","))
    }
}

impl TrustedProxies {
    /// Whether `address` is a trusted proxy.
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }

    /// The client of a request that came from `peer` with `headers`: `peer` itself unless
    /// it is a trusted proxy; then the right-most forwarded address that is not a trusted
    /// proxy (`X-Forwarded-For`, or `Forwarded` when there is no `X-Forwarded-For`). When
    /// the forwarded chain holds only trusted proxies, its left-most one; when an entry
    /// cannot be read (`unknown`, an obfuscated name), the trusted hop after it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<Option<IpAddr>> = if headers.contains_key(&X_FORWARDED_FOR) {
            list_items(headers, &X_FORWARDED_FOR)
                .map(|item| parse_node(item).map(canonical))
                .collect()
        } else {
            list_items(headers, &FORWARDED)
                .map(|element| forwarded_for(element).and_then(parse_node).map(canonical))
                .collect()
        };
        let mut client = peer;
        for hop in forwarded.into_iter().rev() {
            match hop {
                Some(address) if self.trusts(address) => client = address,
                Some(address) => return address,
                None => return client,
            }
        }
        client
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`, as a dual-stack listener reports
/// it) is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The comma-separated items of every `name` header, in order (one header may be sent as
/// several lines). A header that is not text gives one unreadable item.
fn list_items<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("unknown").split(','))
        .map(str::trim)
}

/// The `for=` parameter of one `Forwarded` element (`for=192.0.2.60;proto=http`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `192.0.2.60`, `192.0.2.60:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`; `None` for anything else (`unknown`,
/// obfuscated names).
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    node.parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| {
            node.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| unreachable!())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn proxies(text: &str) -> TrustedProxies {
        text.parse().unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn the_list_takes_addresses_and_networks_and_refuses_the_rest() {
        let list = proxies(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,");
        assert!(list.trusts(ip("10.1.2.3")));
        assert!(list.trusts(ip("192.168.1.7")));
        assert!(!list.trusts(ip("192.168.1.8")));
        assert!(list.trusts(ip("fd00::1")));
        assert!(list.trusts(ip("::ffff:10.0.0.9")), "IPv4-mapped");
        assert_eq!(list.to_string(), "10.0.0.0/8,192.168.1.7/32,fd00::/8");
        assert_eq!(proxies(""), TrustedProxies::default());
        for bad in ["10.0.0.0/33", "proxy.local", "10.0.0", "1.2.3.4/8/2"] {
            let error = bad.parse::<TrustedProxies>().err().unwrap_or_default();
            assert!(error.contains(bad), "{bad}: {error}");
        }
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_peer() {
        let list = proxies("10.0.0.0/8");
        let forged = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(list.client(ip("203.0.113.9"), &forged), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &forged),
            ip("10.0.0.1")
        );
        assert_eq!(list.client(ip("10.0.0.1"), &forged), ip("1.1.1.1"));
        assert_eq!(
            list.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1"),
            "a trusted peer without headers is the client"
        );
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let list = proxies("10.0.0.0/8");
        // The client wrote a forged entry; the proxy appended the address it saw.
        let chain = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.5"),
        ]);
        assert_eq!(list.client(ip("10.0.0.1"), &chain), ip("198.51.100.7"));
        let only_proxies = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.5")]);
        assert_eq!(list.client(ip("10.0.0.1"), &only_proxies), ip("10.0.0.7"));
        let unreadable = headers(&[("x-forwarded-for", "198.51.100.7, garbage, 10.0.0.5")]);
        assert_eq!(list.client(ip("10.0.0.1"), &unreadable), ip("10.0.0.5"));
        let with_ports = headers(&[("x-forwarded-for", "[2001:db8::1]:80, 198.51.100.7:4711")]);
        assert_eq!(list.client(ip("10.0.0.1"), &with_ports), ip("198.51.100.7"));
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let list = proxies("10.0.0.0/8");
        let forwarded = headers(&[(
            "forwarded",
            "for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.3;by=10.0.0.1",
        )]);
        assert_eq!(
            list.client(ip("10.0.0.1"), &forwarded),
            ip("2001:db8:cafe::17")
        );
        let hidden = headers(&[("forwarded", "for=_hidden, for=10.0.0.3")]);
        assert_eq!(list.client(ip("10.0.0.1"), &hidden), ip("10.0.0.3"));
    }
}
