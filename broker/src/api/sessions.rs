//! StartSession, TerminateSession and DescribeSessions.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use super::{document_arn, instance_arn, paginate, session_arn, ApiError, Op};
use crate::app::now_us;
use crate::app::App;
use crate::authz::Gate;
use crate::launch::{Launch, RUN_AS_TAG};
use crate::registry::{PendingSession, PortTarget, ResumeRefusal, SessionPlan, Termination};
use crate::store::{Principal, SessionEnd, SessionRecord, SessionStatus};
use airlock_proto::{InstanceId, SessionId};
use airlock_recordings::sink::s3::ObjectKeys;
use airlock_recordings::sink::SinkSpec;

/// The default shell document.
pub(super) const SHELL_DOCUMENT: &str = "SSM-SessionManagerRunShell";
/// The document for one command on a PTY.
pub(super) const INTERACTIVE_DOCUMENT: &str = "AWS-StartInteractiveCommand";
/// The document for one command without a PTY.
pub(super) const COMMAND_DOCUMENT: &str = "AWS-StartNonInteractiveCommand";
/// Port forwarding to the agent host's own ports.
pub(super) const PORT_DOCUMENT: &str = "AWS-StartPortForwardingSession";
/// Port forwarding to hosts reachable from the agent.
pub(super) const REMOTE_PORT_DOCUMENT: &str = "AWS-StartPortForwardingSessionToRemoteHost";
/// ssh's ProxyCommand: one connection to the agent host's sshd.
pub(super) const SSH_DOCUMENT: &str = "AWS-StartSSHSession";

/// Reads the port targets of a port document: the i-th `portNumber` and `host` make target i.
fn port_targets(
    params: &HashMap<String, Vec<String>>,
    default_port: u16,
    host_required: bool,
) -> Result<Vec<PortTarget>, ApiError> {
    let bad = |m: String| ApiError::bad("InvalidParameters", m);
    let ports: Vec<u16> = match params.get("portNumber") {
        None => vec![default_port],
        Some(list) if list.is_empty() => vec![default_port],
        Some(list) => list
            .iter()
            .map(|p| {
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(format!("portNumber {p:?} is not a port number (1-65535)")))
            })
            .collect::<Result<_, _>>()?,
    };
    let hosts = params.get("host").cloned().unwrap_or_default();
    if host_required && hosts.is_empty() {
        return Err(bad("this document requires the parameter \"host\"".into()));
    }
    if !hosts.is_empty() && hosts.len() != ports.len() {
        return Err(bad(format!("{} host values for {} portNumber values", hosts.len(), ports.len())));
    }
    if ports.len() > 64 {
        return Err(bad("at most 64 port targets per session".into()));
    }
    ports
        .into_iter()
        .enumerate()
        .map(|(i, port)| {
            let host = hosts.get(i).map(|h| h.trim().to_owned()).unwrap_or_else(|| "localhost".to_owned());
            let valid = !host.is_empty()
                && host.len() <= 253
                && !host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/');
            if valid {
                Ok(PortTarget { host, port })
            } else {
                Err(bad(format!("host {host:?} is not a host name or address")))
            }
        })
        .collect()
}

/// StartSession's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct StartSession {
    target: String,
    document_name: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    parameters: HashMap<String, Vec<String>>,
}

/// TerminateSession's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct TerminateSession {
    session_id: String,
}

/// A DescribeSessions filter (lower-case member names, as in SSM).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionFilter {
    key: String,
    value: String,
}

/// DescribeSessions' input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct DescribeSessions {
    state: String,
    max_results: Option<usize>,
    next_token: Option<String>,
    #[serde(default)]
    filters: Vec<SessionFilter>,
}

/// The parameters each session document takes; any other is refused, as SSM does, so a
/// policy that allows one document cannot be widened by a parameter of another.
fn parameters_of(document: &str) -> &'static [&'static str] {
    match document {
        COMMAND_DOCUMENT | INTERACTIVE_DOCUMENT => &["command"],
        PORT_DOCUMENT => &["portNumber", "localPortNumber"],
        REMOTE_PORT_DOCUMENT => &["host", "portNumber", "localPortNumber"],
        SSH_DOCUMENT => &["portNumber"],
        _ => &[],
    }
}

fn plan_for(document: &str, params: &HashMap<String, Vec<String>>) -> Result<SessionPlan, ApiError> {
    let name = document.rsplit('/').next().unwrap_or(document);
    let takes = parameters_of(name);
    let mut unknown: Vec<&str> = params.keys().map(String::as_str).filter(|k| !takes.contains(k)).collect();
    let known = [
        SHELL_DOCUMENT,
        INTERACTIVE_DOCUMENT,
        COMMAND_DOCUMENT,
        PORT_DOCUMENT,
        REMOTE_PORT_DOCUMENT,
        SSH_DOCUMENT,
    ];
    if !unknown.is_empty() && known.contains(&name) {
        unknown.sort_unstable();
        return Err(ApiError::bad(
            "InvalidParameters",
            format!(
                "document {name} does not take the parameter(s) {} (it takes: {})",
                unknown.join(", "),
                if takes.is_empty() { "none".to_owned() } else { takes.join(", ") }
            ),
        ));
    }
    match name {
        SHELL_DOCUMENT => Ok(SessionPlan::Shell),
        COMMAND_DOCUMENT | INTERACTIVE_DOCUMENT => {
            let command = params.get("command").map(|v| v.join("\n")).unwrap_or_default();
            if command.trim().is_empty() {
                return Err(ApiError::bad(
                    "InvalidParameters",
                    format!("document {name} requires the parameter \"command\""),
                ));
            }
            if name == INTERACTIVE_DOCUMENT {
                Ok(SessionPlan::InteractiveCommand(command))
            } else {
                Ok(SessionPlan::Command(command))
            }
        }
        PORT_DOCUMENT => Ok(SessionPlan::Port(port_targets(params, 80, false)?)),
        REMOTE_PORT_DOCUMENT => Ok(SessionPlan::Port(port_targets(params, 80, true)?)),
        SSH_DOCUMENT => {
            let targets = port_targets(params, 22, false)?;
            if targets.len() != 1 {
                return Err(ApiError::bad("InvalidParameters", "AWS-StartSSHSession takes one portNumber"));
            }
            Ok(SessionPlan::Port(targets))
        }
        other => Err(ApiError::bad(
            "InvalidDocument",
            format!(
                "Document {other} does not exist or is not supported by this broker (supported: {SHELL_DOCUMENT}, \
                 {INTERACTIVE_DOCUMENT}, {COMMAND_DOCUMENT}, {PORT_DOCUMENT}, {REMOTE_PORT_DOCUMENT}, {SSH_DOCUMENT})"
            ),
        )),
    }
}

/// Authorizes StartSession on the instance and on the document, both audited.
async fn authorize_start(
    gate: &Gate<'_>,
    target: &str,
    document: &str,
    params: &HashMap<String, Vec<String>>,
) -> Result<(), ApiError> {
    let app = gate.app;
    let mut ctx = gate.context();
    for (k, v) in app.store.instance_tags(target).await? {
        ctx.insert(&format!("ssm:resourceTag/{k}"), v.clone()).insert(&format!("aws:ResourceTag/{k}"), v);
    }
    // The document is always checked (the default one when none is named), which is what
    // this key promises to policies that test it.
    ctx.insert("ssm:SessionDocumentAccessCheck", "true");
    for (k, values) in params {
        ctx.insert_multi(&format!("ssm:DocumentParameters/{k}"), values.clone());
    }
    let name = document.rsplit('/').next().unwrap_or(document);
    gate.require_in(&ctx, Op::StartSession, &instance_arn(app, target)).await?;
    gate.require_in(&ctx, Op::StartSession, &document_arn(app, name)).await
}

/// Creates a session and the single-use token its client presents on the stream.
pub(super) async fn start(gate: &Gate<'_>, req: StartSession) -> Result<serde_json::Value, ApiError> {
    let app = gate.app;
    let document = req.document_name.clone().unwrap_or_else(|| SHELL_DOCUMENT.to_owned());
    let target: InstanceId =
        req.target.parse().map_err(|e| ApiError::bad("InvalidTarget", format!("{e}")))?;
    authorize_start(gate, target.as_str(), &document, &req.parameters).await?;
    let plan = plan_for(&document, &req.parameters)?;
    if app.store.instance(target.as_str()).await?.is_none() {
        return Err(ApiError::bad(
            "TargetNotConnected",
            format!("{target} is not a registered managed instance."),
        ));
    }
    if app.registry.agent(target.as_str()).is_none() {
        return Err(ApiError::bad("TargetNotConnected", format!("{target} is not connected.")));
    }
    let prefs = crate::preferences::load(app.store.as_ref()).await.map_err(ApiError::internal)?;
    let tagged_user = gate.caller.tags().get(RUN_AS_TAG).map(String::as_str);
    let launch =
        Launch::new(&prefs, tagged_user).map_err(|e| ApiError::bad("InvalidParameters", e.to_string()))?;
    let owner = Principal {
        name: gate.caller.session_prefix().to_owned(),
        arn: gate.caller.arn(&app.settings.account),
    };
    let session_id = SessionId::generate(&owner.name);
    let record = SessionRecord {
        session_id: session_id.to_string(),
        target: target.to_string(),
        document: document.clone(),
        owner_arn: owner.arn.clone(),
        reason: req.reason.chars().take(256).collect(),
        status: SessionStatus::Connecting,
        start_us: now_us(),
        end_us: None,
        details: String::new(),
        exit_code: None,
        max_duration_minutes: launch.limits.max.map(|d| (d.as_secs() / 60) as i64),
        s3_output_url: launch.sinks.iter().find_map(|s| match s {
            SinkSpec::S3(t) => Some(format!(
                "s3://{}/{}",
                t.bucket,
                ObjectKeys::new(&t.key_prefix, session_id.as_str()).cast
            )),
            _ => None,
        }),
        cloudwatch_output_url: launch.sinks.iter().find_map(|s| match s {
            SinkSpec::CloudWatch(t) => Some(format!("{}:{session_id}", t.group)),
            _ => None,
        }),
    };
    crate::session::state::created(app, &record).await?;
    let token = app.registry.mint_token(PendingSession {
        session_id: session_id.to_string(),
        target: target.to_string(),
        document,
        plan,
        owner,
        launch,
        local_port_number: req.parameters.get("localPortNumber").and_then(|v| v.first()).cloned(),
    });
    let ws = app.settings.public_url.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    Ok(json!({
        "SessionId": session_id.as_str(),
        "TokenValue": token,
        "StreamUrl": format!("{ws}/v1/data-channel/{session_id}?role=publish_subscribe"),
    }))
}

/// Ends a session; terminating an ended session succeeds and changes nothing, as in SSM.
pub(super) async fn terminate(gate: &Gate<'_>, req: TerminateSession) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::TerminateSession, &session_arn(gate.app, &req.session_id)).await?;
    let app = gate.app;
    let Some(session) = app.store.session(&req.session_id).await? else {
        return Err(ApiError::bad(
            "DoesNotExistException",
            format!("Session {} does not exist.", req.session_id),
        ));
    };
    if session.end_us.is_none() {
        match app.registry.terminate(&session.session_id) {
            Termination::Signalled => crate::session::state::terminating(app, &session.session_id).await?,
            found => {
                // Not running here: its client never came (or the token was just revoked), or it
                // died with a previous broker.
                let details = if found == Termination::TokenRevoked {
                    "terminated before a client connected"
                } else {
                    "terminated; it was not running on this broker"
                };
                let end = SessionEnd {
                    status: SessionStatus::Terminated,
                    end_us: now_us(),
                    details: details.into(),
                    exit_code: None,
                };
                crate::session::state::ended(app, &session.session_id, &end).await?;
            }
        }
    }
    Ok(json!({ "SessionId": session.session_id }))
}

/// Closes the sessions whose clients never came before their tokens expired, so abandoned
/// StartSession calls do not stay `Connecting` forever. Runs for the broker's life.
pub async fn close_abandoned(app: std::sync::Arc<App>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for id in app.registry.take_expired() {
            let end = SessionEnd {
                status: SessionStatus::Failed,
                end_us: now_us(),
                details: "the client never connected: its session token expired".into(),
                exit_code: None,
            };
            match crate::session::state::ended(&app, &id, &end).await {
                Ok(()) => tracing::info!(session = %id, "abandoned session closed"),
                Err(e) => tracing::error!(session = %id, error = %e, "cannot close an abandoned session"),
            }
        }
    }
}

/// Gives the caller a fresh single-use token to reconnect its own live session after its
/// connection was lost (the CLI's resume, the browser terminal's and the stock plugin's).
pub(super) async fn resume(gate: &Gate<'_>, req: TerminateSession) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::ResumeSession, &session_arn(gate.app, &req.session_id)).await?;
    let app = gate.app;
    let Some(session) = app.store.session(&req.session_id).await? else {
        return Err(ApiError::bad(
            "DoesNotExistException",
            format!("Session {} does not exist.", req.session_id),
        ));
    };
    // The owner as StartSession recorded it: an assumed role's session ARN is its own.
    let caller = gate.caller.arn(&app.settings.account);
    let token = match app.registry.mint_resume_token(&session.session_id, &caller) {
        Ok(token) => token,
        Err(ResumeRefusal::NotOwner) => {
            return Err(ApiError::bad(
                "AccessDeniedException",
                format!(
                    "Session {} belongs to another principal; only its owner may resume it.",
                    session.session_id
                ),
            ))
        }
        Err(ResumeRefusal::NotLive) => {
            return Err(ApiError::bad(
                "InvalidParameters",
                format!(
                    "Session {} can no longer be resumed: it is {}.",
                    session.session_id,
                    session.status.as_str()
                ),
            ))
        }
    };
    let ws = app.settings.public_url.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    Ok(json!({
        "SessionId": session.session_id,
        "TokenValue": token,
        "StreamUrl": format!("{ws}/v1/data-channel/{}?role=publish_subscribe", session.session_id),
    }))
}

fn session_json(s: &SessionRecord) -> serde_json::Value {
    let mut v = json!({
        "SessionId": s.session_id,
        "Target": s.target,
        "Status": s.status.as_str(),
        "StartDate": s.start_us / 1_000_000,
        "DocumentName": s.document,
        "Owner": s.owner_arn,
    });
    if let Some(end) = s.end_us {
        v["EndDate"] = json!(end / 1_000_000);
    }
    if !s.reason.is_empty() {
        v["Reason"] = json!(s.reason);
    }
    if !s.details.is_empty() {
        v["Details"] = json!(s.details.chars().take(1024).collect::<String>());
    }
    if let Some(m) = s.max_duration_minutes {
        v["MaxSessionDuration"] = json!(m.to_string());
    }
    let mut output = serde_json::Map::new();
    if let Some(u) = &s.s3_output_url {
        output.insert("S3OutputUrl".into(), json!(u));
    }
    if let Some(u) = &s.cloudwatch_output_url {
        output.insert("CloudWatchOutputUrl".into(), json!(u));
    }
    if !output.is_empty() {
        v["OutputUrl"] = serde_json::Value::Object(output);
    }
    v
}

fn keep(s: &SessionRecord, f: &SessionFilter) -> Result<bool, ApiError> {
    let secs = |v: &str| {
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp_micros())
            .ok()
            .or_else(|| v.parse::<i64>().ok().and_then(|n| n.checked_mul(1_000_000)))
            .ok_or_else(|| ApiError::bad("InvalidFilterValue", format!("{}: {v:?} is not a date", f.key)))
    };
    Ok(match f.key.as_str() {
        "Target" => s.target == f.value,
        "Owner" => s.owner_arn == f.value,
        "Status" => s.status.as_str() == f.value,
        "SessionId" => s.session_id == f.value,
        "InvokedAfter" => s.start_us >= secs(&f.value)?,
        "InvokedBefore" => s.start_us <= secs(&f.value)?,
        "AccessType" => f.value == "Standard",
        other => {
            return Err(ApiError::bad("InvalidFilterKey", format!("filter key {other} is not supported")))
        }
    })
}

/// Lists active or past sessions, newest first.
pub(super) async fn describe(gate: &Gate<'_>, req: DescribeSessions) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::DescribeSessions, "*").await?;
    let app = gate.app;
    let active = match req.state.as_str() {
        "Active" => true,
        "History" => false,
        other => {
            return Err(ApiError::bad(
                "ValidationException",
                format!("State {other:?} must be one of Active, History"),
            ))
        }
    };
    let max = req.max_results.unwrap_or(20);
    if !(1..=200).contains(&max) {
        return Err(ApiError::bad("ValidationException", "MaxResults must be between 1 and 200"));
    }
    if req.filters.len() > 6 {
        return Err(ApiError::bad("ValidationException", "at most 6 filters"));
    }
    const KEYS: [&str; 7] =
        ["InvokedAfter", "InvokedBefore", "Target", "Owner", "Status", "SessionId", "AccessType"];
    // Checked up front, so a bad key is an error even when nothing would be listed.
    if let Some(f) = req.filters.iter().find(|f| !KEYS.contains(&f.key.as_str())) {
        return Err(ApiError::bad("InvalidFilterKey", format!("filter key {} is not supported", f.key)));
    }
    let mut matched = Vec::new();
    for s in app.store.sessions(active).await? {
        let mut ok = true;
        for f in &req.filters {
            ok &= keep(&s, f)?;
        }
        if ok {
            matched.push(s);
        }
    }
    let (page, next) = paginate(matched, max, req.next_token.as_deref())?;
    let mut out = json!({ "Sessions": page.iter().map(session_json).collect::<Vec<_>>() });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_map_to_plans() {
        let none = HashMap::new();
        assert_eq!(plan_for(SHELL_DOCUMENT, &none).unwrap(), SessionPlan::Shell);
        assert_eq!(
            plan_for("arn:aws:ssm:us-east-1::document/SSM-SessionManagerRunShell", &none).unwrap(),
            SessionPlan::Shell
        );
        let cmd = HashMap::from([("command".to_string(), vec!["uname -a".to_string()])]);
        assert_eq!(plan_for(COMMAND_DOCUMENT, &cmd).unwrap(), SessionPlan::Command("uname -a".into()));
        assert_eq!(plan_for(COMMAND_DOCUMENT, &none).unwrap_err().code, "InvalidParameters");
        assert_eq!(
            plan_for(INTERACTIVE_DOCUMENT, &cmd).unwrap(),
            SessionPlan::InteractiveCommand("uname -a".into())
        );
        assert_eq!(plan_for(INTERACTIVE_DOCUMENT, &none).unwrap_err().code, "InvalidParameters");
        assert_eq!(plan_for("AWS-Nope", &none).unwrap_err().code, "InvalidDocument");
    }

    #[test]
    fn date_filters_refuse_numbers_out_of_range() {
        let s = SessionRecord {
            session_id: "a-1".into(),
            target: "mi-0123456789abcdef0".into(),
            document: SHELL_DOCUMENT.into(),
            owner_arn: "arn".into(),
            reason: String::new(),
            status: SessionStatus::Connected,
            start_us: 1_700_000_000_000_000,
            end_us: None,
            details: String::new(),
            exit_code: None,
            max_duration_minutes: None,
            s3_output_url: None,
            cloudwatch_output_url: None,
        };
        let f = |key: &str, value: &str| SessionFilter { key: key.into(), value: value.into() };
        assert!(keep(&s, &f("InvokedAfter", "1600000000")).unwrap());
        assert!(!keep(&s, &f("InvokedBefore", "2023-01-01T00:00:00Z")).unwrap());
        // Seconds whose microseconds do not fit: a validation error, not a wrap or a panic.
        for huge in ["9223372036854775807", "-9223372036854775808", "99999999999999"] {
            let e = keep(&s, &f("InvokedAfter", huge)).unwrap_err();
            assert_eq!(e.code, "InvalidFilterValue", "{huge}");
        }
    }

    fn params(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn port_documents() {
        let t = |host: &str, port| PortTarget { host: host.into(), port };
        assert_eq!(
            plan_for(SSH_DOCUMENT, &HashMap::new()).unwrap(),
            SessionPlan::Port(vec![t("localhost", 22)])
        );
        assert_eq!(
            plan_for(
                PORT_DOCUMENT,
                &params(&[("portNumber", &["5432", "80"]), ("localPortNumber", &["0", "1"])])
            )
            .unwrap(),
            SessionPlan::Port(vec![t("localhost", 5432), t("localhost", 80)])
        );
        assert_eq!(
            plan_for(REMOTE_PORT_DOCUMENT, &params(&[("host", &["db.internal"]), ("portNumber", &["5432"])]))
                .unwrap(),
            SessionPlan::Port(vec![t("db.internal", 5432)])
        );
        for (doc, p) in [
            (REMOTE_PORT_DOCUMENT, params(&[("portNumber", &["5432"])])),
            (PORT_DOCUMENT, params(&[("portNumber", &["0"])])),
            (PORT_DOCUMENT, params(&[("portNumber", &["65536"])])),
            (PORT_DOCUMENT, params(&[("portNumber", &["http"])])),
            (REMOTE_PORT_DOCUMENT, params(&[("host", &["a", "b"]), ("portNumber", &["1"])])),
            (REMOTE_PORT_DOCUMENT, params(&[("host", &["a b"]), ("portNumber", &["1"])])),
            (SSH_DOCUMENT, params(&[("portNumber", &["22", "23"])])),
            // Only the remote-host document reaches another host.
            (SSH_DOCUMENT, params(&[("host", &["10.0.0.5"])])),
            (PORT_DOCUMENT, params(&[("host", &["db.internal"]), ("portNumber", &["5432"])])),
            (SHELL_DOCUMENT, params(&[("host", &["x"])])),
            (COMMAND_DOCUMENT, params(&[("command", &["id"]), ("portNumber", &["1"])])),
        ] {
            assert_eq!(plan_for(doc, &p).unwrap_err().code, "InvalidParameters", "{doc} {p:?}");
        }
    }
}
