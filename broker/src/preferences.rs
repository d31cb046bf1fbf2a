//! Session Manager preferences: the `inputs` of a Session document, above all the account's
//! `SSM-SessionManagerRunShell` (`shared/ssm-protocol.md` §5).
//!
//! [`parse_document`] checks a whole Session document as CreateDocument and UpdateDocument
//! receive it; [`parse_session_document`] gives its preferences; [`load`] reads the ones in
//! force (the latest `SSM-SessionManagerRunShell`, or the defaults when there is none).
//! Empty strings (and `null`) mean "not set" everywhere.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::store::{Store, StoreError};

/// The document that holds the account's preferences.
pub const PREFERENCES_DOCUMENT: &str = "SSM-SessionManagerRunShell";
/// The only schema version of Session documents.
pub const SCHEMA_VERSION: &str = "1.0";
/// Idle timeout when the document sets none, in minutes (SSM's default).
pub const DEFAULT_IDLE_MINUTES: u64 = 20;

const TOP_LEVEL: [&str; 6] =
    ["schemaVersion", "description", "sessionType", "inputs", "parameters", "properties"];
/// The resume window when the preferences do not set one: 10 minutes.
const DEFAULT_RESUME_WINDOW_SECONDS: u64 = 600;
const INPUTS: [&str; 15] = [
    "s3BucketName",
    "s3KeyPrefix",
    "s3EncryptionEnabled",
    "cloudWatchLogGroupName",
    "cloudWatchEncryptionEnabled",
    "cloudWatchStreamingEnabled",
    "kmsKeyId",
    "runAsEnabled",
    "runAsDefaultUser",
    "idleSessionTimeout",
    "maxSessionDuration",
    "shellProfile",
    "requireRecording",
    "recordPortData",
    "resumeWindowSeconds",
];
const SHELL_PROFILE: [&str; 2] = ["linux", "windows"];

/// The preferences a session runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPreferences {
    /// Upload the transcript to S3 (set when `s3BucketName` is not empty).
    pub s3: Option<S3Preferences>,
    /// Send the transcript to CloudWatch Logs (set when `cloudWatchLogGroupName` is not empty).
    pub cloudwatch: Option<CloudWatchPreferences>,
    /// `kmsKeyId`: KMS key for session data encryption; `None` when empty.
    pub kms_key_id: Option<String>,
    /// `runAsDefaultUser`, only when `runAsEnabled` and the name is not empty.
    pub run_as: Option<String>,
    /// `runAsEnabled`.
    pub run_as_enabled: bool,
    /// `idleSessionTimeout`.
    pub idle_timeout: Duration,
    /// `maxSessionDuration`; `None` when unlimited.
    pub max_duration: Option<Duration>,
    /// `shellProfile.linux`, trimmed; `None` when empty.
    pub shell_profile: Option<String>,
    /// Airlock: a session that cannot be recorded is refused (default); false lets it run
    /// unrecorded.
    pub require_recording: bool,
    /// Airlock: record the bytes of port-forward connections, not only their open, close and
    /// byte counts (default false).
    pub record_port_data: bool,
    /// Airlock: how long a session whose client or agent connection was lost waits for it to
    /// come back (`resumeWindowSeconds`, default 600; 0 ends the session at once).
    pub resume_window: Duration,
}

/// Where and how transcripts go to S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Preferences {
    /// `s3BucketName`.
    pub bucket: String,
    /// `s3KeyPrefix`.
    pub key_prefix: String,
    /// Refuse to start unless the bucket encrypts by default.
    pub encryption: bool,
}

/// Where and how transcripts go to CloudWatch Logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatchPreferences {
    /// `cloudWatchLogGroupName`.
    pub group: String,
    /// Refuse to start unless the log group is KMS-encrypted.
    pub encryption_required: bool,
    /// Stream during the session (else upload once at the end).
    pub streaming: bool,
}

impl Default for SessionPreferences {
    /// No sinks, no KMS, no RunAs, 20 minutes idle, no maximum, recording required.
    fn default() -> Self {
        SessionPreferences {
            s3: None,
            cloudwatch: None,
            kms_key_id: None,
            run_as: None,
            run_as_enabled: false,
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_MINUTES * 60),
            max_duration: None,
            shell_profile: None,
            require_recording: true,
            record_port_data: false,
            resume_window: Duration::from_secs(DEFAULT_RESUME_WINDOW_SECONDS),
        }
    }
}

/// A Session document's `sessionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    /// `Standard_Stream`: an interactive shell.
    StandardStream,
    /// `Port`: port forwarding.
    Port,
    /// `InteractiveCommands`: a command on a terminal.
    InteractiveCommands,
    /// `NonInteractiveCommands`: a command without a terminal.
    NonInteractiveCommands,
}

impl SessionType {
    /// Every type, in SSM's spelling order.
    pub const ALL: [SessionType; 4] =
        [Self::StandardStream, Self::Port, Self::InteractiveCommands, Self::NonInteractiveCommands];

    /// SSM's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::StandardStream => "Standard_Stream",
            SessionType::Port => "Port",
            SessionType::InteractiveCommands => "InteractiveCommands",
            SessionType::NonInteractiveCommands => "NonInteractiveCommands",
        }
    }
}

/// One entry of a document's `parameters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentParameter {
    /// The parameter's name.
    pub name: String,
    /// `String`, `StringList`, …
    pub kind: String,
    /// The parameter's description.
    pub description: String,
    /// The default as text; `None` when the parameter is required.
    pub default: Option<String>,
}

/// A checked Session document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDocument {
    /// `schemaVersion` (always `1.0`).
    pub schema_version: String,
    /// `description`.
    pub description: String,
    /// `sessionType`.
    pub session_type: SessionType,
    /// By name.
    pub parameters: Vec<DocumentParameter>,
    /// `inputs`: the session preferences.
    pub preferences: SessionPreferences,
}

/// Why a Session document is refused; the message names the member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreferencesError {
    /// The document does not parse as JSON.
    #[error("the document is not valid JSON: {0}")]
    Json(String),
    /// The schema version is not `1.0`.
    #[error("schemaVersion: {0}; Session documents use \"1.0\"")]
    SchemaVersion(String),
    /// A member has a value that is not allowed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The member, as a JSON path.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An object has members it does not know.
    #[error("{place} has unknown members: {} (known: {})", .names.join(", "), .known.join(", "))]
    Unknown {
        /// Which object.
        place: &'static str,
        /// The unknown members.
        names: Vec<String>,
        /// The members it knows.
        known: &'static [&'static str],
    },
}

impl PreferencesError {
    /// The SSM error code for it.
    pub fn code(&self) -> &'static str {
        match self {
            PreferencesError::SchemaVersion(_) => "InvalidDocumentSchemaVersion",
            _ => "InvalidDocumentContent",
        }
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> PreferencesError {
    PreferencesError::Invalid { field: field.to_owned(), reason: reason.into() }
}

fn no_unknown(
    obj: &Map<String, Value>,
    place: &'static str,
    known: &'static [&'static str],
) -> Result<(), PreferencesError> {
    let names: Vec<String> = obj.keys().filter(|k| !known.contains(&k.as_str())).cloned().collect();
    if names.is_empty() {
        Ok(())
    } else {
        Err(PreferencesError::Unknown { place, names, known })
    }
}

/// Reads and checks a Session document.
pub fn parse_document(content: &str) -> Result<SessionDocument, PreferencesError> {
    let value: Value = serde_json::from_str(content).map_err(|e| PreferencesError::Json(e.to_string()))?;
    let Value::Object(doc) = value else {
        return Err(invalid("(document)", "must be a JSON object"));
    };
    no_unknown(&doc, "the document", &TOP_LEVEL)?;
    match doc.get("schemaVersion") {
        Some(Value::String(v)) if v == SCHEMA_VERSION => {}
        None | Some(Value::Null) => return Err(PreferencesError::SchemaVersion("missing".into())),
        Some(other) => return Err(PreferencesError::SchemaVersion(format!("{other} is not supported"))),
    }
    let description = match doc.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("description", "must be a string")),
    };
    let names = || SessionType::ALL.map(SessionType::as_str).join(", ");
    let session_type = match doc.get("sessionType") {
        Some(Value::String(s)) => SessionType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| invalid("sessionType", format!("{s:?} is not one of {}", names())))?,
        None | Some(Value::Null) => {
            return Err(invalid("sessionType", format!("missing; use one of {}", names())))
        }
        Some(_) => return Err(invalid("sessionType", "must be a string")),
    };
    let parameters = match doc.get("parameters") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(p)) => parameters(p)?,
        Some(_) => return Err(invalid("parameters", "must be an object")),
    };
    if !matches!(doc.get("properties"), None | Some(Value::Null) | Some(Value::Object(_))) {
        return Err(invalid("properties", "must be an object"));
    }
    let preferences = match doc.get("inputs") {
        None | Some(Value::Null) => SessionPreferences::default(),
        Some(Value::Object(inputs)) => preferences(inputs)?,
        Some(_) => return Err(invalid("inputs", "must be an object")),
    };
    Ok(SessionDocument {
        schema_version: SCHEMA_VERSION.to_owned(),
        description,
        session_type,
        parameters,
        preferences,
    })
}

/// Checks a Session document and returns its preferences (which only shell sessions,
/// `Standard_Stream`, apply).
pub fn parse_session_document(content: &str) -> Result<SessionPreferences, PreferencesError> {
    parse_document(content).map(|d| d.preferences)
}

fn parameters(p: &Map<String, Value>) -> Result<Vec<DocumentParameter>, PreferencesError> {
    let mut out = Vec::new();
    for (name, spec) in p {
        let field = format!("parameters.{name}");
        let Value::Object(spec) = spec else { return Err(invalid(&field, "must be an object")) };
        let text = |key: &str| match spec.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(&format!("{field}.{key}"), "must be a string")),
        };
        let default = match spec.get("default") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        out.push(DocumentParameter {
            name: name.clone(),
            kind: text("type")?.unwrap_or_else(|| "String".to_owned()),
            description: text("description")?.unwrap_or_default(),
            default,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A string input, trimmed; `None` when absent, null or empty.
fn string(inputs: &Map<String, Value>, key: &str) -> Result<Option<String>, PreferencesError> {
    match inputs.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Some(_) => Err(invalid(&format!("inputs.{key}"), "must be a string")),
    }
}

/// A boolean input: `true`/`false` or the strings "true"/"false".
fn boolean(inputs: &Map<String, Value>, key: &str, default: bool) -> Result<bool, PreferencesError> {
    let bad =
        |shown: String| invalid(&format!("inputs.{key}"), format!("must be true or false, got {shown}"));
    match inputs.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.trim() {
            "" => Ok(default),
            t if t.eq_ignore_ascii_case("true") => Ok(true),
            t if t.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(bad(format!("{s:?}"))),
        },
        Some(other) => Err(bad(other.to_string())),
    }
}

/// A whole number of minutes in `lo..=hi`, as a number or a string.
fn minutes(
    inputs: &Map<String, Value>,
    key: &str,
    lo: u64,
    hi: u64,
) -> Result<Option<u64>, PreferencesError> {
    whole(inputs, key, lo, hi, "minutes")
}

/// A whole number of `unit` from `lo` to `hi`, as a JSON number or string; `None` when absent.
fn whole(
    inputs: &Map<String, Value>,
    key: &str,
    lo: u64,
    hi: u64,
    unit: &str,
) -> Result<Option<u64>, PreferencesError> {
    let bad = |shown: String| {
        invalid(
            &format!("inputs.{key}"),
            format!("must be a whole number of {unit} from {lo} to {hi}, got {shown}"),
        )
    };
    let n = match inputs.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| bad(n.to_string()))?,
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| bad(format!("{s:?}")))?,
        Some(other) => return Err(bad(other.to_string())),
    };
    if (lo..=hi).contains(&n) {
        Ok(Some(n))
    } else {
        Err(bad(match inputs.get(key) {
            Some(Value::String(s)) => format!("{s:?}"),
            _ => n.to_string(),
        }))
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn check_bucket(name: &str) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return Err("bucket names are 3 to 63 characters long");
    }
    if !bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-') {
        return Err("bucket names use only lower-case letters, digits, '.' and '-'");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(bytes[0]) || !edge(bytes[bytes.len() - 1]) {
        return Err("bucket names begin and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err("bucket names have no '..', '.-' or '-.'");
    }
    if name.parse::<Ipv4Addr>().is_ok() {
        return Err("bucket names are not IP addresses");
    }
    if ["xn--", "sthree-", "amzn-s3-demo-"].iter().any(|p| name.starts_with(p))
        || ["-s3alias", "--ol-s3", ".mrap", "--x-s3"].iter().any(|s| name.ends_with(s))
    {
        return Err("the name uses a prefix or suffix S3 reserves");
    }
    Ok(())
}

/// CloudWatch Logs' log group naming rules.
fn check_log_group(name: &str) -> Result<(), &'static str> {
    if name.len() > 512 {
        return Err("log group names are at most 512 characters long");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b)) {
        return Err("log group names use only letters, digits, '.', '_', '-', '/' and '#'");
    }
    Ok(())
}

/// A POSIX user name as `useradd` accepts it (portable set, optional trailing `$`).
fn check_user(name: &str) -> Result<(), &'static str> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut chars = body.bytes();
    let first_ok = chars.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if name.len() > 32 || !first_ok || !chars.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err("must be a POSIX user name: up to 32 letters, digits, '.', '_', '-', not starting with a digit, '.' or '-'");
    }
    Ok(())
}

fn no_control(key: &str, value: &str, max: usize) -> Result<(), PreferencesError> {
    if value.len() > max {
        return Err(invalid(&format!("inputs.{key}"), format!("is longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(&format!("inputs.{key}"), "must not contain control characters"));
    }
    Ok(())
}

fn preferences(inputs: &Map<String, Value>) -> Result<SessionPreferences, PreferencesError> {
    no_unknown(inputs, "inputs", &INPUTS)?;
    let bucket = string(inputs, "s3BucketName")?;
    if let Some(b) = &bucket {
        check_bucket(b).map_err(|why| invalid("inputs.s3BucketName", format!("{b:?}: {why}")))?;
    }
    let key_prefix = string(inputs, "s3KeyPrefix")?.unwrap_or_default();
    no_control("s3KeyPrefix", &key_prefix, 1024)?;
    let s3_encryption = boolean(inputs, "s3EncryptionEnabled", false)?;
    let group = string(inputs, "cloudWatchLogGroupName")?;
    if let Some(g) = &group {
        check_log_group(g)
            .map_err(|why| invalid("inputs.cloudWatchLogGroupName", format!("{g:?}: {why}")))?;
    }
    let cw_encryption = boolean(inputs, "cloudWatchEncryptionEnabled", false)?;
    let streaming = boolean(inputs, "cloudWatchStreamingEnabled", false)?;
    let kms_key_id = string(inputs, "kmsKeyId")?;
    if let Some(k) = &kms_key_id {
        no_control("kmsKeyId", k, 2048)?;
        if k.contains(char::is_whitespace) {
            return Err(invalid("inputs.kmsKeyId", "must not contain spaces"));
        }
    }
    let run_as_enabled = boolean(inputs, "runAsEnabled", false)?;
    let user = string(inputs, "runAsDefaultUser")?;
    if let (true, Some(u)) = (run_as_enabled, &user) {
        check_user(u).map_err(|why| invalid("inputs.runAsDefaultUser", format!("{u:?} {why}")))?;
    }
    let idle = minutes(inputs, "idleSessionTimeout", 1, 60)?.unwrap_or(DEFAULT_IDLE_MINUTES);
    let max = minutes(inputs, "maxSessionDuration", 1, 1440)?;
    let shell_profile = match inputs.get("shellProfile") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => {
            no_unknown(p, "inputs.shellProfile", &SHELL_PROFILE)?;
            for key in SHELL_PROFILE {
                if !matches!(p.get(key), None | Some(Value::Null) | Some(Value::String(_))) {
                    return Err(invalid(&format!("inputs.shellProfile.{key}"), "must be a string"));
                }
            }
            p.get("linux").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
        }
        Some(_) => {
            return Err(invalid("inputs.shellProfile", "must be an object {\"linux\": …, \"windows\": …}"))
        }
    };
    Ok(SessionPreferences {
        s3: bucket.map(|bucket| S3Preferences { bucket, key_prefix, encryption: s3_encryption }),
        cloudwatch: group.map(|group| CloudWatchPreferences {
            group,
            encryption_required: cw_encryption,
            streaming,
        }),
        kms_key_id,
        run_as: if run_as_enabled { user } else { None },
        run_as_enabled,
        idle_timeout: Duration::from_secs(idle * 60),
        max_duration: max.map(|m| Duration::from_secs(m * 60)),
        shell_profile,
        require_recording: boolean(inputs, "requireRecording", true)?,
        record_port_data: boolean(inputs, "recordPortData", false)?,
        resume_window: Duration::from_secs(
            whole(inputs, "resumeWindowSeconds", 0, 86_400, "seconds")?
                .unwrap_or(DEFAULT_RESUME_WINDOW_SECONDS),
        ),
    })
}

/// Why the preferences in force could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Only possible if the database was edited by hand: the API checks every version.
    #[error("the stored {PREFERENCES_DOCUMENT} version {version} is not valid: {error}")]
    Invalid {
        /// The stored version.
        version: i64,
        /// Why it is not valid.
        error: PreferencesError,
    },
}

/// The preferences in force: the latest `SSM-SessionManagerRunShell` (its default version is
/// always its latest), or the defaults when the account has none.
pub async fn load(store: &dyn Store) -> Result<SessionPreferences, LoadError> {
    let Some(doc) = store.document(PREFERENCES_DOCUMENT, None).await? else {
        return Ok(SessionPreferences::default());
    };
    let invalid = |error| LoadError::Invalid { version: doc.version, error };
    let parsed = parse_document(&doc.content).map_err(invalid)?;
    if parsed.session_type != SessionType::StandardStream {
        return Err(invalid(self::invalid("sessionType", "must be Standard_Stream")));
    }
    Ok(parsed.preferences)
}

#[cfg(test)]
#[path = "preferences_tests.rs"]
mod tests;
