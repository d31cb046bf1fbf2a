//! The argument forms the AWS CLI accepts for `--parameters`, `--filters` and timestamps.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// `StartSession` parameters: name → list of values.
pub type Parameters = BTreeMap<String, Vec<String>>;

/// Whether `name` can start a new `name=` pair in shorthand: `[A-Za-z][A-Za-z0-9_]*`.
fn is_key(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits `a=1,b=x,y,c=3` into `[(a, 1), (b, "x,y"), (c, 3)]`: a comma starts a new pair
/// only when a `name=` follows it, so commas inside values survive.
pub fn split_shorthand(text: &str) -> Result<Vec<(String, String)>, String> {
    let (first_key, mut rest) =
        text.split_once('=').ok_or_else(|| format!("expected key=value, got {text:?}"))?;
    let first_key = first_key.trim();
    if first_key.is_empty() {
        return Err(format!("empty key in {text:?}"));
    }
    let mut pairs = Vec::new();
    let mut key = first_key.to_owned();
    loop {
        // Find the first comma followed by `name=`; everything before it is this value.
        let boundary = rest
            .match_indices(',')
            .map(|(i, _)| i)
            .find(|&i| rest[i + 1..].split_once('=').is_some_and(|(name, _)| is_key(name)));
        match boundary {
            Some(i) => {
                pairs.push((key, rest[..i].to_owned()));
                let (next_key, next_rest) = rest[i + 1..].split_once('=').unwrap_or_default();
                key = next_key.trim().to_owned();
                rest = next_rest;
            }
            None => {
                pairs.push((key, rest.to_owned()));
                return Ok(pairs);
            }
        }
    }
}

/// Parses `--parameters`: JSON (`{"k":["v"],"x":"y"}`) or shorthand (`k=v,k2=v2`).
///
/// A repeated shorthand key adds to its list; JSON string values become one-element lists.
pub fn parse_parameters(text: &str) -> Result<Parameters, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return parse_parameters_json(trimmed);
    }
    let mut out = Parameters::new();
    for (key, value) in split_shorthand(text)? {
        out.entry(key).or_default().push(value);
    }
    Ok(out)
}

fn parse_parameters_json(text: &str) -> Result<Parameters, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else { return Err("JSON parameters must be an object".to_owned()) };
    let mut out = Parameters::new();
    for (key, value) in map {
        if key.is_empty() {
            return Err("empty parameter name".to_owned());
        }
        let values = match value {
            Value::String(s) => vec![s],
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    other => Err(format!("parameter {key:?}: list items must be strings, got {other}")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(format!("parameter {key:?} must be a string or a list of strings, got {other}"))
            }
        };
        out.insert(key, values);
    }
    Ok(out)
}

/// Looks up a shorthand member by name, ignoring case (`Key`/`key`).
pub(crate) fn member<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

pub(crate) fn check_members(pairs: &[(String, String)], allowed: &[&str], text: &str) -> Result<(), String> {
    match pairs.iter().find(|(k, _)| !allowed.iter().any(|a| a.eq_ignore_ascii_case(k))) {
        Some((k, _)) => Err(format!("unknown member {k:?} in {text:?} (expected {})", allowed.join(", "))),
        None => Ok(()),
    }
}

/// One argument that may be a JSON list/object or shorthand; JSON is passed through.
fn json_items(text: &str) -> Result<Option<Vec<Value>>, String> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('[') || trimmed.starts_with('{')) {
        return Ok(None);
    }
    match serde_json::from_str(trimmed).map_err(|e| format!("invalid JSON: {e}"))? {
        Value::Array(items) => Ok(Some(items)),
        obj @ Value::Object(_) => Ok(Some(vec![obj])),
        _ => Err("expected a JSON object or list".to_owned()),
    }
}

/// Parses one DescribeSessions filter: `key=Target,value=mi-…` → `{"key","value"}`.
pub fn parse_session_filter(text: &str) -> Result<Vec<Value>, String> {
    if let Some(items) = json_items(text)? {
        return Ok(items);
    }
    let pairs = split_shorthand(text)?;
    check_members(&pairs, &["key", "value"], text)?;
    match (member(&pairs, "key"), member(&pairs, "value")) {
        (Some(k), Some(v)) => Ok(vec![json!({"key": k, "value": v})]),
        _ => Err(format!("a session filter needs key= and value=, got {text:?}")),
    }
}

/// Parses one DescribeInstanceInformation filter: `Key=PingStatus,Values=Online,ConnectionLost`
/// → `{"Key","Values":[…]}`.
pub fn parse_instance_filter(text: &str) -> Result<Vec<Value>, String> {
    if let Some(items) = json_items(text)? {
        return Ok(items);
    }
    let pairs = split_shorthand(text)?;
    check_members(&pairs, &["Key", "Values"], text)?;
    match (member(&pairs, "Key"), member(&pairs, "Values")) {
        (Some(k), Some(v)) => Ok(vec![json!({"Key": k, "Values": split_list(v)})]),
        _ => Err(format!("an instance filter needs Key= and Values=, got {text:?}")),
    }
}

/// Parses one `--instance-information-filter-list` item: `key=InstanceIds,valueSet=mi-1,mi-2`.
pub fn parse_instance_information_filter(text: &str) -> Result<Vec<Value>, String> {
    if let Some(items) = json_items(text)? {
        return Ok(items);
    }
    let pairs = split_shorthand(text)?;
    check_members(&pairs, &["key", "valueSet"], text)?;
    match (member(&pairs, "key"), member(&pairs, "valueSet")) {
        (Some(k), Some(v)) => Ok(vec![json!({"key": k, "valueSet": split_list(v)})]),
        _ => Err(format!("a filter needs key= and valueSet=, got {text:?}")),
    }
}

fn split_list(v: &str) -> Vec<String> {
    let v = v.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(v);
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Parses a timestamp argument into epoch seconds: `1700000000`, `1700000000.5`, RFC 3339,
/// `YYYY-MM-DDTHH:MM:SS` (UTC) or `YYYY-MM-DD` (UTC midnight).
pub fn parse_timestamp(text: &str) -> Result<Value, String> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        if let Ok(n) = t.parse::<i64>() {
            return Ok(json!(n));
        }
        if let Ok(f) = t.parse::<f64>() {
            return Ok(json!(f));
        }
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(epoch(dt.timestamp(), dt.timestamp_subsec_millis()));
    }
    if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S") {
        let dt = dt.and_utc();
        return Ok(epoch(dt.timestamp(), dt.timestamp_subsec_millis()));
    }
    if let Some(dt) =
        chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(json!(dt.and_utc().timestamp()));
    }
    Err(format!("invalid timestamp {text:?}: use RFC 3339 (2025-01-31T12:00:00Z) or epoch seconds"))
}

fn epoch(secs: i64, millis: u32) -> Value {
    if millis == 0 {
        json!(secs)
    } else {
        json!(secs as f64 + f64::from(millis) / 1000.0)
    }
}

/// The `Parameters` member for a request body.
pub fn parameters_json(params: &Parameters) -> Value {
    let map: Map<String, Value> = params.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Parameters {
        parse_parameters(text).unwrap()
    }

    fn one(k: &str, v: &str) -> Parameters {
        Parameters::from([(k.to_owned(), vec![v.to_owned()])])
    }

    #[test]
    fn shell_stripped_command() {
        assert_eq!(p("command=uname -a"), one("command", "uname -a"));
        assert_eq!(p("command=FOO=bar env"), one("command", "FOO=bar env"));
        assert_eq!(p("command="), one("command", ""));
    }

    #[test]
    fn commas_only_split_before_a_key() {
        assert_eq!(p("command=echo a,b"), one("command", "echo a,b"));
        assert_eq!(p("command=echo a, b=c"), one("command", "echo a, b=c"));
        assert_eq!(
            p("command=echo a,b=c"),
            Parameters::from([
                ("command".to_owned(), vec!["echo a".to_owned()]),
                ("b".to_owned(), vec!["c".to_owned()]),
            ])
        );
        assert_eq!(
            p("portNumber=80,localPortNumber=8080"),
            Parameters::from([
                ("localPortNumber".to_owned(), vec!["8080".to_owned()]),
                ("portNumber".to_owned(), vec!["80".to_owned()]),
            ])
        );
        // `1x=` is not a key, `,=` neither.
        assert_eq!(p("command=a,1x=2,=3"), one("command", "a,1x=2,=3"));
        assert_eq!(p("k=v,k=w"), Parameters::from([("k".to_owned(), vec!["v".to_owned(), "w".to_owned()])]));
    }

    #[test]
    fn json_form() {
        let got = p(r#"{"portNumber":["80"],"x":"y","many":["a","b"]}"#);
        assert_eq!(got["portNumber"], vec!["80"]);
        assert_eq!(got["x"], vec!["y"]);
        assert_eq!(got["many"], vec!["a", "b"]);
        assert_eq!(parameters_json(&got), json!({"portNumber":["80"],"x":["y"],"many":["a","b"]}));
    }

    #[test]
    fn bad_parameters() {
        for bad in ["{\"a\":", "{\"a\": 1}", "{\"a\": [1]}", "[\"a\"]", "{\"\": \"x\"}", "=x", "novalue", ""]
        {
            assert!(parse_parameters(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_parameters(" =x").unwrap_err().contains("empty key"));
        assert!(parse_parameters("{nope}").unwrap_err().contains("invalid JSON"));
    }

    #[test]
    fn session_filters() {
        assert_eq!(
            parse_session_filter("key=Target,value=mi-0123").unwrap(),
            vec![json!({"key": "Target", "value": "mi-0123"})]
        );
        assert_eq!(
            parse_session_filter("Key=Owner,Value=arn:x,y").unwrap(),
            vec![json!({"key": "Owner", "value": "arn:x,y"})]
        );
        let list = parse_session_filter(r#"[{"key":"Status","value":"Connected"}]"#).unwrap();
        assert_eq!(list, vec![json!({"key": "Status", "value": "Connected"})]);
        assert!(parse_session_filter("key=Target").is_err());
        assert!(parse_session_filter("key=Target,value=x,bogus=1").is_err());
    }

    #[test]
    fn instance_filters() {
        assert_eq!(
            parse_instance_filter("Key=PingStatus,Values=Online,ConnectionLost").unwrap(),
            vec![json!({
                "Key": "PingStatus",
                "Values": ["Online", "ConnectionLost"]
            })]
        );
        assert_eq!(
            parse_instance_information_filter("key=InstanceIds,valueSet=mi-1,mi-2").unwrap(),
            vec![json!(
                {"key": "InstanceIds", "valueSet": ["mi-1", "mi-2"]}
            )]
        );
        assert!(parse_instance_filter("Key=PingStatus").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1700000000").unwrap(), json!(1_700_000_000));
        assert_eq!(parse_timestamp("1700000000.5").unwrap(), json!(1_700_000_000.5));
        assert_eq!(parse_timestamp("2024-03-01T12:00:00Z").unwrap(), json!(1_709_294_400));
        assert_eq!(parse_timestamp("2024-03-01T13:00:00+01:00").unwrap(), json!(1_709_294_400));
        assert_eq!(parse_timestamp("2024-03-01T12:00:00").unwrap(), json!(1_709_294_400));
        assert_eq!(parse_timestamp("2024-03-01").unwrap(), json!(1_709_251_200));
        for bad in ["tomorrow", "", "1.2.3", "2024-13-01"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }
}
