//! The exchange's concurrency limits: at most `--exchange-max-concurrent-per-source` requests in
//! flight from one client and `--exchange-max-concurrent` in all; more are refused (429) before the
//! body is read. The client is the TCP peer, unless the peer is one of `--exchange-trusted-proxies`:
//! then it is the right-most address of `X-Forwarded-For` that is not a trusted proxy (what the
//! Ingress in front saw), so clients behind the chart's Ingress do not share one budget and no
//! client can pick its own address by sending the header directly.
use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;

use axum::http::HeaderMap;

use super::decision::{Denial, ErrorCode};

/// An address range, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address range like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// The address a request counts against: see the module docs.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(peer)
}

/// Requests in flight per client address and in all.
pub struct SourceLimits {
    max_per_source: usize,
    max_total: usize,
    in_flight: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl SourceLimits {
    pub fn new(max_per_source: usize, max_total: usize) -> Self {
        SourceLimits {
            max_per_source,
            max_total,
            in_flight: Mutex::default(),
        }
    }

    /// A slot for one request from `ip`, or the refusal when `ip` (or everyone) already has the
    /// maximum in flight.
    pub fn take(&self, ip: IpAddr) -> Result<SourceSlot<'_>, Denial> {
        let mut guard = self.lock();
        let (total, map) = &mut *guard;
        if *total >= self.max_total {
            return Err(Denial::new(
                ErrorCode::TemporarilyUnavailable,
                "concurrency_limit",
                format!(
                    "more than {} concurrent requests in all; retry with backoff",
                    self.max_total
                ),
            ));
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_source {
            return Err(Denial::new(
                ErrorCode::TemporarilyUnavailable,
                "concurrency_limit",
                format!(
                    "more than {} concurrent requests from {ip}; retry with backoff",
                    self.max_per_source,
                ),
            ));
        }
        *n += 1;
        *total += 1;
        Ok(SourceSlot { limits: self, ip })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Releases a source's concurrency slot when dropped.
pub struct SourceSlot<'a> {
    limits: &'a SourceLimits,
    ip: IpAddr,
}

impl Drop for SourceSlot<'_> {
    fn drop(&mut self) {
        let mut guard = self.limits.lock();
        let (total, map) = &mut *guard;
        *total -= 1;
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_at_most_its_slots_and_gets_them_back() {
        let limits = SourceLimits::new(2, 100);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = limits.take(a).unwrap();
        let _second = limits.take(a).unwrap();
        let refusal = limits
            .take(a)
            .err()
            .expect("a third concurrent request is refused");
        assert_eq!(refusal.category, "concurrency_limit");
        assert_eq!(
            refusal.description,
            "more than 2 concurrent requests from 10.0.0.1; retry with backoff"
        );
        assert!(limits.take(b).is_ok(), "other sources are not affected");
        drop(first);
        assert!(limits.take(a).is_ok(), "a finished request frees its slot");
    }

    #[test]
    fn released_sources_are_forgotten() {
        let limits = SourceLimits::new(1, 100);
        drop(limits.take(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(*limits.lock(), (0, HashMap::new()));
    }

    #[test]
    fn everyone_together_gets_at_most_the_global_slots() {
        let limits = SourceLimits::new(10, 2);
        let _a = limits.take(IpAddr::from([10, 0, 0, 1])).unwrap();
        let _b = limits.take(IpAddr::from([10, 0, 0, 2])).unwrap();
        let refusal = limits.take(IpAddr::from([10, 0, 0, 3])).err().unwrap();
        assert_eq!(
            refusal.description,
            "more than 2 concurrent requests in all; retry with backoff"
        );
    }

    #[test]
    fn the_forwarded_address_counts_only_behind_a_trusted_proxy() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.1.2.3".parse().unwrap(),
        );
        let proxy = IpAddr::from([10, 0, 0, 5]);
        assert_eq!(
            client_address(proxy, &headers, &trusted),
            IpAddr::from([198, 51, 100, 7]),
            "the right-most address no trusted proxy added"
        );
        let direct = IpAddr::from([192, 0, 2, 1]);
        assert_eq!(
            client_address(direct, &headers, &trusted),
            direct,
            "a client cannot pick its address by sending the header itself"
        );
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let one: Cidr = "192.0.2.1".parse().unwrap();
        assert!(one.contains(IpAddr::from([192, 0, 2, 1])));
        assert!(!one.contains(IpAddr::from([192, 0, 2, 2])));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(IpAddr::from([8, 8, 8, 8])));
        assert!(!all.contains("::1".parse().unwrap()), "families never mix");
    }
}
