//! Pod IPs from the node's pod CIDR: the lowest free address, skipping the range's network and
//! broadcast addresses and the bridge's gateway. Addresses of sandboxes found at start-up are
//! claimed again for their pods, so a restarted agent never hands out an address in use.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("invalid pod CIDR {0:?}: expected a.b.c.d/n with n between 8 and 30")]
    Cidr(String),
    #[error("pod CIDR {0} is full")]
    Full(String),
}

/// An IPv4 range `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, IpamError> {
        let bad = || IpamError::Cidr(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.base)
    }

    /// Whether `inner` lies wholly inside this range.
    pub fn covers(&self, inner: &Cidr) -> bool {
        inner.prefix >= self.prefix && self.contains(inner.base)
    }

    fn last(&self) -> u32 {
        u32::from(self.base) | !self.mask()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The engine's own allocation range on a network with subnet `net` holding this node's pod
/// CIDR `pods`: the network's first /24 when the network is wider than the node's range (pod
/// CIDRs of `rudder up` start at the second), its last /24 if the node uses the first; the last
/// /28 of the node's range when the network is exactly that range (one network per host), which
/// the node's allocator then leaves alone.
pub fn engine_range(net: &Cidr, pods: &Cidr) -> Cidr {
    if net.prefix < pods.prefix && net.prefix <= 24 {
        let first = Cidr {
            base: net.base,
            prefix: 24,
        };
        if first.covers(pods) || pods.covers(&first) {
            Cidr {
                base: Ipv4Addr::from(net.last() & !0xff),
                prefix: 24,
            }
        } else {
            first
        }
    } else {
        Cidr {
            base: Ipv4Addr::from(pods.last() & !0xf),
            prefix: 28.max(pods.prefix),
        }
    }
}

/// Allocations by pod uid.
#[derive(Debug)]
pub struct Ipam {
    cidr: Cidr,
    gateway: Ipv4Addr,
    by_pod: BTreeMap<String, Ipv4Addr>,
    excluded: Vec<Cidr>,
}

impl Ipam {
    pub fn new(cidr: Cidr, gateway: Ipv4Addr) -> Self {
        Ipam {
            cidr,
            gateway,
            by_pod: BTreeMap::new(),
            excluded: Vec::new(),
        }
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// Never hands out addresses in `range` (the engine's own allocation range).
    pub fn exclude(&mut self, range: Cidr) {
        self.excluded.push(range);
    }

    /// The pod's address: the one it has, or the lowest free one.
    pub fn allocate(&mut self, pod_uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.by_pod.get(pod_uid) {
            return Ok(*ip);
        }
        let used: std::collections::BTreeSet<Ipv4Addr> = self.by_pod.values().copied().collect();
        let first = u32::from(self.cidr.base) + 1;
        for n in first..self.cidr.last() {
            let ip = Ipv4Addr::from(n);
            let excluded = self.excluded.iter().any(|r| r.contains(ip));
            if ip != self.gateway && !used.contains(&ip) && !excluded {
                self.by_pod.insert(pod_uid.to_string(), ip);
                return Ok(ip);
            }
        }
        Err(IpamError::Full(self.cidr.to_string()))
    }

    /// Records an address found in use (a sandbox adopted at start-up).
    pub fn claim(&mut self, pod_uid: &str, ip: Ipv4Addr) {
        if self.cidr.contains(ip) {
            self.by_pod.insert(pod_uid.to_string(), ip);
        }
    }

    pub fn release(&mut self, pod_uid: &str) {
        self.by_pod.remove(pod_uid);
    }

    pub fn in_use(&self) -> usize {
        self.by_pod.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_skipping_reserved_and_claimed() {
        let cidr = Cidr::parse("10.88.0.7/24").expect("cidr");
        assert_eq!(cidr.to_string(), "10.88.0.0/24");
        let mut ipam = Ipam::new(cidr, Ipv4Addr::new(10, 88, 0, 1));
        ipam.claim("old", Ipv4Addr::new(10, 88, 0, 2));
        ipam.claim("foreign", Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(ipam.allocate("a"), Ok(Ipv4Addr::new(10, 88, 0, 3)));
        assert_eq!(
            ipam.allocate("a"),
            Ok(Ipv4Addr::new(10, 88, 0, 3)),
            "stable"
        );
        ipam.release("old");
        assert_eq!(ipam.allocate("b"), Ok(Ipv4Addr::new(10, 88, 0, 2)));
        assert_eq!(ipam.in_use(), 2);
    }

    #[test]
    fn excluded_ranges_are_skipped() {
        let cidr = Cidr::parse("10.5.0.0/24").expect("cidr");
        let mut ipam = Ipam::new(cidr, Ipv4Addr::new(10, 5, 0, 1));
        ipam.exclude(Cidr::parse("10.5.0.0/28").expect("range"));
        assert_eq!(ipam.allocate("a"), Ok(Ipv4Addr::new(10, 5, 0, 16)));
        assert_eq!(engine_range(&cidr, &cidr).to_string(), "10.5.0.240/28");
        let wide = Cidr::parse("10.88.0.0/16").expect("net");
        let node = Cidr::parse("10.88.3.0/24").expect("node");
        assert_eq!(engine_range(&wide, &node).to_string(), "10.88.0.0/24");
        let first = Cidr::parse("10.88.0.0/24").expect("node");
        assert_eq!(engine_range(&wide, &first).to_string(), "10.88.255.0/24");
    }

    #[test]
    fn full_and_bad_ranges() {
        let mut ipam = Ipam::new(
            Cidr::parse("10.1.0.0/30").expect("cidr"),
            Ipv4Addr::new(10, 1, 0, 1),
        );
        assert_eq!(ipam.allocate("a"), Ok(Ipv4Addr::new(10, 1, 0, 2)));
        assert_eq!(
            ipam.allocate("b"),
            Err(IpamError::Full("10.1.0.0/30".into()))
        );
        assert!(Cidr::parse("10.1.0.0").is_err());
        assert!(Cidr::parse("10.1.0.0/31").is_err());
        let wide = Cidr::parse("10.88.0.0/16").expect("cidr");
        assert!(wide.covers(&Cidr::parse("10.88.3.0/24").expect("cidr")));
        assert!(!wide.covers(&Cidr::parse("10.89.3.0/24").expect("cidr")));
    }
}
