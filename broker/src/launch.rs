//! What a session runs with, fixed at StartSession from the Session Manager preferences and
//! the caller: where it is recorded, whether it may run unrecorded, its time limits, the OS
//! user it runs as and the shell profile.

use airlock_recordings::sink::{CloudWatchTarget, S3Encryption, S3Target, SinkSpec};
use airlock_relay::Limits;

use crate::preferences::SessionPreferences;

/// The principal tag that names a session's OS user, as in SSM.
pub const RUN_AS_TAG: &str = "SSMSessionRunAs";

/// A session's settings, carried from StartSession to the stream that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Where the recording goes; the local folder always.
    pub sinks: Vec<SinkSpec>,
    /// Refuse the session when it cannot be recorded.
    pub require_recording: bool,
    /// Record the bytes of forwarded connections, not only their life.
    pub record_port_data: bool,
    /// Idle and maximum session durations.
    pub limits: Limits,
    /// How long a session waits for a lost client or agent connection to come back.
    pub resume_window: std::time::Duration,
    /// The OS user on the host; None for the agent's own.
    pub run_as: Option<String>,
    /// Typed into a shell right after it starts.
    pub shell_profile: Option<String>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch::without_run_as(&SessionPreferences::default())
    }
}

/// Why a session cannot be launched as the preferences say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "run-as is enabled in the session preferences, but the caller has no {RUN_AS_TAG} tag and \
         runAsDefaultUser is empty"
    )]
    /// Run-as is enabled but no user could be chosen.
    NoRunAsUser,
    /// The caller's run-as tag is not a valid user name.
    #[error("the caller's {RUN_AS_TAG} tag {0:?} is not a valid user name")]
    BadRunAsUser(String),
}

/// A POSIX-portable user name, as `useradd` accepts by default.
fn valid_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl Launch {
    /// Resolves the preferences for a caller whose `SSMSessionRunAs` tag is `tagged_user`.
    /// As in SSM, the tag wins over `runAsDefaultUser`, and only when run-as is enabled.
    pub fn new(prefs: &SessionPreferences, tagged_user: Option<&str>) -> Result<Launch, LaunchError> {
        let mut launch = Launch::without_run_as(prefs);
        if prefs.run_as_enabled {
            launch.run_as = Some(match (tagged_user, &prefs.run_as) {
                (Some(user), _) if valid_user_name(user) => user.to_owned(),
                (Some(user), _) => return Err(LaunchError::BadRunAsUser(user.to_owned())),
                (None, Some(user)) => user.clone(),
                (None, None) => return Err(LaunchError::NoRunAsUser),
            });
        }
        Ok(launch)
    }

    /// Everything but the run-as user, which depends on the caller.
    fn without_run_as(prefs: &SessionPreferences) -> Launch {
        let mut sinks = vec![SinkSpec::Local];
        if let Some(s3) = &prefs.s3 {
            // An explicit key means SSE-KMS with it; otherwise the switch asks for SSE-S3. We
            // set it on every object rather than only checking the bucket default as SSM does.
            let encryption = match (&prefs.kms_key_id, s3.encryption) {
                (Some(key), _) => S3Encryption::Kms { key_id: key.clone() },
                (None, true) => S3Encryption::S3Managed,
                (None, false) => S3Encryption::BucketDefault,
            };
            sinks.push(SinkSpec::S3(S3Target {
                bucket: s3.bucket.clone(),
                key_prefix: s3.key_prefix.clone(),
                encryption,
            }));
        }
        if let Some(cw) = &prefs.cloudwatch {
            sinks.push(SinkSpec::CloudWatch(CloudWatchTarget {
                group: cw.group.clone(),
                streaming: cw.streaming,
                require_encryption: cw.encryption_required,
            }));
        }
        Launch {
            sinks,
            require_recording: prefs.require_recording,
            record_port_data: prefs.record_port_data,
            limits: Limits { idle: Some(prefs.idle_timeout), max: prefs.max_duration },
            resume_window: prefs.resume_window,
            run_as: None,
            shell_profile: prefs.shell_profile.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preferences::{CloudWatchPreferences, S3Preferences};
    use std::time::Duration;

    #[test]
    fn defaults_record_locally_and_require_it() {
        let l = Launch::new(&SessionPreferences::default(), Some("ignored")).unwrap();
        assert_eq!(l.sinks, vec![SinkSpec::Local]);
        assert!(l.require_recording);
        assert_eq!(l.limits, Limits { idle: Some(Duration::from_secs(20 * 60)), max: None });
        assert_eq!(l.run_as, None, "run-as is off unless enabled");
        assert_eq!(Launch::default(), l);
    }

    #[test]
    fn sinks_and_encryption_follow_the_preferences() {
        let mut p = SessionPreferences {
            s3: Some(S3Preferences { bucket: "b".into(), key_prefix: "k".into(), encryption: true }),
            cloudwatch: Some(CloudWatchPreferences {
                group: "g".into(),
                encryption_required: true,
                streaming: false,
            }),
            ..Default::default()
        };
        let l = Launch::new(&p, None).unwrap();
        assert_eq!(l.sinks.len(), 3);
        assert!(matches!(&l.sinks[1], SinkSpec::S3(t) if t.encryption == S3Encryption::S3Managed));
        assert!(matches!(&l.sinks[2], SinkSpec::CloudWatch(t) if t.require_encryption && !t.streaming));
        p.kms_key_id = Some("alias/k".into());
        let l = Launch::new(&p, None).unwrap();
        assert!(
            matches!(&l.sinks[1], SinkSpec::S3(t) if t.encryption == S3Encryption::Kms { key_id: "alias/k".into() })
        );
    }

    #[test]
    fn the_run_as_tag_wins_over_the_default_user() {
        let p = SessionPreferences { run_as_enabled: true, run_as: Some("ops".into()), ..Default::default() };
        assert_eq!(Launch::new(&p, Some("alice")).unwrap().run_as.as_deref(), Some("alice"));
        assert_eq!(Launch::new(&p, None).unwrap().run_as.as_deref(), Some("ops"));
        assert_eq!(Launch::new(&p, Some("Bad User")), Err(LaunchError::BadRunAsUser("Bad User".into())));
        let none = SessionPreferences { run_as_enabled: true, ..Default::default() };
        assert_eq!(Launch::new(&none, None), Err(LaunchError::NoRunAsUser));
    }
}
