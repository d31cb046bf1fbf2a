//! Facts about this host that the agent reports in its `AgentHello`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use airlock_proto::AgentHello;

/// The agent version in SSM's four-part form (`0.1.0` becomes `0.1.0.0`).
pub fn agent_version() -> String {
    format!("{}.0", env!("CARGO_PKG_VERSION"))
}

/// `NAME` and `VERSION_ID` of an os-release(5) file's text, when present.
pub fn parse_os_release(text: &str) -> (Option<String>, Option<String>) {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else { continue };
        match key.trim() {
            "NAME" => name = Some(unquote(raw.trim())),
            "VERSION_ID" => version = Some(unquote(raw.trim())),
            _ => {}
        }
    }
    (name.filter(|s| !s.is_empty()), version.filter(|s| !s.is_empty()))
}

/// Undoes os-release's shell-style quoting: `"..."` with backslash escapes, or `'...'`.
fn unquote(raw: &str) -> String {
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let inner = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The platform name and version from `/etc/os-release` (or `/usr/lib/os-release`).
pub fn os_release() -> (String, String) {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Ok(bytes) = crate::state::read_capped(Path::new(path)) {
            let (name, version) = parse_os_release(&String::from_utf8_lossy(&bytes));
            return (name.unwrap_or_else(|| "Linux".into()), version.unwrap_or_default());
        }
    }
    ("Linux".into(), String::new())
}

/// This host's name.
pub fn hostname() -> String {
    match nix::unistd::gethostname() {
        Ok(name) => name.to_string_lossy().into_owned(),
        Err(_) => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into()),
    }
}

/// The local address the kernel would use to reach `remote`: a connected UDP socket's
/// `local_addr`, which sends nothing.
pub async fn local_ip_toward(remote: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr =
        if remote.is_ipv6() { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
    let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
    socket.connect(remote).await.ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// The hello message for a connection whose local address is `ip`.
pub fn hello(ip: IpAddr) -> AgentHello {
    let (platform_name, platform_version) = os_release();
    AgentHello {
        agent_version: agent_version(),
        platform_type: "Linux".into(),
        platform_name,
        platform_version,
        hostname: hostname(),
        ip_address: ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_os_release() {
        let text = r#"PRETTY_NAME="Debian GNU/Linux 13 (trixie)"
NAME="Debian GNU/Linux"
VERSION_ID="13"
VERSION="13 (trixie)"
ID=debian
"#;
        assert_eq!(parse_os_release(text), (Some("Debian GNU/Linux".into()), Some("13".into())));
    }

    #[test]
    fn parses_quoting_comments_and_missing_keys() {
        let text = "# comment NAME=no\nNAME=Alpine\\ Linux\nVERSION_ID='3.20.1'\n\ngarbage line\n";
        assert_eq!(parse_os_release(text), (Some("Alpine Linux".into()), Some("3.20.1".into())));
        assert_eq!(parse_os_release("NAME=\"say \\\"hi\\\"\"\n"), (Some("say \"hi\"".into()), None));
        assert_eq!(parse_os_release(""), (None, None));
        assert_eq!(parse_os_release("NAME=\"\"\nVERSION_ID=\n"), (None, None));
    }

    #[test]
    fn version_has_four_parts() {
        assert_eq!(agent_version().split('.').count(), 4);
    }

    #[tokio::test]
    async fn local_ip_toward_loopback_is_loopback() {
        let ip = local_ip_toward("127.0.0.1:9".parse().unwrap()).await.unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }

    #[test]
    fn hello_is_filled_in() {
        let h = hello(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(h.platform_type, "Linux");
        assert_eq!(h.ip_address, "127.0.0.1");
        assert!(!h.hostname.is_empty());
        assert!(!h.platform_name.is_empty());
    }
}
