//! AWS credentials and region, resolved the way the AWS CLI does for static keys: environment
//! first, then the shared `credentials` and `config` INI files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Region used when nothing else names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Static credentials used to sign requests.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id (`AKIA…`/`ASIA…`, or the broker's own format).
    pub access_key_id: String,
    /// The secret used to derive signing keys; never logged.
    pub secret_access_key: String,
    /// Present for temporary credentials; sent as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl Credentials {
    /// Credentials from their parts.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        }
    }
}

// Secrets must never reach logs or panic messages.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field("session_token", &self.session_token.as_ref().map(|_| "** redacted **"))
            .finish()
    }
}

/// One INI file: section name → (lower-cased key → value).
pub type Ini = BTreeMap<String, BTreeMap<String, String>>;

/// Parses the subset of INI the AWS CLI accepts in its shared files.
///
/// Full-line comments start with `#` or `;`; there are no inline comments (secrets may
/// contain those characters). Indented lines are nested sub-properties (e.g. `s3 =` blocks)
/// and are skipped.
pub fn parse_ini(text: &str) -> Ini {
    let mut ini = Ini::new();
    let mut section: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            let name = line[1..line.len() - 1].trim().to_owned();
            ini.entry(name.clone()).or_default();
            section = Some(name);
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            continue;
        }
        let (Some(name), Some((key, value))) = (&section, line.split_once('=')) else {
            continue;
        };
        ini.entry(name.clone()).or_default().insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    ini
}

/// The two shared files, parsed.
#[derive(Debug, Default, Clone)]
pub struct SharedFiles {
    /// `~/.aws/credentials`: sections named after profiles.
    pub credentials: Ini,
    /// `~/.aws/config`: `[default]` and `[profile NAME]` sections.
    pub config: Ini,
}

impl SharedFiles {
    /// Reads `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE` or their `~/.aws/` defaults;
    /// a missing file is simply empty.
    pub fn load(env: &dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> Result<Self, Error> {
        let credentials = file_path(env, home, "AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config = file_path(env, home, "AWS_CONFIG_FILE", "config");
        Ok(SharedFiles { credentials: read_ini(credentials)?, config: read_ini(config)? })
    }

    /// The profile's section of the credentials file, if any.
    fn credentials_section(&self, profile: &str) -> Option<&BTreeMap<String, String>> {
        self.credentials.get(profile)
    }

    /// The profile's section of the config file (`[profile NAME]`, or `[default]`), if any.
    fn config_section(&self, profile: &str) -> Option<&BTreeMap<String, String>> {
        let prefixed = self.config.iter().find_map(|(name, section)| {
            let rest = name.strip_prefix("profile")?;
            (rest.starts_with([' ', '\t']) && rest.trim() == profile).then_some(section)
        });
        match prefixed {
            Some(s) => Some(s),
            None if profile == "default" => self.config.get("default"),
            None => None,
        }
    }

    /// The first value of `key` in the profile, credentials file first.
    fn value(&self, profile: &str, key: &str) -> Option<&str> {
        [self.credentials_section(profile), self.config_section(profile)]
            .into_iter()
            .flatten()
            .find_map(|s| s.get(key).map(String::as_str).filter(|v| !v.is_empty()))
    }

    /// Whether either file has a section for the profile.
    fn has_profile(&self, profile: &str) -> bool {
        self.credentials_section(profile).is_some() || self.config_section(profile).is_some()
    }
}

fn file_path(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
    var: &str,
    default_name: &str,
) -> Option<PathBuf> {
    match env(var).filter(|v| !v.is_empty()) {
        Some(p) => match (p.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => Some(home.join(rest)),
            _ => Some(PathBuf::from(p)),
        },
        None => home.map(|h| h.join(".aws").join(default_name)),
    }
}

fn read_ini(path: Option<PathBuf>) -> Result<Ini, Error> {
    let Some(path) = path else { return Ok(Ini::new()) };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_ini(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ini::new()),
        Err(e) => Err(Error::Credentials(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Credentials and region after resolution.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The credentials to sign with.
    pub credentials: Credentials,
    /// The signing region.
    pub region: String,
    /// The profile the values came from (`None` when both came from the environment).
    pub profile: Option<String>,
}

/// Resolves credentials and region from the real environment and home directory.
pub fn resolve(profile_flag: Option<&str>, region_flag: Option<&str>) -> Result<Resolved, Error> {
    let env = |k: &str| std::env::var(k).ok();
    let home = dirs::home_dir();
    resolve_with(profile_flag, region_flag, &env, home.as_deref())
}

/// Resolves credentials and region from an injected environment (for tests).
///
/// Like the AWS CLI: an explicit `--profile` beats the `AWS_ACCESS_KEY_ID` environment
/// credentials, while `AWS_PROFILE` does not.
pub fn resolve_with(
    profile_flag: Option<&str>,
    region_flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<Resolved, Error> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let files = SharedFiles::load(env, home)?;
    let profile_env = nonempty("AWS_PROFILE");
    let explicit = profile_flag.map(str::to_owned).or(profile_env);
    let profile = explicit.clone().unwrap_or_else(|| "default".to_owned());

    let env_keys = match (profile_flag, nonempty("AWS_ACCESS_KEY_ID"), nonempty("AWS_SECRET_ACCESS_KEY")) {
        (None, Some(akid), Some(secret)) => {
            Some(Credentials::new(akid, secret, nonempty("AWS_SESSION_TOKEN")))
        }
        _ => None,
    };
    let (credentials, used_profile) = match env_keys {
        Some(c) => (c, None),
        None => (profile_credentials(&files, &profile, explicit.is_some())?, Some(profile.clone())),
    };

    let region = region_flag
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or_else(|| nonempty("AWS_REGION"))
        .or_else(|| nonempty("AWS_DEFAULT_REGION"))
        .or_else(|| files.config_section(&profile).and_then(|s| s.get("region")).cloned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    Ok(Resolved { credentials, region, profile: used_profile })
}

fn profile_credentials(files: &SharedFiles, profile: &str, explicit: bool) -> Result<Credentials, Error> {
    if !files.has_profile(profile) {
        return Err(if explicit {
            Error::ProfileNotFound(profile.to_owned())
        } else {
            Error::Credentials(
                "Unable to locate credentials. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add a \
                 [default] profile to ~/.aws/credentials"
                    .to_owned(),
            )
        });
    }
    match (files.value(profile, "aws_access_key_id"), files.value(profile, "aws_secret_access_key")) {
        (Some(akid), Some(secret)) => {
            Ok(Credentials::new(akid, secret, files.value(profile, "aws_session_token").map(str::to_owned)))
        }
        _ => Err(Error::Credentials(format!(
            "Profile ({profile}) has no aws_access_key_id and aws_secret_access_key; airlock supports only \
             static keys (not role_arn, sso_* or credential_process)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const CREDS: &str = "\
# comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secret/with+chars#and;more

[alice]
aws_access_key_id=AKIDALICE
aws_secret_access_key=alicesecret
aws_session_token = tok
  nested = ignored
";

    const CONFIG: &str = "\
[default]
region = eu-west-1

[profile alice]
region = ap-south-1

[profile bob]
aws_access_key_id = AKIDBOB
aws_secret_access_key = bobsecret

[profile carol]
role_arn = arn:aws:iam::1:role/x
";

    struct Fixture {
        dir: PathBuf,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("airlock-cli-creds-{name}-{}", std::process::id()));
            std::fs::create_dir_all(dir.join(".aws")).unwrap();
            std::fs::write(dir.join(".aws/credentials"), CREDS).unwrap();
            std::fs::write(dir.join(".aws/config"), CONFIG).unwrap();
            Fixture { dir }
        }

        fn resolve(&self, profile: Option<&str>, vars: &[(&str, &str)]) -> Result<Resolved, Error> {
            let map: HashMap<String, String> =
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let env = move |k: &str| map.get(k).cloned();
            resolve_with(profile, None, &env, Some(&self.dir))
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn ini_parsing() {
        let ini = parse_ini(CREDS);
        assert_eq!(ini["default"]["aws_secret_access_key"], "secret/with+chars#and;more");
        assert_eq!(ini["alice"]["aws_access_key_id"], "AKIDALICE");
        assert!(!ini["alice"].contains_key("nested"));
        let ini = parse_ini("key = before any section\n[ spaced ]\nKey = V\n");
        assert_eq!(ini.len(), 1);
        assert_eq!(ini["spaced"]["key"], "V");
    }

    #[test]
    fn default_profile_from_files() {
        let f = Fixture::new("default");
        let r = f.resolve(None, &[]).unwrap();
        assert_eq!(r.credentials, Credentials::new("AKIDDEFAULT", "secret/with+chars#and;more", None));
        assert_eq!(r.region, "eu-west-1");
        assert_eq!(r.profile.as_deref(), Some("default"));
    }

    #[test]
    fn aws_profile_selects_profile() {
        let f = Fixture::new("awsprofile");
        let r = f.resolve(None, &[("AWS_PROFILE", "alice")]).unwrap();
        assert_eq!(r.credentials, Credentials::new("AKIDALICE", "alicesecret", Some("tok".into())));
        assert_eq!(r.region, "ap-south-1");
        let r = f.resolve(Some("bob"), &[("AWS_PROFILE", "alice")]).unwrap();
        assert_eq!(
            r.credentials.access_key_id, "AKIDBOB",
            "--profile beats AWS_PROFILE; keys may live in config"
        );
        assert_eq!(r.region, "us-east-1");
    }

    #[test]
    fn environment_keys_and_precedence() {
        let f = Fixture::new("env");
        let env = [
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_SESSION_TOKEN", "envtok"),
            ("AWS_PROFILE", "alice"),
            ("AWS_DEFAULT_REGION", "us-west-2"),
        ];
        let r = f.resolve(None, &env).unwrap();
        assert_eq!(r.credentials, Credentials::new("AKIDENV", "envsecret", Some("envtok".into())));
        assert_eq!(r.region, "us-west-2");
        assert!(r.profile.is_none());
        let r = f.resolve(Some("alice"), &env).unwrap();
        assert_eq!(r.credentials.access_key_id, "AKIDALICE", "an explicit --profile beats env keys");
        let mut with_region = env.to_vec();
        with_region.push(("AWS_REGION", "ca-central-1"));
        assert_eq!(f.resolve(None, &with_region).unwrap().region, "ca-central-1");
        let map: HashMap<String, String> = HashMap::new();
        let env = move |k: &str| map.get(k).cloned();
        assert_eq!(resolve_with(None, Some("sa-east-1"), &env, Some(&f.dir)).unwrap().region, "sa-east-1");
    }

    #[test]
    fn missing_profile_is_an_error() {
        let f = Fixture::new("missing");
        let err = f.resolve(Some("nobody"), &[]).unwrap_err();
        assert_eq!(err.to_string(), "The config profile (nobody) could not be found");
        let err = f.resolve(None, &[("AWS_PROFILE", "nobody")]).unwrap_err();
        assert!(matches!(err, Error::ProfileNotFound(p) if p == "nobody"));
        let err = f.resolve(Some("carol"), &[]).unwrap_err();
        assert!(err.to_string().contains("static keys"), "{err}");
    }

    #[test]
    fn no_files_no_env_means_no_credentials() {
        let map: HashMap<String, String> = HashMap::new();
        let env = move |k: &str| map.get(k).cloned();
        let dir = std::env::temp_dir().join(format!("airlock-cli-empty-home-{}", std::process::id()));
        let err = resolve_with(None, None, &env, Some(&dir)).unwrap_err();
        assert!(err.to_string().starts_with("Unable to locate credentials"), "{err}");
    }

    #[test]
    fn file_locations_from_environment() {
        let f = Fixture::new("locations");
        let other = f.dir.join("elsewhere");
        std::fs::write(&other, "[zed]\naws_access_key_id = Z\naws_secret_access_key = z\n").unwrap();
        let conf = f.dir.join("conf");
        std::fs::write(&conf, "[profile zed]\nregion = me-south-1\n").unwrap();
        let r = f
            .resolve(
                Some("zed"),
                &[
                    ("AWS_SHARED_CREDENTIALS_FILE", other.to_str().unwrap()),
                    ("AWS_CONFIG_FILE", conf.to_str().unwrap()),
                ],
            )
            .unwrap();
        assert_eq!(r.credentials.access_key_id, "Z");
        assert_eq!(r.region, "me-south-1");
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials::new("AKID", "very-secret", Some("session-secret".into()));
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID"));
        assert!(!shown.contains("very-secret") && !shown.contains("session-secret"));
    }
}
