//! What a SendCommand asks for, checked: the script of the document with its parameters, and
//! the rate controls as numbers.

use std::collections::HashMap;

/// The built-in shell document.
pub const RUN_SHELL_SCRIPT: &str = "AWS-RunShellScript";
/// The plugin of its one step.
pub const PLUGIN: &str = "aws:runShellScript";
/// `executionTimeout` when none is given.
pub const DEFAULT_EXECUTION_TIMEOUT_S: u32 = 3600;
/// The longest `executionTimeout` (SSM's: 48 hours).
pub const MAX_EXECUTION_TIMEOUT_S: u32 = 172_800;

/// A request SSM would refuse; `code` is SSM's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SSM's error code.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

/// What the agents run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The script for `sh -c`: the `commands` lines.
    pub script: String,
    /// `workingDirectory`, empty for the agent's default.
    pub working_directory: String,
    /// `executionTimeout` in seconds.
    pub execution_timeout_s: u32,
}

/// The script of `document` with `params`, as `AWS-RunShellScript` defines them.
pub fn script_for(document: &str, params: &HashMap<String, Vec<String>>) -> Result<Script, Refusal> {
    let name = document.rsplit('/').next().unwrap_or(document);
    if name != RUN_SHELL_SCRIPT {
        return Err(refuse(
            "InvalidDocument",
            format!("Document {name} does not exist or is not a Command document this broker runs (it runs {RUN_SHELL_SCRIPT})"),
        ));
    }
    const TAKES: [&str; 3] = ["commands", "workingDirectory", "executionTimeout"];
    let mut unknown: Vec<&str> = params.keys().map(String::as_str).filter(|k| !TAKES.contains(k)).collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(refuse(
            "InvalidParameters",
            format!(
                "{RUN_SHELL_SCRIPT} does not take the parameter(s) {} (it takes: {})",
                unknown.join(", "),
                TAKES.join(", ")
            ),
        ));
    }
    let commands = params.get("commands").cloned().unwrap_or_default();
    let script = commands.join("\n");
    if script.trim().is_empty() {
        return Err(refuse("InvalidParameters", "the parameter \"commands\" is required"));
    }
    if script.len() > airlock_proto::command::MAX_SCRIPT_BYTES {
        return Err(refuse(
            "InvalidParameters",
            format!("\"commands\" is longer than {} bytes", airlock_proto::command::MAX_SCRIPT_BYTES),
        ));
    }
    let single = |key: &str| -> Result<Option<String>, Refusal> {
        match params.get(key).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one.clone())),
            Some(_) => Err(refuse("InvalidParameters", format!("the parameter {key:?} takes one value"))),
        }
    };
    let working_directory = single("workingDirectory")?.unwrap_or_default();
    if working_directory.len() > 4096 || working_directory.contains('\0') {
        return Err(refuse("InvalidParameters", "workingDirectory is not a path"));
    }
    let execution_timeout_s = match single("executionTimeout")? {
        None => DEFAULT_EXECUTION_TIMEOUT_S,
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_EXECUTION_TIMEOUT_S).contains(n))
            .ok_or_else(|| {
                refuse(
                    "InvalidParameters",
                    format!("executionTimeout {v:?} must be a number of seconds from 1 to {MAX_EXECUTION_TIMEOUT_S}"),
                )
            })?,
    };
    Ok(Script { script, working_directory, execution_timeout_s })
}

/// A rate control: a number of targets or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// This many.
    Count(u64),
    /// This percentage of the targets.
    Percent(u8),
}

impl Rate {
    /// Parses `MaxConcurrency` (`zero_ok` false: 1 or more) or `MaxErrors` (0 allowed), as
    /// SSM's patterns allow them.
    pub fn parse(s: &str, zero_ok: bool, member: &str) -> Result<Rate, Refusal> {
        let bad =
            || refuse("ValidationException", format!("{member} {s:?} must be a number or a percentage"));
        if s.is_empty() || s.len() > 7 {
            return Err(bad());
        }
        let (digits, percent) = match s.strip_suffix('%') {
            Some(d) => (d, true),
            None => (s, false),
        };
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        if n == 0 && !zero_ok {
            return Err(bad());
        }
        if percent {
            u8::try_from(n).ok().filter(|p| *p <= 100).map(Rate::Percent).ok_or_else(bad)
        } else {
            Ok(Rate::Count(n))
        }
    }

    /// The number for `targets` targets: percentages of concurrency round up (at least 1),
    /// of errors down.
    pub fn of(self, targets: usize, round_up: bool) -> usize {
        match self {
            Rate::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Rate::Percent(p) => {
                let scaled = targets.saturating_mul(usize::from(p));
                if round_up {
                    scaled.div_ceil(100).max(1)
                } else {
                    scaled / 100
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn run_shell_script_parameters() {
        let s = script_for(RUN_SHELL_SCRIPT, &params(&[("commands", &["uptime", "df -h"])])).unwrap();
        assert_eq!(s.script, "uptime\ndf -h");
        assert_eq!(s.execution_timeout_s, 3600);
        let s = script_for(
            "arn:aws:ssm:us-east-1::document/AWS-RunShellScript",
            &params(&[("commands", &["id"]), ("executionTimeout", &["5"]), ("workingDirectory", &["/tmp"])]),
        )
        .unwrap();
        assert_eq!((s.execution_timeout_s, s.working_directory.as_str()), (5, "/tmp"));
        for (doc, p, code) in [
            ("AWS-RunPowerShellScript", params(&[("commands", &["id"])]), "InvalidDocument"),
            (RUN_SHELL_SCRIPT, params(&[]), "InvalidParameters"),
            (RUN_SHELL_SCRIPT, params(&[("commands", &["id"]), ("x", &["1"])]), "InvalidParameters"),
            (
                RUN_SHELL_SCRIPT,
                params(&[("commands", &["id"]), ("executionTimeout", &["0"])]),
                "InvalidParameters",
            ),
            (
                RUN_SHELL_SCRIPT,
                params(&[("commands", &["id"]), ("executionTimeout", &["1", "2"])]),
                "InvalidParameters",
            ),
            (
                RUN_SHELL_SCRIPT,
                params(&[("commands", &["id"]), ("executionTimeout", &["172801"])]),
                "InvalidParameters",
            ),
        ] {
            assert_eq!(script_for(doc, &p).unwrap_err().code, code, "{doc} {p:?}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(Rate::parse("50", false, "m").unwrap().of(10, true), 50);
        assert_eq!(Rate::parse("50%", false, "m").unwrap().of(3, true), 2);
        assert_eq!(Rate::parse("1%", false, "m").unwrap().of(3, true), 1);
        assert_eq!(Rate::parse("10%", true, "m").unwrap().of(9, false), 0);
        assert_eq!(Rate::parse("0", true, "m").unwrap().of(9, false), 0);
        for bad in ["0", "", "-1", "101%", "05", "1.5", "%", "abc", "99999999"] {
            assert!(Rate::parse(bad, false, "m").is_err(), "{bad}");
        }
        assert!(Rate::parse("0%", true, "m").is_ok());
    }
}
