//! The exchange's per-source limits: `--exchange-trusted-proxies` ranges, the client address taken
//! from `X-Forwarded-For` behind them, and the concurrency slots, against a model. A client never
//! gets more than its slots or everyone's, slots come back when dropped, and the forwarded address
//! counts only behind a trusted proxy.
#![no_main]
use std::collections::HashMap;
use std::net::IpAddr;

use arbitrary::Arbitrary;
use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use oam_trust::federation::limits::{Cidr, SourceLimits, client_address};

#[derive(Arbitrary, Debug)]
struct Input {
    peer: Address,
    trusted: Vec<String>,
    forwarded: Vec<Vec<u8>>,
    probes: Vec<Address>,
    max_per_source: u8,
    max_total: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Address {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl From<Address> for IpAddr {
    fn from(a: Address) -> IpAddr {
        match a {
            Address::V4(b) => IpAddr::from(b),
            Address::V6(b) => IpAddr::from(b),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Take a slot for one of a few sources.
    Take(u8),
    /// Drop the n-th held slot.
    Release(u8),
}

/// `ip` in `addr/prefix` by comparing bits, IPv4-mapped IPv6 read as IPv4.
fn reference_contains(addr: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let bits = |a: IpAddr| -> Vec<bool> {
        let bytes = match a {
            IpAddr::V4(v) => v.octets().to_vec(),
            IpAddr::V6(v) => v.octets().to_vec(),
        };
        bytes
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
            .collect()
    };
    let ip = ip.to_canonical();
    if addr.is_ipv4() != ip.is_ipv4() {
        return false;
    }
    bits(addr)[..usize::from(prefix)] == bits(ip)[..usize::from(prefix)]
}

fuzz_target!(|input: Input| {
    let mut trusted = Vec::new();
    for text in input.trusted.iter().take(8) {
        let Ok(cidr) = text.parse::<Cidr>() else {
            continue;
        };
        let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr = addr.parse().expect("a parsed range has an address");
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix.parse().expect("a prefix")
        };
        assert!(prefix <= max, "{text:?}");
        for probe in input.probes.iter().take(8).chain([&input.peer]) {
            let ip = IpAddr::from(*probe);
            assert_eq!(
                cidr.contains(ip),
                reference_contains(addr, prefix, ip),
                "{text:?} {ip}"
            );
        }
        trusted.push(cidr);
    }

    let mut headers = HeaderMap::new();
    let mut forwarded = Vec::new();
    for value in input.forwarded.iter().take(8) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            if let Ok(text) = v.to_str() {
                forwarded.extend(
                    text.split(',')
                        .filter_map(|a| a.trim().parse::<IpAddr>().ok()),
                );
            }
            headers.append("x-forwarded-for", v);
        }
    }
    let peer = IpAddr::from(input.peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let client = client_address(peer, &headers, &trusted);
    if !is_trusted(peer) {
        assert_eq!(
            client, peer,
            "a client that is no proxy picked its own address"
        );
    } else if client != peer {
        assert!(forwarded.contains(&client) && !is_trusted(client));
        let after = forwarded
            .iter()
            .rposition(|a| *a == client)
            .expect("in the header");
        assert!(
            forwarded[after + 1..].iter().all(|a| is_trusted(*a)),
            "only trusted proxies stand right of the client"
        );
    } else {
        assert!(forwarded.iter().all(|a| is_trusted(*a) || *a == peer));
    }

    let (per_source, total) = (
        usize::from(input.max_per_source % 8),
        usize::from(input.max_total % 16),
    );
    let limits = SourceLimits::new(per_source, total);
    let sources: Vec<IpAddr> = (0..4u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
    let mut held = Vec::new();
    let mut model: HashMap<IpAddr, usize> = HashMap::new();
    for op in input.ops.iter().take(64) {
        match *op {
            Op::Take(i) => {
                let ip = sources[usize::from(i % 4)];
                let n = model.get(&ip).copied().unwrap_or(0);
                let in_all: usize = model.values().sum();
                match limits.take(ip) {
                    Ok(slot) => {
                        assert!(n < per_source && in_all < total, "a slot beyond the limits");
                        *model.entry(ip).or_default() += 1;
                        held.push((ip, slot));
                    }
                    Err(denial) => {
                        assert!(
                            n >= per_source || in_all >= total,
                            "refused within the limits"
                        );
                        assert_eq!(denial.category, "concurrency_limit");
                    }
                }
            }
            Op::Release(i) => {
                if !held.is_empty() {
                    let (ip, slot) = held.remove(usize::from(i) % held.len());
                    drop(slot);
                    *model.get_mut(&ip).expect("held") -= 1;
                }
            }
        }
    }
    drop(held);
    if per_source > 0 && total > 0 {
        assert!(limits.take(sources[0]).is_ok(), "every slot came back");
    }
});
