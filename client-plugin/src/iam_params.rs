//! The argument forms of the IAM and STS commands: `--tags`, `--tag-keys`, `--context` and
//! documents given inline or as `file://PATH`, as the AWS CLI accepts them.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::params::{check_members, member, split_shorthand};

/// An argument that could not be understood; clap reports it as a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// A `--tags` value that is neither `Key=k,Value=v` nor JSON tags.
    #[error("invalid tag {text:?}: {why}")]
    Tag {
        /// The argument as given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `--tag-keys` value that is empty or not a JSON list of strings.
    #[error("invalid tag key {text:?}: {why}")]
    TagKey {
        /// The argument as given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `--context` value that is not `key=value`.
    #[error("invalid context entry {text:?}: expected KEY=VALUE, e.g. aws:SourceIp=10.0.0.1")]
    Context {
        /// The argument as given.
        text: String,
    },
    /// A `file://` argument whose file cannot be read (wording of the AWS CLI).
    #[error("Unable to load paramfile {uri}: {source}")]
    ParamFile {
        /// The argument as given, `file://` included.
        uri: String,
        /// Why reading failed.
        source: std::io::Error,
    },
}

fn tag_error(text: &str, why: impl Into<String>) -> ParamError {
    ParamError::Tag { text: text.to_owned(), why: why.into() }
}

/// Parses one `--tags` value: `Key=k,Value=v` (commas inside the value survive) or JSON, a
/// list `[{"Key":"k","Value":"v"}]` or one such object; returns `{"Key","Value"}` objects.
pub fn parse_tags(text: &str) -> Result<Vec<Value>, ParamError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let value: Value =
            serde_json::from_str(trimmed).map_err(|e| tag_error(text, format!("invalid JSON: {e}")))?;
        let items = match value {
            Value::Array(items) => items,
            obj @ Value::Object(_) => vec![obj],
            _ => return Err(tag_error(text, "expected a JSON list of {\"Key\", \"Value\"} objects")),
        };
        return items.iter().map(|item| json_tag(text, item)).collect();
    }
    let pairs = split_shorthand(text).map_err(|why| tag_error(text, why))?;
    check_members(&pairs, &["Key", "Value"], text).map_err(|why| tag_error(text, why))?;
    match (member(&pairs, "Key"), member(&pairs, "Value")) {
        (Some(""), _) => Err(tag_error(text, "the Key is empty")),
        (Some(k), Some(v)) => Ok(vec![json!({"Key": k, "Value": v})]),
        _ => Err(tag_error(text, "expected Key=k,Value=v")),
    }
}

fn json_tag(text: &str, item: &Value) -> Result<Value, ParamError> {
    let Value::Object(map) = item else { return Err(tag_error(text, format!("{item} is not an object"))) };
    if let Some(k) = map.keys().find(|k| *k != "Key" && *k != "Value") {
        return Err(tag_error(text, format!("unknown member {k:?} (expected Key, Value)")));
    }
    match (map.get("Key"), map.get("Value")) {
        (Some(Value::String(k)), _) if k.is_empty() => Err(tag_error(text, "the Key is empty")),
        (Some(Value::String(k)), Some(Value::String(v))) => Ok(json!({"Key": k, "Value": v})),
        _ => Err(tag_error(text, format!("{item} needs string members Key and Value"))),
    }
}

/// Parses one `--tag-keys` value: a key, or a JSON list of keys (`["team","env"]`).
pub fn parse_tag_keys(text: &str) -> Result<Vec<String>, ParamError> {
    let fail = |why: String| ParamError::TagKey { text: text.to_owned(), why };
    if text.trim_start().starts_with('[') {
        let keys: Vec<String> =
            serde_json::from_str(text).map_err(|e| fail(format!("not a JSON list of strings: {e}")))?;
        if keys.iter().any(String::is_empty) {
            return Err(fail("a key is empty".to_owned()));
        }
        return Ok(keys);
    }
    if text.is_empty() {
        return Err(fail("the key is empty".to_owned()));
    }
    Ok(vec![text.to_owned()])
}

/// Parses one `--context` value `key=value` (split at the first `=`, so values may hold more).
pub fn parse_context(text: &str) -> Result<(String, String), ParamError> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
        _ => Err(ParamError::Context { text: text.to_owned() }),
    }
}

/// Resolves a document argument the AWS CLI way: `file://PATH` is the file's text (`~/` is the
/// home directory), anything else is the text itself. The broker checks the JSON, with a line
/// and column that refer to what was sent, so it is passed on unchanged.
pub fn load_document(text: &str) -> Result<String, ParamError> {
    let Some(path) = text.strip_prefix("file://") else { return Ok(text.to_owned()) };
    std::fs::read_to_string(expand_home(path))
        .map_err(|source| ParamError::ParamFile { uri: text.to_owned(), source })
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

/// `SimulatePrincipalPolicy`'s `ContextEntries`: one entry per key (keys compared without
/// case, as IAM does), its values in the order given; `stringList` when a key has several.
pub fn context_entries(pairs: &[(String, String)]) -> Vec<Value> {
    let mut keys: Vec<(&str, Vec<&str>)> = Vec::new();
    for (key, value) in pairs {
        match keys.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            Some((_, values)) => values.push(value),
            None => keys.push((key, vec![value])),
        }
    }
    keys.into_iter()
        .map(|(key, values)| {
            let kind = if values.len() > 1 { "stringList" } else { "string" };
            let mut entry = Map::new();
            entry.insert("ContextKeyName".into(), json!(key));
            entry.insert("ContextKeyValues".into(), json!(values));
            entry.insert("ContextKeyType".into(), json!(kind));
            Value::Object(entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_shorthand() {
        assert_eq!(parse_tags("Key=team,Value=ops").unwrap(), vec![json!({"Key": "team", "Value": "ops"})]);
        assert_eq!(
            parse_tags("key=cc,value=a,b c=d").unwrap(),
            vec![json!({"Key": "cc", "Value": "a,b c=d"})],
            "member names ignore case; a comma not followed by a member name stays in the value"
        );
        assert_eq!(parse_tags("Value=,Key=empty").unwrap(), vec![json!({"Key": "empty", "Value": ""})]);
    }

    #[test]
    fn tag_json() {
        assert_eq!(
            parse_tags(r#"[{"Key":"a","Value":"1"},{"Key":"b","Value":"x,y"}]"#).unwrap(),
            vec![json!({"Key": "a", "Value": "1"}), json!({"Key": "b", "Value": "x,y"})]
        );
        assert_eq!(parse_tags(r#" {"Key":"a","Value":""}"#).unwrap(), vec![json!({"Key": "a", "Value": ""})]);
        assert_eq!(parse_tags("[]").unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn bad_tags() {
        for (bad, why) in [
            ("Key=team", "expected Key=k,Value=v"),
            ("Value=ops", "expected Key=k,Value=v"),
            ("Key=,Value=x", "the Key is empty"),
            ("Key=a,Value=b,Owner=c", "unknown member \"Owner\""),
            ("team=ops", "unknown member \"team\""),
            ("novalue", "expected key=value"),
            ("[{\"Key\":\"a\"", "invalid JSON"),
            ("[{\"Key\":\"a\"}]", "needs string members Key and Value"),
            ("[{\"Key\":\"a\",\"Value\":1}]", "needs string members Key and Value"),
            ("[{\"Key\":\"\",\"Value\":\"v\"}]", "the Key is empty"),
            ("[{\"Key\":\"a\",\"Value\":\"v\",\"X\":1}]", "unknown member \"X\""),
            ("[\"a\"]", "is not an object"),
        ] {
            let err = parse_tags(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid tag {bad:?}: ")), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn tag_keys() {
        assert_eq!(parse_tag_keys("team").unwrap(), ["team"]);
        assert_eq!(parse_tag_keys(r#"["a","b c"]"#).unwrap(), ["a", "b c"]);
        assert_eq!(parse_tag_keys("a,b").unwrap(), ["a,b"], "only JSON makes a list");
        for bad in ["", "[1]", r#"["a","#, r#"["a",""]"#] {
            assert!(matches!(parse_tag_keys(bad), Err(ParamError::TagKey { .. })), "{bad:?}");
        }
    }

    #[test]
    fn documents_inline_and_from_files() {
        let doc = r#"{"Version":"2012-10-17","Statement":[]}"#;
        assert_eq!(load_document(doc).unwrap(), doc, "inline text is sent as given");
        assert_eq!(load_document("not json").unwrap(), "not json", "the broker judges the JSON");
        assert_eq!(load_document("file:/x.json").unwrap(), "file:/x.json", "only file:// names a file");

        let path = std::env::temp_dir().join(format!("airlock-doc-{}.json", std::process::id()));
        std::fs::write(&path, "{\n  \"Statement\": []\n}\n").unwrap();
        let uri = format!("file://{}", path.display());
        let loaded = load_document(&uri);
        let _ = std::fs::remove_file(&path);
        assert_eq!(loaded.unwrap(), "{\n  \"Statement\": []\n}\n", "the file's text, unchanged");
    }

    #[test]
    fn missing_document_file() {
        let uri = "file:///nonexistent/airlock/policy.json";
        let err = load_document(uri).unwrap_err();
        assert!(
            matches!(&err, ParamError::ParamFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
        let text = err.to_string();
        assert!(
            text.starts_with("Unable to load paramfile file:///nonexistent/airlock/policy.json: "),
            "{text}"
        );
        assert!(load_document("file://").is_err(), "an empty path is no file");
    }

    #[test]
    fn home_is_expanded() {
        if let Some(home) = dirs::home_dir() {
            assert_eq!(expand_home("~/p.json"), home.join("p.json"));
        }
        assert_eq!(expand_home("rel/p.json"), PathBuf::from("rel/p.json"));
        assert_eq!(expand_home("/a/~/b"), PathBuf::from("/a/~/b"));
    }

    #[test]
    fn context_values() {
        assert_eq!(
            parse_context("aws:SourceIp=10.0.0.1").unwrap(),
            ("aws:SourceIp".into(), "10.0.0.1".into())
        );
        assert_eq!(parse_context("k=a=b").unwrap(), ("k".into(), "a=b".into()));
        assert_eq!(parse_context("k=").unwrap(), ("k".into(), String::new()));
        for bad in ["novalue", "=x", " =x", ""] {
            let err = parse_context(bad).unwrap_err();
            assert!(err.to_string().contains("expected KEY=VALUE"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn context_entries_group_keys() {
        let pairs: Vec<(String, String)> = [
            ("aws:SourceIp", "10.0.0.1"),
            ("ssm:resourceTag/env", "prod"),
            ("aws:sourceip", "10.0.0.2"),
            ("aws:MultiFactorAuthPresent", "false"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            context_entries(&pairs),
            vec![
                json!({"ContextKeyName": "aws:SourceIp", "ContextKeyValues": ["10.0.0.1", "10.0.0.2"],
                       "ContextKeyType": "stringList"}),
                json!({"ContextKeyName": "ssm:resourceTag/env", "ContextKeyValues": ["prod"],
                       "ContextKeyType": "string"}),
                json!({"ContextKeyName": "aws:MultiFactorAuthPresent", "ContextKeyValues": ["false"],
                       "ContextKeyType": "string"}),
            ]
        );
        assert!(context_entries(&[]).is_empty());
    }
}
