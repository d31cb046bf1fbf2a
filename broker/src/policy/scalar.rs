//! Typed condition values: exact decimals, instants, CIDR blocks. Parsed once for policy
//! values and per request for context values, never through floating point.

use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Fractional digits kept by [`Decimal`]; IAM numbers are integers or short decimals.
const SCALE_DIGITS: u32 = 18;

/// An exact decimal, stored as value × 10^18 (about ±1.7 × 10^20 of range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Decimal(i128);

impl Decimal {
    /// Parses `[+-]digits[.digits][e[+-]digits]`; `None` when malformed, out of range, or more
    /// precise than 18 fractional digits (rather than rounding, which could flip a comparison).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let s = text.trim();
        let (negative, s) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
            None => (s, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Shift the decimal point by the exponent, then scale to 18 fractional digits.
        let digits: String = int.chars().chain(frac.chars()).collect();
        let point = i64::try_from(int.len()).ok()? + i64::from(exp);
        let digits = digits.trim_start_matches('0');
        let lead_zeros = i64::try_from(int.len() + frac.len() - digits.len()).ok()?;
        let point = point - lead_zeros;
        let mut value: i128 = 0;
        for (i, b) in digits.bytes().enumerate() {
            let position = point - i64::try_from(i).ok()? - 1; // power of ten of this digit
            let d = i128::from(b - b'0');
            if position < -i64::from(SCALE_DIGITS) {
                if d != 0 {
                    return None;
                }
                continue;
            }
            let power = u32::try_from(position + i64::from(SCALE_DIGITS)).ok()?;
            value = value.checked_add(d.checked_mul(10i128.checked_pow(power)?)?)?;
        }
        Some(Decimal(if negative { -value } else { value }))
    }

    /// The integer `n` as a decimal.
    #[cfg(test)]
    pub(crate) fn from_int(n: i64) -> Self {
        Decimal(i128::from(n) * 10i128.pow(SCALE_DIGITS))
    }
}

/// An instant in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Instant(i128);

impl Instant {
    /// Parses epoch seconds or an ISO 8601 date/time: RFC 3339, a date alone (midnight UTC), or
    /// a date-time without an offset (UTC), with or without seconds.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let s = text.trim();
        if !s.is_empty() && s.bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-')) {
            let secs: i64 = s.parse().ok()?;
            return Some(Instant(i128::from(secs) * 1_000_000_000));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(Self::from_parts(t.timestamp(), t.timestamp_subsec_nanos()));
        }
        // Offsets without seconds: 2026-11-05T10:00+01:00 / 2026-11-05T10:00Z.
        for fmt in ["%Y-%m-%dT%H:%M%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
            if let Ok(t) = DateTime::parse_from_str(s, fmt) {
                return Some(Self::from_parts(t.timestamp(), t.timestamp_subsec_nanos()));
            }
        }
        let naive = s.strip_suffix(['Z', 'z']).unwrap_or(s);
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S%.f"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(naive, fmt) {
                let t = t.and_utc();
                return Some(Self::from_parts(t.timestamp(), t.timestamp_subsec_nanos()));
            }
        }
        let date = NaiveDate::parse_from_str(naive, "%Y-%m-%d").ok()?;
        let t = date.and_hms_opt(0, 0, 0)?.and_utc();
        Some(Self::from_parts(t.timestamp(), 0))
    }

    fn from_parts(secs: i64, nanos: u32) -> Self {
        Instant(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
    }
}

/// An IPv4 or IPv6 network; a plain address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cidr {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Cidr {
    /// Parses `addr` or `addr/len`; host bits are cleared, as IAM accepts `10.1.2.3/24`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let s = text.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (a, Some(l.parse::<u32>().ok()?))
            }
            None => (s, None),
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => {
                let len = len.unwrap_or(32);
                let mask = if len == 0 { 0 } else { u32::MAX.checked_shl(32 - len.min(32))? };
                (len <= 32).then_some(Cidr::V4 { net: u32::from(a) & mask, mask })
            }
            IpAddr::V6(a) => {
                let len = len.unwrap_or(128);
                let mask = if len == 0 { 0 } else { u128::MAX.checked_shl(128 - len.min(128))? };
                (len <= 128).then_some(Cidr::V6 { net: u128::from(a) & mask, mask })
            }
        }
    }

    /// Whether `addr` lies in the network; IPv4-mapped IPv6 addresses count as IPv4.
    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
            v4 => v4,
        };
        match (self, addr) {
            (Cidr::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == *net,
            (Cidr::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == *net,
            _ => false,
        }
    }
}

/// Parses a request's address; a trailing `/len` is tolerated and ignored.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    let s = text.trim();
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.parse().ok()
}

/// Reads `true`/`false` in any letter case, as IAM's Bool and Null operators do.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Decodes standard base64 (padding optional), for BinaryEquals.
pub(crate) fn parse_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use base64::Engine;
    let s = text.trim();
    STANDARD.decode(s).or_else(|_| STANDARD_NO_PAD.decode(s)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        let d = |s| Decimal::parse(s);
        assert_eq!(d("10"), Some(Decimal::from_int(10)));
        assert_eq!(d("10.000"), d("1e1"));
        assert_eq!(d("0.1"), d(".1"));
        assert_eq!(d("-0.5"), d("-5e-1"));
        assert!(d("0.1") < d("0.10000000000000001"));
        assert!(d("-3") < d("2"));
        assert_eq!(d("007"), Some(Decimal::from_int(7)));
        assert_eq!(d("1.5e2"), Some(Decimal::from_int(150)));
        for bad in ["", "-", ".", "1..2", "abc", "1e", "0x10", "1e999", "1 2", "0.0000000000000000001", "NaN"]
        {
            assert_eq!(d(bad), None, "{bad}");
        }
        assert_eq!(d("0.1000000000000000000000"), d("0.1"));
    }

    #[test]
    fn instants() {
        let t = |s| Instant::parse(s);
        let base = t("2026-11-05T10:00:00Z").unwrap();
        assert_eq!(t("1793872800"), Some(base));
        assert_eq!(t("2026-11-05T11:00:00+01:00"), Some(base));
        assert_eq!(t("2026-11-05T10:00Z"), Some(base));
        assert_eq!(t("2026-11-05T10:00"), Some(base));
        assert_eq!(t("2026-11-05T10:00:00"), Some(base));
        assert!(t("2026-11-05T10:00:00.5Z").unwrap() > base);
        assert_eq!(t("2026-11-05"), t("2026-11-05T00:00:00Z"));
        for bad in ["", "tomorrow", "2026-13-01", "2026-11-05T25:00:00Z", "12:00"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.2.3/16").unwrap();
        assert!(c.contains("10.1.200.1".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains("::1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/-1", "host", "10.0.0.0/8/8"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
