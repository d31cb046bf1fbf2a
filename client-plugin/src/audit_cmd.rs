//! `airlock audit verify`: asks the broker to check its audit log's hash chain
//! (`AirlockIAM.VerifyAuditLog`) and says so in the exit status, for scripts and cron.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::api::{ApiError, Client, Service};
use crate::error::Error;

/// Exit status when the audit log is broken.
pub const EXIT_BROKEN: i32 = 1;

/// `airlock audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that the audit log is intact; exit status 0 if it is, 1 if it is broken.
    Verify,
}

/// What `audit verify` prints for a VerifyAuditLog response, and its exit status.
pub fn verdict(response: &Value) -> Result<(String, i32), Error> {
    let Some(valid) = response["Valid"].as_bool() else {
        let detail = "the response has no Valid member".to_owned();
        return Err(Error::Api(ApiError::response("VerifyAuditLog", Some(200), detail)));
    };
    let message = match response["Message"].as_str() {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ if valid => format!("audit log intact: {} events", response["Events"]),
        _ => match response["FirstBrokenSeq"].as_u64() {
            Some(seq) => format!("audit log BROKEN at event {seq}"),
            None => "audit log BROKEN".to_owned(),
        },
    };
    Ok((message, if valid { 0 } else { EXIT_BROKEN }))
}

impl AuditCommand {
    /// Runs the command; returns the exit status.
    pub async fn run(self, client: &Client) -> anyhow::Result<i32> {
        match self {
            AuditCommand::Verify => {
                let target = Service::Iam.target("VerifyAuditLog");
                let response = client.call_target(&target, &json!({})).await.map_err(Error::from)?;
                let (message, code) = verdict(&response)?;
                crate::recordings_cmd::print(format!("{message}\n").as_bytes()).await?;
                Ok(code)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let ok = json!({"Valid": true, "Events": 12, "Message": "12 events, chain intact"});
        assert_eq!(verdict(&ok).unwrap(), ("12 events, chain intact".to_owned(), 0));
        let broken =
            json!({"Valid": false, "Events": 12, "FirstBrokenSeq": 7, "Message": "event 7 was altered"});
        assert_eq!(verdict(&broken).unwrap(), ("event 7 was altered".to_owned(), 1));
        assert_eq!(
            verdict(&json!({"Valid": false, "FirstBrokenSeq": 3})).unwrap().0,
            "audit log BROKEN at event 3"
        );
        assert_eq!(
            verdict(&json!({"Valid": true, "Events": 2})).unwrap(),
            ("audit log intact: 2 events".to_owned(), 0)
        );
        let err = verdict(&json!({"Message": "?"})).unwrap_err();
        assert_eq!(err.exit_code(), crate::EXIT_FAILURE, "a reply without a verdict is not a pass");
    }
}
