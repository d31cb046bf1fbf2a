//! Custom Command documents (schema 2.2): `aws:runShellScript` steps whose `runCommand` lines
//! may use `{{ name }}` parameters with `default`, `allowedValues` and `allowedPattern`.
//! Checked when the document is created or updated, rendered when a command is sent.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::plan::{Refusal, Script, DEFAULT_EXECUTION_TIMEOUT_S, MAX_EXECUTION_TIMEOUT_S};

/// The only schema served.
pub const SCHEMA: &str = "2.2";
/// The only step action served.
const ACTION: &str = "aws:runShellScript";
/// Parameters a document may declare at most.
const MAX_PARAMETERS: usize = 50;
/// Steps a document may have at most.
const MAX_STEPS: usize = 20;
/// The longest `allowedPattern` (regex-lite matches in linear time; this bounds compiling).
const MAX_PATTERN: usize = 1024;

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: BTreeMap<String, RawParameter>,
    main_steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawParameter {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    default: Option<serde_json::Value>,
    #[serde(default)]
    allowed_values: Option<Vec<String>>,
    #[serde(default)]
    allowed_pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStep {
    action: String,
    name: String,
    inputs: RawInputs,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInputs {
    run_command: serde_json::Value,
    #[serde(default)]
    working_directory: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<serde_json::Value>,
}

/// A declared parameter.
#[derive(Debug)]
struct Parameter {
    list: bool,
    description: String,
    default: Option<Vec<String>>,
    allowed_values: Option<Vec<String>>,
    allowed_pattern: Option<regex_lite::Regex>,
}

/// A checked Command document.
#[derive(Debug)]
pub struct CommandDocument {
    /// Its description.
    pub description: String,
    parameters: BTreeMap<String, Parameter>,
    /// Every step's lines, in order.
    lines: Vec<String>,
    working_directory: String,
    timeout_s: u32,
}

fn strings(v: &serde_json::Value, what: &str) -> Result<Vec<String>, Refusal> {
    let bad = || refuse("InvalidDocumentContent", format!("{what} must be a string or a list of strings"));
    match v {
        serde_json::Value::String(s) => Ok(vec![s.clone()]),
        serde_json::Value::Array(items) => {
            items.iter().map(|i| i.as_str().map(str::to_owned).ok_or_else(bad)).collect()
        }
        _ => Err(bad()),
    }
}

/// The `{{ name }}` references in a line.
fn references(line: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = line[from..].find("{{").map(|i| i + from) {
        let Some(close) = line[open..].find("}}").map(|i| i + open) else { break };
        let name = line[open + 2..close].trim().to_owned();
        out.push((open, close + 2, name));
        from = close + 2;
    }
    out
}

/// Parses and checks a Command document's JSON.
pub fn parse(content: &str) -> Result<CommandDocument, Refusal> {
    let bad = |m: String| refuse("InvalidDocumentContent", m);
    let value: serde_json::Value =
        serde_json::from_str(content).map_err(|e| bad(format!("not a JSON document: {e}")))?;
    // The schema first: a Session document sent as a Command is told what is wrong with it.
    let schema = value.get("schemaVersion").and_then(serde_json::Value::as_str).unwrap_or_default();
    if schema != SCHEMA {
        return Err(refuse(
            "InvalidDocumentSchemaVersion",
            format!("schemaVersion {schema:?}: Command documents here use {SCHEMA}"),
        ));
    }
    let raw: Raw = serde_json::from_value(value).map_err(|e| bad(format!("not a Command document: {e}")))?;
    if raw.parameters.len() > MAX_PARAMETERS {
        return Err(bad(format!("at most {MAX_PARAMETERS} parameters")));
    }
    let mut parameters = BTreeMap::new();
    for (name, p) in raw.parameters {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad(format!("parameter name {name:?}: letters, digits and _ only")));
        }
        let list = match p.kind.as_str() {
            "String" => false,
            "StringList" => true,
            other => {
                return Err(bad(format!("parameter {name}: type {other:?} is not String or StringList")))
            }
        };
        let allowed_pattern = match p.allowed_pattern {
            None => None,
            Some(pat) if pat.len() > MAX_PATTERN => {
                return Err(bad(format!("parameter {name}: allowedPattern is longer than {MAX_PATTERN}")))
            }
            Some(pat) => Some(
                regex_lite::Regex::new(&pat)
                    .map_err(|e| bad(format!("parameter {name}: allowedPattern does not compile: {e}")))?,
            ),
        };
        let default =
            p.default.as_ref().map(|d| strings(d, &format!("parameter {name}'s default"))).transpose()?;
        parameters.insert(
            name,
            Parameter {
                list,
                description: p.description,
                default,
                allowed_values: p.allowed_values,
                allowed_pattern,
            },
        );
    }
    if raw.main_steps.is_empty() || raw.main_steps.len() > MAX_STEPS {
        return Err(bad(format!("mainSteps takes 1 to {MAX_STEPS} steps")));
    }
    let (mut lines, mut working_directory, mut timeout_s) =
        (Vec::new(), String::new(), DEFAULT_EXECUTION_TIMEOUT_S);
    for step in raw.main_steps {
        if step.action != ACTION {
            return Err(bad(format!(
                "step {}: action {:?} is not served (only {ACTION})",
                step.name, step.action
            )));
        }
        lines.extend(strings(&step.inputs.run_command, &format!("step {}'s runCommand", step.name))?);
        if let Some(w) = step.inputs.working_directory {
            working_directory = w;
        }
        if let Some(t) = step.inputs.timeout_seconds {
            let n = t.as_u64().or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()));
            timeout_s = n
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_EXECUTION_TIMEOUT_S).contains(n))
                .ok_or_else(|| {
                    bad(format!("step {}: timeoutSeconds must be 1 to {MAX_EXECUTION_TIMEOUT_S}", step.name))
                })?;
        }
    }
    for line in lines.iter().chain(std::iter::once(&working_directory)) {
        for (_, _, name) in references(line) {
            if !parameters.contains_key(&name) {
                return Err(bad(format!("{{{{ {name} }}}} refers to no declared parameter")));
            }
        }
    }
    Ok(CommandDocument { description: raw.description, parameters, lines, working_directory, timeout_s })
}

impl CommandDocument {
    /// DescribeDocument's `Parameters`: name, type, description and default.
    pub fn parameters_json(&self) -> Vec<serde_json::Value> {
        self.parameters
            .iter()
            .map(|(name, p)| {
                let mut e = serde_json::json!({
                    "Name": name,
                    "Type": if p.list { "StringList" } else { "String" },
                    "Description": p.description,
                });
                if let Some(d) = &p.default {
                    e["DefaultValue"] = serde_json::json!(d.join(","));
                }
                e
            })
            .collect()
    }

    /// The script for `params`: every parameter given or defaulted, checked against its
    /// allowed values and pattern, and substituted.
    pub fn render(&self, params: &HashMap<String, Vec<String>>) -> Result<Script, Refusal> {
        let bad = |m: String| refuse("InvalidParameters", m);
        let mut unknown: Vec<&str> =
            params.keys().map(String::as_str).filter(|k| !self.parameters.contains_key(*k)).collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(bad(format!("the document does not take the parameter(s) {}", unknown.join(", "))));
        }
        let mut values: HashMap<&str, Vec<String>> = HashMap::new();
        for (name, p) in &self.parameters {
            let given = params.get(name).cloned().or_else(|| p.default.clone());
            let Some(given) = given else {
                return Err(bad(format!("the parameter {name:?} is required")));
            };
            if !p.list && given.len() != 1 {
                return Err(bad(format!("the parameter {name:?} takes one value")));
            }
            for v in &given {
                if let Some(allowed) = &p.allowed_values {
                    if !allowed.contains(v) {
                        return Err(bad(format!(
                            "{name} {v:?} is not one of the allowed values {allowed:?}"
                        )));
                    }
                }
                if let Some(re) = &p.allowed_pattern {
                    if !re.is_match(v) {
                        return Err(bad(format!(
                            "{name} {v:?} does not match the allowed pattern {:?}",
                            re.as_str()
                        )));
                    }
                }
            }
            values.insert(name.as_str(), given);
        }
        let substitute = |line: &str| -> String {
            let mut out = String::new();
            let mut last = 0;
            for (start, end, name) in references(line) {
                out.push_str(&line[last..start]);
                out.push_str(&values.get(name.as_str()).map(|v| v.join(",")).unwrap_or_default());
                last = end;
            }
            out.push_str(&line[last..]);
            out
        };
        let mut script_lines = Vec::new();
        for line in &self.lines {
            // A line that is a StringList parameter alone becomes one line per value.
            let refs = references(line);
            match refs.as_slice() {
                [(0, end, name)]
                    if *end == line.len() && self.parameters.get(name).is_some_and(|p| p.list) =>
                {
                    script_lines.extend(values.get(name.as_str()).cloned().unwrap_or_default());
                }
                _ => script_lines.push(substitute(line)),
            }
        }
        let script = script_lines.join("\n");
        if script.trim().is_empty() {
            return Err(bad("the document's commands are empty with these parameters".into()));
        }
        if script.len() > airlock_proto::command::MAX_SCRIPT_BYTES {
            return Err(bad(format!(
                "the script is longer than {} bytes",
                airlock_proto::command::MAX_SCRIPT_BYTES
            )));
        }
        Ok(Script {
            script,
            working_directory: substitute(&self.working_directory),
            execution_timeout_s: self.timeout_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
      "schemaVersion": "2.2",
      "description": "restart a service",
      "parameters": {
        "service": {"type": "String", "allowedPattern": "^[a-z][a-z0-9-]{0,30}$"},
        "mode": {"type": "String", "default": "restart", "allowedValues": ["restart", "reload"]},
        "extra": {"type": "StringList", "default": ["true"]}
      },
      "mainSteps": [{"action": "aws:runShellScript", "name": "go",
        "inputs": {"runCommand": ["echo {{ mode }} {{service}}", "{{ extra }}"], "timeoutSeconds": "60"}}]
    }"#;

    fn params(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn parameters_are_checked_and_substituted() {
        let doc = parse(DOC).unwrap();
        let s = doc.render(&params(&[("service", &["nginx"])])).unwrap();
        assert_eq!((s.script.as_str(), s.execution_timeout_s), ("echo restart nginx\ntrue", 60));
        let s = doc
            .render(&params(&[("service", &["db"]), ("mode", &["reload"]), ("extra", &["a", "b"])]))
            .unwrap();
        assert_eq!(s.script, "echo reload db\na\nb");
        for bad in [
            params(&[]),
            params(&[("service", &["nginx; rm -rf /"])]),
            params(&[("service", &["nginx"]), ("mode", &["stop"])]),
            params(&[("service", &["a", "b"])]),
            params(&[("service", &["nginx"]), ("other", &["x"])]),
        ] {
            assert_eq!(doc.render(&bad).unwrap_err().code, "InvalidParameters", "{bad:?}");
        }
    }

    #[test]
    fn bad_documents_are_refused() {
        for (doc, code) in [
            (r#"{"schemaVersion": "1.2", "mainSteps": []}"#, "InvalidDocumentSchemaVersion"),
            (r#"{"schemaVersion": "2.2", "mainSteps": []}"#, "InvalidDocumentContent"),
            (
                r#"{"schemaVersion": "2.2", "mainSteps": [{"action": "aws:runPowerShellScript", "name": "x", "inputs": {"runCommand": ["x"]}}]}"#,
                "InvalidDocumentContent",
            ),
            (
                r#"{"schemaVersion": "2.2", "mainSteps": [{"action": "aws:runShellScript", "name": "x", "inputs": {"runCommand": ["{{ nope }}"]}}]}"#,
                "InvalidDocumentContent",
            ),
            (
                r#"{"schemaVersion": "2.2", "parameters": {"p": {"type": "String", "allowedPattern": "("}}, "mainSteps": [{"action": "aws:runShellScript", "name": "x", "inputs": {"runCommand": ["{{ p }}"]}}]}"#,
                "InvalidDocumentContent",
            ),
            ("not json", "InvalidDocumentContent"),
        ] {
            assert_eq!(parse(doc).unwrap_err().code, code, "{doc}");
        }
    }
}
