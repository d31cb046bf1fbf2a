//! The one API call most command lines turn into, and how its response is shown.

use std::io::Write;

use serde_json::Value;

use crate::api::Service;
use crate::error::Error;
use crate::simulate::{self, SimulateOutput};
use crate::sts_cmd;

/// How a successful response is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The response JSON, as `aws --output json` prints it.
    Json,
    /// `SimulatePrincipalPolicy` results, one line each or JSON; the exit status tells whether
    /// everything was allowed.
    Simulation(SimulateOutput),
    /// `AssumeRole` credentials as `export AWS_…=…` lines for a shell.
    Exports,
}

/// A checked command line: the operation to call, its body, and how to show the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    /// Which API family (and so which `X-Amz-Target` prefix).
    pub service: Service,
    /// The operation, e.g. `CreateUser`.
    pub operation: &'static str,
    /// The request body.
    pub body: Value,
    /// How to show the response.
    pub output: Output,
}

impl ApiCall {
    /// A call whose response is printed as JSON.
    pub fn new(service: Service, operation: &'static str, body: Value) -> Self {
        ApiCall { service, operation, body, output: Output::Json }
    }

    /// The `X-Amz-Target` to send, e.g. `AirlockIAM.CreateUser`.
    pub fn target(&self) -> String {
        self.service.target(self.operation)
    }

    /// Shows `response` on `out`; returns the exit status (non-zero only for a simulation
    /// that found something not allowed).
    pub fn write_response(&self, response: &Value, out: &mut dyn Write) -> Result<i32, Error> {
        let written = match self.output {
            Output::Json => write_json(out, response).map(|()| 0),
            Output::Simulation(format) => simulate::write_results(out, response, format),
            Output::Exports => {
                let lines = sts_cmd::export_lines(response)?;
                out.write_all(lines.as_bytes()).and_then(|()| out.flush()).map(|()| 0)
            }
        };
        written.map_err(|source| Error::Io { what: "cannot write the response to stdout", source })
    }
}

/// Writes `value` like `aws --output json`: four-space indentation and a trailing newline.
pub fn write_json(out: &mut dyn Write, value: &Value) -> std::io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(
        &mut *out,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    serde::Serialize::serialize(value, &mut ser).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shown(call: &ApiCall, response: &Value) -> (Result<i32, Error>, String) {
        let mut out = Vec::new();
        let code = call.write_response(response, &mut out);
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn json_uses_four_spaces() {
        let call = ApiCall::new(Service::Iam, "ListUsers", json!({}));
        assert_eq!(call.target(), "AirlockIAM.ListUsers");
        let (code, text) = shown(&call, &json!({"Users": [{"UserName": "admin"}]}));
        assert_eq!(code.unwrap(), 0);
        assert_eq!(
            text,
            "{\n    \"Users\": [\n        {\n            \"UserName\": \"admin\"\n        }\n    ]\n}\n"
        );
    }

    #[test]
    fn exports_need_credentials() {
        let call = ApiCall { output: Output::Exports, ..ApiCall::new(Service::Sts, "AssumeRole", json!({})) };
        let (code, text) = shown(&call, &json!({}));
        let err = code.unwrap_err();
        assert_eq!(err.exit_code(), crate::EXIT_FAILURE, "{err}");
        assert!(text.is_empty(), "nothing half-printed: {text}");
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_failures_are_io_errors() {
        let call = ApiCall::new(Service::Ssm, "DescribeSessions", json!({}));
        let err = call.write_response(&json!({"Sessions": []}), &mut Broken).unwrap_err();
        assert!(err.to_string().starts_with("cannot write the response to stdout: "), "{err}");
        assert_eq!(err.exit_code(), crate::EXIT_FAILURE);
    }
}
