//! Port sessions on the command line: `--forward` specs, the SSM port documents and their
//! `portNumber` / `host` / `localPortNumber` lists, and which local mode a session needs.

use std::net::Ipv6Addr;

use crate::params::Parameters;

/// Forwards local ports to ports on the target itself.
pub const PORT_DOCUMENT: &str = "AWS-StartPortForwardingSession";
/// Forwards local ports to hosts the target can reach.
pub const REMOTE_HOST_DOCUMENT: &str = "AWS-StartPortForwardingSessionToRemoteHost";
/// Carries one TCP connection over stdin/stdout, for ssh's ProxyCommand.
pub const SSH_DOCUMENT: &str = "AWS-StartSSHSession";
/// AWS documents that are not port sessions; `--forward` with one of them is a mistake.
const NON_PORT_DOCUMENTS: &[&str] = &[
    "SSM-SessionManagerRunShell",
    "AWS-StartInteractiveCommand",
    "AWS-StartNonInteractiveCommand",
    SSH_DOCUMENT,
];
/// The port `AWS-StartSSHSession` uses when `portNumber` is absent.
pub const SSH_DEFAULT_PORT: u16 = 22;

const PORT: &str = "portNumber";
const HOST: &str = "host";
const LOCAL_PORT: &str = "localPortNumber";

/// One `--forward [LOCAL_PORT:][HOST:]PORT` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The local port; `None` picks a free one.
    pub local_port: Option<u16>,
    /// The host as the target resolves it; `None` is the target itself.
    pub host: Option<String>,
    /// The port on that host.
    pub port: u16,
}

/// One forwarded port of a session: target number i is the i-th entry of the lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTarget {
    /// Where to listen on 127.0.0.1; 0 picks a free port.
    pub local_port: u16,
    /// The far host, when the document names one.
    pub host: Option<String>,
    /// The far port, when given (the broker applies the document's default otherwise).
    pub port: Option<u16>,
}

/// How the local side of a session works.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SessionKind {
    /// A shell or command attached to this terminal.
    #[default]
    Terminal,
    /// Listen on local ports; every connection is carried on its own stream.
    Forward(Vec<PortTarget>),
    /// One connection to `port` carried over stdin and stdout.
    Stdio {
        /// The remote TCP port.
        port: u16,
    },
}

/// Parses a `--forward` value: `PORT`, `LOCAL_PORT:PORT`, `HOST:PORT` or
/// `LOCAL_PORT:HOST:PORT`; IPv6 hosts go in brackets (`[fd00::1]:80`).
pub fn parse_forward(text: &str) -> Result<Forward, String> {
    let parts = split_colons(text).ok_or_else(|| format!("unbalanced brackets in {text:?}"))?;
    let (local, host, port) = match parts.as_slice() {
        [port] => (None, None, *port),
        [first, port] if first.bytes().all(|b| b.is_ascii_digit()) => (Some(*first), None, *port),
        [host, port] => (None, Some(*host), *port),
        [local, host, port] => (Some(*local), Some(*host), *port),
        _ => {
            return Err(format!(
                "expected [LOCAL_PORT:][HOST:]PORT, got {text:?} (put IPv6 addresses in brackets)"
            ))
        }
    };
    let port = parse_port(port, false).map_err(|e| format!("{e} in {text:?}"))?;
    let local_port =
        local.map(|l| parse_port(l, true)).transpose().map_err(|e| format!("{e} in {text:?}"))?;
    let host = host.map(host_from_spec).transpose().map_err(|e| format!("{e} in {text:?}"))?;
    Ok(Forward { local_port, host, port })
}

/// Splits at colons outside `[…]`; `None` when brackets do not pair up.
fn split_colons(text: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1)?,
            ':' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0).then(|| {
        parts.push(&text[start..]);
        parts
    })
}

/// A port number: 1–65535, or 0–65535 for local ports (0 = pick a free one).
fn parse_port(text: &str, local: bool) -> Result<u16, String> {
    let range = if local { "0-65535" } else { "1-65535" };
    let t = text.trim();
    let bad = || format!("invalid port {text:?}: expected a number {range}");
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match t.parse::<u16>() {
        Ok(0) if !local => Err(bad()),
        Ok(p) => Ok(p),
        Err(_) => Err(bad()),
    }
}

/// The host part of a `--forward` spec: a bracketed IPv6 literal loses its brackets.
fn host_from_spec(text: &str) -> Result<String, String> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return match inner.parse::<Ipv6Addr>() {
            Ok(_) => Ok(inner.to_owned()),
            Err(_) => Err(format!("invalid IPv6 address {inner:?}")),
        };
    }
    check_host(text).map(|()| text.to_owned())
}

/// Whether `text` can be a host name, IPv4 or (bare) IPv6 address for the target to resolve.
fn check_host(text: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid host {text:?}: {why}"));
    if text.is_empty() {
        return bad("empty");
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    if text.len() > 253 {
        return bad("longer than 253 characters");
    }
    // One trailing dot is a fully qualified name; any other empty label is a typo.
    let name = text.strip_suffix('.').unwrap_or(text);
    for label in name.split('.') {
        if label.is_empty() {
            return bad("empty label");
        }
        if label.len() > 63 {
            return bad("a label is longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return bad("only letters, digits, '-', '_' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with '-'");
        }
    }
    Ok(())
}

/// Settles the document, fills the port parameter lists from `forwards`, checks them, and
/// says how the local side must run. Errors are usage errors for humans.
pub fn prepare(
    document_name: &mut Option<String>,
    parameters: &mut Option<Parameters>,
    forwards: &[Forward],
) -> Result<SessionKind, String> {
    let had_parameters = parameters.is_some();
    let kind = prepare_kind(document_name, parameters, forwards);
    // Checking absent lists must not add an empty `Parameters` member to the request.
    if !had_parameters && parameters.as_ref().is_some_and(Parameters::is_empty) {
        *parameters = None;
    }
    kind
}

fn prepare_kind(
    document_name: &mut Option<String>,
    parameters: &mut Option<Parameters>,
    forwards: &[Forward],
) -> Result<SessionKind, String> {
    if !forwards.is_empty() {
        apply_forwards(document_name, parameters, forwards)?;
        let params = parameters.get_or_insert_with(Parameters::new);
        return targets(params).map(SessionKind::Forward);
    }
    match document_name.as_deref() {
        Some(PORT_DOCUMENT) => {
            let params = parameters.get_or_insert_with(Parameters::new);
            let targets = targets(params)?;
            if targets.iter().any(|t| t.host.is_some()) {
                return Err(format!("{HOST} is only for {REMOTE_HOST_DOCUMENT}"));
            }
            Ok(SessionKind::Forward(targets))
        }
        Some(REMOTE_HOST_DOCUMENT) => {
            let params = parameters.get_or_insert_with(Parameters::new);
            let targets = targets(params)?;
            if targets.iter().any(|t| t.host.is_none()) {
                return Err(format!("{REMOTE_HOST_DOCUMENT} needs --parameters {HOST}=NAME"));
            }
            Ok(SessionKind::Forward(targets))
        }
        Some(SSH_DOCUMENT) => {
            let params = parameters.get_or_insert_with(Parameters::new);
            normalize(params)?;
            let port = match params.get(PORT).map(Vec::as_slice) {
                None => SSH_DEFAULT_PORT,
                Some([one]) => parse_port(one, false).map_err(|e| format!("{PORT}: {e}"))?,
                Some(_) => return Err(format!("{SSH_DOCUMENT} carries one connection: give one {PORT}")),
            };
            Ok(SessionKind::Stdio { port })
        }
        _ => Ok(SessionKind::Terminal),
    }
}

/// Writes `forwards` into the parameter lists and picks the document when none was given.
fn apply_forwards(
    document_name: &mut Option<String>,
    parameters: &mut Option<Parameters>,
    forwards: &[Forward],
) -> Result<(), String> {
    let any_host = forwards.iter().any(|f| f.host.is_some());
    match document_name.as_deref() {
        None => {
            let doc = if any_host { REMOTE_HOST_DOCUMENT } else { PORT_DOCUMENT };
            *document_name = Some(doc.to_owned());
        }
        Some(PORT_DOCUMENT) if any_host => {
            return Err(format!("--forward HOST:PORT needs {REMOTE_HOST_DOCUMENT}, not {PORT_DOCUMENT}"))
        }
        Some(doc) if NON_PORT_DOCUMENTS.contains(&doc) => {
            return Err(format!("--forward needs a port forwarding document, not {doc}"))
        }
        // Custom documents of session type Port are the operator's business.
        Some(_) => {}
    }
    let params = parameters.get_or_insert_with(Parameters::new);
    if [PORT, HOST, LOCAL_PORT].iter().any(|k| params.contains_key(*k)) {
        return Err(format!(
            "--forward cannot be combined with {PORT}, {HOST} or {LOCAL_PORT} in --parameters"
        ));
    }
    let remote_doc = document_name.as_deref() == Some(REMOTE_HOST_DOCUMENT);
    params.insert(PORT.to_owned(), forwards.iter().map(|f| f.port.to_string()).collect());
    params.insert(
        LOCAL_PORT.to_owned(),
        forwards.iter().map(|f| f.local_port.unwrap_or(0).to_string()).collect(),
    );
    if any_host || remote_doc {
        // Lists line up by index, so a mapping without a host names the target itself.
        let hosts = forwards.iter().map(|f| f.host.clone().unwrap_or_else(|| "localhost".to_owned()));
        params.insert(HOST.to_owned(), hosts.collect());
    }
    Ok(())
}

/// Splits comma-separated port lists (`portNumber=5432,80`) into separate values, as the
/// AWS CLI's shorthand does for list parameters; these values never contain commas.
fn normalize(params: &mut Parameters) -> Result<(), String> {
    for key in [PORT, HOST, LOCAL_PORT] {
        if let Some(values) = params.get_mut(key) {
            let split: Vec<String> =
                values.iter().flat_map(|v| v.split(',')).map(|v| v.trim().to_owned()).collect();
            if split.is_empty() {
                return Err(format!("{key} has no values"));
            }
            *values = split;
        }
    }
    Ok(())
}

/// The port targets the parameter lists describe: one per `portNumber` (one target with the
/// document's default port when absent, as the broker counts them); `host` and
/// `localPortNumber`, when given, need one entry per target.
fn targets(params: &mut Parameters) -> Result<Vec<PortTarget>, String> {
    normalize(params)?;
    let count = params.get(PORT).map_or(1, Vec::len);
    if [HOST, LOCAL_PORT].iter().filter_map(|k| params.get(*k)).any(|v| v.len() != count) {
        return Err(format!("{PORT}, {HOST} and {LOCAL_PORT} must have the same number of values"));
    }
    if count > usize::from(u16::MAX) {
        return Err("too many port mappings".to_owned());
    }
    let entry = |key: &str, i: usize| params.get(key).and_then(|v| v.get(i)).map(String::as_str);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let port =
            entry(PORT, i).map(|p| parse_port(p, false)).transpose().map_err(|e| format!("{PORT}: {e}"))?;
        let local_port = entry(LOCAL_PORT, i)
            .map(|p| parse_port(p, true))
            .transpose()
            .map_err(|e| format!("{LOCAL_PORT}: {e}"))?
            .unwrap_or(0);
        let host = entry(HOST, i).map(|h| check_host(h).map(|()| h.to_owned())).transpose()?;
        if local_port != 0 && out.iter().any(|t: &PortTarget| t.local_port == local_port) {
            return Err(format!("local port {local_port} is used by two mappings"));
        }
        out.push(PortTarget { local_port, host, port });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(local: Option<u16>, host: Option<&str>, port: u16) -> Forward {
        Forward { local_port: local, host: host.map(str::to_owned), port }
    }

    fn list(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn forward_forms() {
        assert_eq!(parse_forward("5432").unwrap(), fwd(None, None, 5432));
        assert_eq!(parse_forward("15432:5432").unwrap(), fwd(Some(15432), None, 5432));
        assert_eq!(parse_forward("0:5432").unwrap(), fwd(Some(0), None, 5432));
        assert_eq!(parse_forward("web.internal:80").unwrap(), fwd(None, Some("web.internal"), 80));
        assert_eq!(
            parse_forward("18080:web.internal:80").unwrap(),
            fwd(Some(18080), Some("web.internal"), 80)
        );
        assert_eq!(parse_forward("18080:10.0.0.7:80").unwrap(), fwd(Some(18080), Some("10.0.0.7"), 80));
        assert_eq!(parse_forward("[fd00::1]:443").unwrap(), fwd(None, Some("fd00::1"), 443));
        assert_eq!(parse_forward("8443:[::1]:443").unwrap(), fwd(Some(8443), Some("::1"), 443));
        assert_eq!(
            parse_forward("1:db_1.example.com.:65535").unwrap(),
            fwd(Some(1), Some("db_1.example.com."), 65535)
        );
    }

    #[test]
    fn forward_bad_ports() {
        for (bad, needle) in [
            ("0", "expected a number 1-65535"),
            ("65536", "1-65535"),
            ("15432:0", "1-65535"),
            ("70000:80", "0-65535"),
            ("-1:80", "invalid host"),
            ("abc", "invalid port \"abc\""),
            ("", "invalid port"),
            ("80:", "invalid port \"\""),
            ("1:2:3:4", "expected [LOCAL_PORT:][HOST:]PORT"),
            ("web:http", "invalid port \"http\""),
            ("+80", "invalid port"),
        ] {
            let err = parse_forward(bad).unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn forward_bad_hosts() {
        for bad in [
            "1:bad host:80",
            "1:a/b:80",
            "1::80",
            "1:-web:80",
            "1:a..b:80",
            "1:[::1:80",
            "1:[nothex]:80",
            "1:fd00::1:80",
            "1:é.example:80",
        ] {
            assert!(parse_forward(bad).is_err(), "{bad:?} should fail");
        }
        let long = format!("1:{}:80", "a".repeat(64));
        assert!(parse_forward(&long).unwrap_err().contains("63"));
    }

    #[test]
    fn forwards_fill_lists_and_pick_the_document() {
        let (mut doc, mut params) = (None, None);
        let kind =
            prepare(&mut doc, &mut params, &[fwd(Some(15432), None, 5432), fwd(None, None, 80)]).unwrap();
        assert_eq!(doc.as_deref(), Some(PORT_DOCUMENT));
        let p = params.unwrap();
        assert_eq!(p[PORT], list(&["5432", "80"]));
        assert_eq!(p[LOCAL_PORT], list(&["15432", "0"]));
        assert!(!p.contains_key(HOST));
        assert_eq!(
            kind,
            SessionKind::Forward(vec![
                PortTarget { local_port: 15432, host: None, port: Some(5432) },
                PortTarget { local_port: 0, host: None, port: Some(80) },
            ])
        );

        let (mut doc, mut params) = (None, Some(Parameters::from([("reason".into(), list(&["x"]))])));
        let forwards = [fwd(Some(15432), None, 5432), fwd(Some(18080), Some("web.internal"), 80)];
        let kind = prepare(&mut doc, &mut params, &forwards).unwrap();
        assert_eq!(doc.as_deref(), Some(REMOTE_HOST_DOCUMENT));
        let p = params.unwrap();
        assert_eq!(p[HOST], list(&["localhost", "web.internal"]));
        assert_eq!(p[PORT], list(&["5432", "80"]));
        assert_eq!(p["reason"], list(&["x"]), "other parameters are kept");
        let SessionKind::Forward(t) = kind else { panic!("expected forwarding") };
        assert_eq!(t[1].host.as_deref(), Some("web.internal"));

        // An explicit remote-host document gets a host list even without hosts.
        let (mut doc, mut params) = (Some(REMOTE_HOST_DOCUMENT.to_owned()), None);
        prepare(&mut doc, &mut params, &[fwd(None, None, 22)]).unwrap();
        assert_eq!(params.unwrap()[HOST], list(&["localhost"]));

        // A custom document is the user's choice.
        let (mut doc, mut params) = (Some("Team-PortDoc".to_owned()), None);
        let kind = prepare(&mut doc, &mut params, &[fwd(None, None, 22)]).unwrap();
        assert_eq!(doc.as_deref(), Some("Team-PortDoc"));
        assert!(matches!(kind, SessionKind::Forward(_)));
    }

    #[test]
    fn forwards_conflicts() {
        let host = [fwd(None, Some("db"), 5432)];
        let plain = [fwd(None, None, 5432)];
        type Case<'a> = (Option<&'a str>, Option<Parameters>, &'a [Forward], &'a str);
        let cases: [Case; 5] = [
            (Some(PORT_DOCUMENT), None, &host, "needs AWS-StartPortForwardingSessionToRemoteHost"),
            (Some(SSH_DOCUMENT), None, &plain, "not AWS-StartSSHSession"),
            (Some("AWS-StartNonInteractiveCommand"), None, &plain, "port forwarding document"),
            (None, Some(Parameters::from([(PORT.into(), list(&["1"]))])), &plain, "cannot be combined"),
            (None, Some(Parameters::from([(LOCAL_PORT.into(), list(&["1"]))])), &plain, "cannot be combined"),
        ];
        for (doc, params, forwards, needle) in cases {
            let (mut doc, mut params) = (doc.map(str::to_owned), params);
            let err = prepare(&mut doc, &mut params, forwards).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let err =
            prepare(&mut None, &mut None, &[fwd(Some(9000), None, 1), fwd(Some(9000), None, 2)]).unwrap_err();
        assert!(err.contains("local port 9000"), "{err}");
    }

    #[test]
    fn parameters_make_targets() {
        let run = |doc: &str, text: &str| {
            let mut params = Some(crate::params::parse_parameters(text).unwrap());
            prepare(&mut Some(doc.to_owned()), &mut params, &[]).map(|k| (k, params.unwrap()))
        };
        let (kind, p) = run(PORT_DOCUMENT, "portNumber=5432,localPortNumber=15432").unwrap();
        assert_eq!(
            kind,
            SessionKind::Forward(vec![PortTarget { local_port: 15432, host: None, port: Some(5432) }])
        );
        assert_eq!(p[PORT], list(&["5432"]));

        let (kind, _) =
            run(PORT_DOCUMENT, r#"{"portNumber":["5432","80"],"localPortNumber":["15432","18080"]}"#)
                .unwrap();
        let SessionKind::Forward(t) = kind else { panic!() };
        assert_eq!(t.iter().map(|t| t.local_port).collect::<Vec<_>>(), [15432, 18080]);

        // Shorthand lists split at commas and are sent split.
        let (kind, p) = run(PORT_DOCUMENT, "portNumber=5432,80,localPortNumber=0,18080").unwrap();
        assert_eq!(p[PORT], list(&["5432", "80"]));
        assert_eq!(p[LOCAL_PORT], list(&["0", "18080"]));
        let SessionKind::Forward(t) = kind else { panic!() };
        assert_eq!(t.len(), 2);

        // Absent lists: one target, free local port, broker's default remote port.
        let (kind, _) = run(PORT_DOCUMENT, "{}").unwrap();
        assert_eq!(kind, SessionKind::Forward(vec![PortTarget { local_port: 0, host: None, port: None }]));

        let (kind, _) = run(REMOTE_HOST_DOCUMENT, "host=db.internal,portNumber=5432").unwrap();
        let SessionKind::Forward(t) = kind else { panic!() };
        assert_eq!(t[0].host.as_deref(), Some("db.internal"));

        for (doc, text, needle) in [
            (REMOTE_HOST_DOCUMENT, "portNumber=5432", "needs --parameters host"),
            (PORT_DOCUMENT, "host=db,portNumber=5432", "only for"),
            (PORT_DOCUMENT, "portNumber=0", "1-65535"),
            (PORT_DOCUMENT, "portNumber=80,localPortNumber=-1", "0-65535"),
            (PORT_DOCUMENT, "portNumber=1,2,localPortNumber=3", "same number of values"),
            (PORT_DOCUMENT, "localPortNumber=1,2", "same number of values"),
            (REMOTE_HOST_DOCUMENT, "host=bad host,portNumber=1", "invalid host"),
            (REMOTE_HOST_DOCUMENT, r#"{"host":[],"portNumber":"1"}"#, "host has no values"),
            (SSH_DOCUMENT, "portNumber=22,2222", "one portNumber"),
            (SSH_DOCUMENT, "portNumber=ssh", "invalid port"),
        ] {
            let err = run(doc, text).unwrap_err();
            assert!(err.contains(needle), "{doc} {text}: {err}");
        }
    }

    #[test]
    fn ssh_and_terminal_documents() {
        let mut params = Some(crate::params::parse_parameters("portNumber=2222").unwrap());
        let kind = prepare(&mut Some(SSH_DOCUMENT.to_owned()), &mut params, &[]).unwrap();
        assert_eq!(kind, SessionKind::Stdio { port: 2222 });
        let mut none = None;
        let kind = prepare(&mut Some(SSH_DOCUMENT.to_owned()), &mut none, &[]).unwrap();
        assert_eq!(kind, SessionKind::Stdio { port: SSH_DEFAULT_PORT });
        assert_eq!(none, None, "no empty Parameters member is invented");
        assert_eq!(prepare(&mut None, &mut None, &[]).unwrap(), SessionKind::Terminal);
        let mut cmd = Some(Parameters::from([("command".into(), list(&["ls"]))]));
        let kind = prepare(&mut Some("AWS-StartNonInteractiveCommand".into()), &mut cmd, &[]).unwrap();
        assert_eq!(kind, SessionKind::Terminal);
    }
}
