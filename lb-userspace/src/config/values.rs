//! Value types of lb.toml that validate themselves while being deserialized,
//! so a bad value is reported with the line and column of the value.

use serde::Deserialize;
use std::{fmt, net::IpAddr, net::Ipv4Addr, str::FromStr, time::Duration};

/// Largest IPVS weight (ipvsadm accepts 0..=65535).
pub const MAX_WEIGHT: i64 = 65_535;

/// A duration in seconds, integer or fractional, as keepalived writes them.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Seconds(f64);

impl Seconds {
    pub const fn from_secs(s: u32) -> Self {
        Self(s as f64)
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0
    }
    pub fn as_duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }
}

impl TryFrom<f64> for Seconds {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if v.is_finite() && v >= 0.0 && v <= u32::MAX as f64 {
            Ok(Self(v))
        } else {
            Err(format!("expected a duration in seconds >= 0, got {v}"))
        }
    }
}

/// A TCP/UDP port, 0..=65535 (where 0 is allowed is checked by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "i64")]
pub struct Port(pub u16);

impl TryFrom<i64> for Port {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        u16::try_from(v)
            .map(Self)
            .map_err(|_| format!("expected a port 0..=65535, got {v}"))
    }
}

/// An IPVS weight, 0..=65535; 0 = quiesced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Weight(pub u32);

impl Default for Weight {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<i64> for Weight {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (0..=MAX_WEIGHT).contains(&v) {
            Ok(Self(v as u32))
        } else {
            Err(format!("expected a weight 0..={MAX_WEIGHT}, got {v}"))
        }
    }
}

/// An integer in an inclusive range, for counts and identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Bounded<const MIN: i64, const MAX: i64>(pub i64);

impl<const MIN: i64, const MAX: i64> TryFrom<i64> for Bounded<MIN, MAX> {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&v) {
            Ok(Self(v))
        } else {
            Err(format!("expected an integer {MIN}..={MAX}, got {v}"))
        }
    }
}

/// "addr[/prefix]" as in keepalived's virtual_ipaddress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IpWithPrefix {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl TryFrom<String> for IpWithPrefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.as_str(), None),
        };
        let addr = IpAddr::from_str(addr)
            .map_err(|_| format!("expected \"address[/prefix]\", got {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix of {s:?} must be 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpWithPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// persistence_granularity (ipvsadm -M): a contiguous IPv4 netmask such
/// as "255.255.255.0", or, for an IPv6 service, the prefix length of a
/// client network, 0..=128 (64 or "64"), as IPVS and keepalived take it.
/// Which one a service needs is checked by validate (its VIP's family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "NumberOrText")]
pub enum Granularity {
    Netmask(Ipv4Addr),
    Prefix(u8),
}

/// What a granularity is written as.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(i64),
    Text(String),
}

/// Longest IPv6 prefix.
const IPV6_PREFIX_MAX: i64 = 128;

impl TryFrom<NumberOrText> for Granularity {
    type Error = String;
    fn try_from(v: NumberOrText) -> Result<Self, String> {
        let prefix = |n: i64| {
            u8::try_from(n)
                .ok()
                .filter(|p| i64::from(*p) <= IPV6_PREFIX_MAX)
                .map(Self::Prefix)
                .ok_or_else(|| format!("expected a prefix length 0..={IPV6_PREFIX_MAX}, got {n}"))
        };
        let s = match v {
            NumberOrText::Number(n) => return prefix(n),
            NumberOrText::Text(s) => s,
        };
        if let Ok(n) = s.parse::<i64>() {
            return prefix(n);
        }
        let mask = Ipv4Addr::from_str(&s).map_err(|_| {
            format!(
                "expected an IPv4 netmask like \"255.255.255.0\" or an IPv6 prefix length like 64, got {s:?}"
            )
        })?;
        let bits = u32::from(mask);
        // Contiguous: the ones form a prefix, so inverting gives 2^n - 1.
        if (!bits).wrapping_add(1) & !bits != 0 {
            return Err(format!("netmask {s:?} is not contiguous"));
        }
        Ok(Self::Netmask(mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_must_be_contiguous_and_a_prefix_at_most_128() {
        let g = |s: &str| Granularity::try_from(NumberOrText::Text(s.to_string()));
        assert!(g("255.255.255.0").is_ok());
        assert!(g("255.255.255.255").is_ok());
        assert!(g("0.0.0.0").is_ok());
        assert!(g("255.0.255.0").is_err());
        assert_eq!(g("64"), Ok(Granularity::Prefix(64)));
        assert!(g("129").is_err());
        assert_eq!(
            Granularity::try_from(NumberOrText::Number(48)),
            Ok(Granularity::Prefix(48))
        );
        assert!(Granularity::try_from(NumberOrText::Number(-1)).is_err());
    }

    #[test]
    fn ip_with_prefix_defaults_to_host_route() {
        let v = IpWithPrefix::try_from("172.16.122.100".to_string()).unwrap();
        assert_eq!(v.prefix, 32);
        let v = IpWithPrefix::try_from("10.0.0.1/24".to_string()).unwrap();
        assert_eq!(v.prefix, 24);
        assert!(IpWithPrefix::try_from("10.0.0.1/33".to_string()).is_err());
        assert!(IpWithPrefix::try_from("banana".to_string()).is_err());
    }
}
