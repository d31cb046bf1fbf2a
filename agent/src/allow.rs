//! The operator's allow-list for port forwarding (`--allow-port HOST:PORT`).
//!
//! A pattern's host may carry `*` and `?` wildcards and is matched case-insensitively against
//! the host as the broker asked for it and, for IP literals and resolved addresses, against
//! the address text. The port is a number, a range `lo-hi`, or `*`; IPv6 hosts go in brackets.
//! Link-local and cloud metadata addresses are refused in every mode unless a pattern names
//! the address itself (no wildcards): a broad `*:*` must not open the instance's credentials.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// AWS's IPv6 instance metadata endpoint, which is not in fe80::/10.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// One `HOST:PORT` pattern of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The host glob, lower-cased, without IPv6 brackets.
    host: String,
    /// The host as an address when the pattern names exactly one (no wildcards).
    exact_ip: Option<IpAddr>,
    /// Inclusive port range.
    ports: (u16, u16),
    /// The pattern as the operator wrote it, for logs.
    text: String,
}

/// A pattern that could not be parsed; the message says why and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid allow-port pattern {pattern:?}: {why}")]
pub struct PatternError {
    pattern: String,
    why: String,
}

impl PatternError {
    fn new(pattern: &str, why: impl Into<String>) -> Self {
        PatternError { pattern: pattern.to_owned(), why: why.into() }
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, PatternError> {
        let text = text.trim();
        let err = |why: &str| PatternError::new(text, why);
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) =
                rest.split_once(']').ok_or_else(|| err("missing ']' after a bracketed IPv6 host"))?;
            let port = after.strip_prefix(':').ok_or_else(|| err("expected ':PORT' after ']'"))?;
            if !host.contains(':') || !host.chars().all(|c| c.is_ascii_hexdigit() || ":.*?".contains(c)) {
                return Err(err("brackets are for IPv6 addresses, e.g. [::1]:22"));
            }
            (host, port)
        } else {
            let (host, port) =
                text.rsplit_once(':').ok_or_else(|| err("expected HOST:PORT, e.g. db.internal:5432"))?;
            if host.contains(':') {
                return Err(err("IPv6 addresses go in brackets, e.g. [::1]:22"));
            }
            if let Some(bad) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || ".-_*?".contains(*c))) {
                return Err(err(&format!("character {bad:?} cannot appear in a host name")));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(err("the host is empty (use * for any host)"));
        }
        let ports = parse_ports(port).map_err(|why| err(&why))?;
        let host = host.to_ascii_lowercase();
        let exact_ip = host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
        Ok(Pattern { host, exact_ip, ports, text: text.to_owned() })
    }
}

/// `*`, `N` or `LO-HI`.
fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    let number =
        |s: &str| s.trim().parse::<u16>().map_err(|_| format!("port {s:?} is not a number from 0 to 65535"));
    match text.trim() {
        "" => Err("the port is empty (use * for any port)".into()),
        "*" => Ok((0, u16::MAX)),
        range if range.contains('-') => {
            let (lo, hi) = range.split_once('-').unwrap_or((range, ""));
            let (lo, hi) = (number(lo)?, number(hi)?);
            if lo > hi {
                return Err(format!("port range {lo}-{hi} is empty (low end above high end)"));
            }
            Ok((lo, hi))
        }
        single => number(single).map(|p| (p, p)),
    }
}

impl Pattern {
    fn covers_port(&self, port: u16) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
    }

    /// Could this pattern's host match the text of some IP address?
    fn may_match_address(&self) -> bool {
        self.host.chars().all(|c| c.is_ascii_hexdigit() || ":.*?".contains(c))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which `host:port` targets the agent may connect to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Empty means the default: anything except link-local and metadata addresses.
    patterns: Vec<Pattern>,
}

/// What the allow-list says about a requested host before it is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precheck {
    /// Allowed by name (or by the default); resolved addresses still face the link-local rule.
    ByName,
    /// Not allowed by name, but a pattern may allow some of the addresses it resolves to.
    ByAddress,
    /// No pattern can allow it: refuse without resolving.
    Refused,
}

impl AllowList {
    /// The default list: every host and port except link-local and metadata addresses.
    pub fn allow_all() -> Self {
        AllowList::default()
    }

    /// A list of exactly these patterns; an empty slice gives the default.
    pub fn new(patterns: Vec<Pattern>) -> Self {
        AllowList { patterns }
    }

    /// Parses patterns as given on the command line or in the environment.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let patterns = patterns
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowList { patterns })
    }

    /// True when no pattern was given.
    pub fn is_default(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Checks the requested host and port as the broker sent them.
    pub fn precheck(&self, host: &str, port: u16) -> Precheck {
        if self.is_default() {
            return Precheck::ByName;
        }
        let name = normalize_host(host);
        let mut by_address = false;
        for pattern in self.patterns.iter().filter(|p| p.covers_port(port)) {
            if glob_match(&pattern.host, &name) {
                return Precheck::ByName;
            }
            by_address |= pattern.may_match_address();
        }
        if by_address {
            Precheck::ByAddress
        } else {
            Precheck::Refused
        }
    }

    /// May the agent connect to `ip:port`, given what [`AllowList::precheck`] said of the name?
    pub fn permits(&self, precheck: Precheck, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        if precheck == Precheck::Refused {
            return false;
        }
        if self.names_exactly(ip, port) {
            return true;
        }
        if is_link_local(ip) {
            return false;
        }
        match precheck {
            Precheck::ByName => true,
            Precheck::Refused => false,
            Precheck::ByAddress => {
                let text = ip.to_string();
                self.patterns.iter().any(|p| p.covers_port(port) && glob_match(&p.host, &text))
            }
        }
    }

    /// Whether a pattern names this very address, which is what it takes to reach link-local.
    fn names_exactly(&self, ip: IpAddr, port: u16) -> bool {
        self.patterns.iter().any(|p| p.exact_ip == Some(ip) && p.covers_port(port))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            return f.write_str("any host and port except link-local and metadata addresses");
        }
        for (i, pattern) in self.patterns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{pattern}")?;
        }
        Ok(())
    }
}

/// The host as patterns see it: lower case, IPv6 brackets dropped, addresses in canonical text
/// so that `[0:0::1]` and `::1` are the same host.
pub fn normalize_host(host: &str) -> String {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => bare.to_ascii_lowercase(),
    }
}

/// Link-local (169.254.0.0/16, fe80::/10) or a cloud metadata address (fd00:ec2::254).
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == METADATA_V6,
    }
}

/// `*` matches any run of characters, `?` exactly one; both sides are already lower case.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and how much text it has swallowed so far, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> AllowList {
        AllowList::parse(patterns).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The whole decision for a host that resolves to `addrs`.
    fn allowed(list: &AllowList, host: &str, port: u16, addrs: &[&str]) -> bool {
        let pre = list.precheck(host, port);
        addrs.iter().any(|a| list.permits(pre, ip(a), port))
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("db-?.internal", "db-1.internal"));
        assert!(!glob_match("db-?.internal", "db-12.internal"));
        assert!(glob_match("*.internal", "a.b.internal"));
        assert!(!glob_match("*.internal", "internal"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("10.0.*", "10.0.3.4"));
        assert!(!glob_match("abc", "abcd"));
    }

    #[test]
    fn parses_hosts_and_ports() {
        let p: Pattern = "DB.Internal:5432".parse().unwrap();
        assert_eq!((p.host.as_str(), p.ports, p.exact_ip), ("db.internal", (5432, 5432), None));
        let p: Pattern = "*:8000-8080".parse().unwrap();
        assert_eq!((p.host.as_str(), p.ports), ("*", (8000, 8080)));
        let p: Pattern = "host:*".parse().unwrap();
        assert_eq!(p.ports, (0, 65535));
        let p: Pattern = "[::1]:22".parse().unwrap();
        assert_eq!((p.host.as_str(), p.exact_ip), ("::1", Some(ip("::1"))));
        let p: Pattern = "[fe80::*]:22".parse().unwrap();
        assert_eq!((p.host.as_str(), p.exact_ip), ("fe80::*", None));
        let p: Pattern = "169.254.169.254:80".parse().unwrap();
        assert_eq!(p.exact_ip, Some(ip("169.254.169.254")));
        assert_eq!(p.to_string(), "169.254.169.254:80");
    }

    #[test]
    fn bad_patterns_say_why() {
        let cases = [
            ("db.internal", "expected HOST:PORT"),
            (":22", "host is empty"),
            ("db:", "port is empty"),
            ("db:http", "not a number"),
            ("db:70000", "not a number"),
            ("db:90-80", "range 90-80 is empty"),
            ("db:1-", "not a number"),
            ("::1:22", "go in brackets"),
            ("[::1:22", "missing ']'"),
            ("[::1]22", "expected ':PORT'"),
            ("[db]:22", "brackets are for IPv6"),
            ("db/x:22", "cannot appear"),
            ("db x:22", "cannot appear"),
        ];
        for (text, why) in cases {
            let err = text.parse::<Pattern>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(text), "{text}: {err}");
        }
        assert!(AllowList::parse(&["ok:1", "bad"]).is_err());
    }

    #[test]
    fn empty_entries_are_skipped() {
        assert!(list(&["", "  "]).is_default());
        assert_eq!(list(&[" a:1 ", ""]).patterns.len(), 1);
    }

    #[test]
    fn default_allows_all_but_link_local() {
        let all = AllowList::allow_all();
        assert!(allowed(&all, "localhost", 5432, &["127.0.0.1"]));
        assert!(allowed(&all, "example.com", 1, &["93.184.216.34", "2606:2800::1"]));
        assert!(!allowed(&all, "169.254.169.254", 80, &["169.254.169.254"]));
        assert!(!allowed(&all, "metadata.google.internal", 80, &["169.254.169.254"]));
        assert!(!allowed(&all, "fe80::1", 22, &["fe80::1"]));
        assert!(!allowed(&all, "fd00:ec2::254", 80, &["fd00:ec2::254"]));
        assert!(!allowed(&all, "mapped", 80, &["::ffff:169.254.169.254"]));
        // Only the link-local address of a mixed answer is dropped.
        assert!(allowed(&all, "mixed", 80, &["169.254.1.1", "10.0.0.1"]));
        assert!(!all.permits(Precheck::ByName, ip("169.254.1.1"), 80));
    }

    #[test]
    fn link_local_needs_an_explicit_address() {
        let imds = list(&["169.254.169.254:80"]);
        assert!(allowed(&imds, "169.254.169.254", 80, &["169.254.169.254"]));
        assert!(!allowed(&imds, "169.254.169.254", 443, &["169.254.169.254"]));
        assert!(!allowed(&imds, "169.254.169.253", 80, &["169.254.169.253"]));
        // A name that resolves to it is allowed too: the operator named the address.
        assert!(allowed(&imds, "instance-data", 80, &["169.254.169.254"]));
        assert!(allowed(&list(&["[fe80::1]:22"]), "[fe80::1]", 22, &["fe80::1"]));
        // Wildcards never reach link-local, by name or by address.
        for broad in [&["*:*"][..], &["169.254.*:*"], &["[fe80::*]:*"], &["metadata:80"]] {
            let l = list(broad);
            assert!(!allowed(&l, "169.254.169.254", 80, &["169.254.169.254"]), "{broad:?}");
            assert!(!allowed(&l, "fe80::1", 80, &["fe80::1"]), "{broad:?}");
            assert!(!allowed(&l, "metadata", 80, &["169.254.169.254"]), "{broad:?}");
        }
    }

    #[test]
    fn names_match_case_insensitively_with_wildcards() {
        let l = list(&["db-?.Internal:5432", "*.corp.example:8000-8080", "localhost:*"]);
        assert_eq!(l.precheck("DB-1.internal", 5432), Precheck::ByName);
        assert_eq!(l.precheck("db-12.internal", 5432), Precheck::Refused);
        assert_eq!(l.precheck("db-1.internal", 5433), Precheck::Refused);
        assert_eq!(l.precheck("web.CORP.example", 8080), Precheck::ByName);
        assert_eq!(l.precheck("web.corp.example", 8081), Precheck::Refused);
        assert_eq!(l.precheck("corp.example", 8000), Precheck::Refused);
        assert_eq!(l.precheck("LOCALHOST", 1), Precheck::ByName);
        assert!(allowed(&l, "db-1.internal", 5432, &["10.1.2.3"]));
        assert!(!allowed(&l, "evil", 5432, &["10.1.2.3"]));
    }

    #[test]
    fn addresses_match_as_text() {
        let l = list(&["10.0.*:22", "[2001:db8::*]:*", "127.0.0.1:5432"]);
        // A name not in the list may still resolve to an allowed address, and only those count.
        assert_eq!(l.precheck("bastion", 22), Precheck::ByAddress);
        assert!(l.permits(Precheck::ByAddress, ip("10.0.3.4"), 22));
        assert!(!l.permits(Precheck::ByAddress, ip("10.1.3.4"), 22));
        assert!(!l.permits(Precheck::ByAddress, ip("10.0.3.4"), 23));
        assert!(l.permits(Precheck::ByAddress, ip("2001:db8::7"), 443));
        // IP literals in the request are matched by their canonical text.
        assert_eq!(l.precheck("[2001:DB8:0::7]", 1), Precheck::ByName);
        assert_eq!(l.precheck("127.0.0.1", 5432), Precheck::ByName);
        // No pattern that could match an address on this port: refuse without resolving.
        let narrow = list(&["10.0.*:22", "127.0.0.1:5432", "db.internal:5432"]);
        assert_eq!(narrow.precheck("127.0.0.1", 5433), Precheck::Refused);
        assert_eq!(narrow.precheck("bastion", 21), Precheck::Refused);
        assert_eq!(list(&["db.internal:5432"]).precheck("other", 5432), Precheck::Refused);
        assert_eq!(l.precheck("127.0.0.1", 5433), Precheck::ByAddress);
    }

    #[test]
    fn link_local_ranges() {
        for yes in
            ["169.254.0.1", "169.254.169.254", "fe80::1", "febf::1", "fd00:ec2::254", "::ffff:169.254.1.1"]
        {
            assert!(is_link_local(ip(yes)), "{yes}");
        }
        for no in ["169.255.0.1", "127.0.0.1", "::1", "fec0::1", "fd00:ec2::253", "10.0.0.1"] {
            assert!(!is_link_local(ip(no)), "{no}");
        }
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("0:0::1"), "::1");
        assert_eq!(normalize_host("Db.Internal"), "db.internal");
        assert_eq!(normalize_host("::ffff:10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn display_lists_patterns() {
        assert_eq!(list(&["a:1", "[::1]:2"]).to_string(), "a:1, [::1]:2");
        assert!(AllowList::allow_all().to_string().contains("link-local"));
    }
}
