//! The exchange's per-source concurrency limit: at most `--exchange-max-concurrent-per-source`
//! requests in flight from one IP; more are refused (429) before the body is read.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use super::decision::{Denial, ErrorCode};

/// Requests in flight per source IP.
pub struct SourceLimits {
    max_per_source: usize,
    in_flight: Mutex<HashMap<IpAddr, usize>>,
}

impl SourceLimits {
    pub fn new(max_per_source: usize) -> Self {
        SourceLimits {
            max_per_source,
            in_flight: Mutex::default(),
        }
    }

    /// A slot for one request from `ip`, or `None` when `ip` already has the maximum in flight.
    pub fn take(&self, ip: IpAddr) -> Option<SourceSlot<'_>> {
        let mut map = self.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_source {
            return None;
        }
        *n += 1;
        Some(SourceSlot { limits: self, ip })
    }

    /// The refusal of a request over the limit.
    pub fn refusal(&self, ip: IpAddr) -> Denial {
        Denial::new(
            ErrorCode::TemporarilyUnavailable,
            "concurrency_limit",
            format!(
                "more than {} concurrent requests from {ip}; retry with backoff",
                self.max_per_source,
            ),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
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
        let mut map = self.limits.lock();
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
        let limits = SourceLimits::new(2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = limits.take(a).unwrap();
        let _second = limits.take(a).unwrap();
        assert!(
            limits.take(a).is_none(),
            "a third concurrent request is refused"
        );
        assert!(limits.take(b).is_some(), "other sources are not affected");
        drop(first);
        assert!(
            limits.take(a).is_some(),
            "a finished request frees its slot"
        );
        let refusal = limits.refusal(a);
        assert_eq!(refusal.category, "concurrency_limit");
        assert_eq!(
            refusal.description,
            "more than 2 concurrent requests from 10.0.0.1; retry with backoff"
        );
    }

    #[test]
    fn released_sources_are_forgotten() {
        let limits = SourceLimits::new(1);
        drop(limits.take(IpAddr::from([10, 0, 0, 1])));
        assert!(limits.lock().is_empty());
    }
}
