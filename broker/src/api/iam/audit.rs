//! The audit log: list its events, verify its hash chain.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{ApiError, NoMembers, Op};
use crate::authz::Gate;

/// ListAuditEvents' input.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub(crate) struct ListAuditEvents {
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// ListAuditEvents: newest first, in pages.
pub(crate) async fn list_audit_events(gate: &Gate<'_>, req: ListAuditEvents) -> Result<Value, ApiError> {
    gate.require(Op::ListAuditEvents, "*").await?;
    let limit = req.max_results.unwrap_or(100).clamp(1, 1000) as i64;
    let offset: i64 = match req.next_token.as_deref() {
        None | Some("") => 0,
        Some(t) => t
            .parse()
            .ok()
            .filter(|n: &i64| *n >= 0)
            .ok_or_else(|| ApiError::bad("InvalidNextToken", "The specified token is not valid."))?,
    };
    let events = gate.app.store.audit_events(limit + 1, offset).await?;
    let more = events.len() as i64 > limit;
    let list: Vec<Value> = events
        .iter()
        .take(limit as usize)
        .map(|e| {
            json!({
                "Time": e.at_us / 1_000_000, "Principal": e.principal, "Action": e.action, "Resource": e.resource,
                "Decision": e.decision, "Policy": e.policy, "Sid": e.sid, "StatementIndex": e.statement_index,
                "SourceIp": e.source_ip })
        })
        .collect();
    let mut out = json!({ "Events": list });
    if more {
        out["NextToken"] = json!(offset.saturating_add(limit).to_string());
    }
    Ok(out)
}

/// VerifyAuditLog: walks the hash chain.
pub(crate) async fn verify_audit_log(gate: &Gate<'_>, _req: NoMembers) -> Result<Value, ApiError> {
    gate.require(Op::VerifyAuditLog, "*").await?;
    let report = gate.app.store.verify_audit_chain().await?;
    let mut out = json!({ "Valid": report.valid, "Events": report.events, "Message": report.message });
    if let Some(seq) = report.first_broken_seq {
        out["FirstBrokenSeq"] = json!(seq);
    }
    Ok(out)
}
