//! Who a session's process runs as: SSM's RunAs (`run_as` of [`airlock_proto::SessionSpec`]).
//!
//! Without run-as, or when the requested user is the agent's own, the process runs as it
//! always did: the agent's credentials, environment and home. For another user the agent must
//! be root; the process then starts as that user in a login's environment, through
//! util-linux's `setpriv`.
//!
//! Why `setpriv` rather than changing credentials in the child ourselves: portable-pty's
//! `CommandBuilder` has no pre-exec hook; std's `CommandExt::uid` drops every supplementary
//! group (`CommandExt::groups` is unstable); and initgroups(3) between fork and exec of this
//! multi-threaded process is not async-signal-safe (NSS lookups, allocation). `setpriv` is a
//! small single-threaded program that sets the groups, the gid and the uid, in that order, and
//! then execs in place, so the pid, process group, session and controlling terminal that the
//! spawner set up remain the session's process's; one mechanism serves shells and commands.
//! The supplementary groups are computed here with getgrouplist(3), what initgroups(3) does,
//! and passed by number, so they are the requested name's even when several names share a
//! uid. The environment is built here too (setpriv's `--reset-env` is missing from older
//! util-linux). util-linux is Essential on Debian; where `setpriv` is missing the session
//! fails with a message that says so.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

use crate::error::Error;

/// PATH of a process started as another user: login(1)'s and su(1)'s default for ordinary
/// users (a login shell's profile may change it).
const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The shell when the password database names none that can be run (as login(1) does).
const FALLBACK_SHELL: &str = "/bin/sh";
/// Where `setpriv` may be. Fixed system locations only: the agent runs it as root, so the
/// agent's own `PATH` is not searched.
const SETPRIV: [&str; 4] = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv", "/sbin/setpriv"];

/// A password-database entry, as far as run-as needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
    shell: PathBuf,
}

impl From<User> for Account {
    fn from(user: User) -> Self {
        Account { name: user.name, uid: user.uid, gid: user.gid, home: user.dir, shell: user.shell }
    }
}

/// Who a session's process runs as.
#[derive(Debug)]
pub(crate) enum RunAs {
    /// The agent's own user, `name`: the process inherits the agent's credentials and
    /// environment.
    Agent { name: String },
    /// Another user, switched to by `setpriv` (the agent runs as root).
    Switch(Switch),
}

impl RunAs {
    /// The user name, for logs.
    pub(crate) fn user(&self) -> &str {
        match self {
            RunAs::Agent { name } => name,
            RunAs::Switch(switch) => &switch.account.name,
        }
    }
}

/// How to start a process as another user.
#[derive(Debug)]
pub(crate) struct Switch {
    account: Account,
    /// Supplementary groups, the primary group among them.
    groups: Vec<Gid>,
    /// The login shell: the password database's, else [`FALLBACK_SHELL`].
    shell: PathBuf,
    setpriv: PathBuf,
}

/// Works out who a session runs as; the error message is meant for the client.
///
/// Blocks: it reads the password and group databases.
pub(crate) fn resolve(requested: Option<&str>) -> Result<RunAs, Error> {
    let agent_uid = Uid::effective();
    let Some(requested) = requested else {
        return Ok(RunAs::Agent { name: user_name(agent_uid) });
    };
    let found = User::from_name(requested)
        .map_err(|e| Error::RunAs(format!("looking up run-as user {requested:?} failed: {e}")))?;
    let account = match decide(requested, found.map(Account::from), agent_uid, || user_name(agent_uid)) {
        Ok(None) => return Ok(RunAs::Agent { name: requested.to_owned() }),
        Ok(Some(account)) => account,
        Err(message) => return Err(Error::RunAs(message)),
    };
    let groups = CString::new(account.name.as_str())
        .map_err(|e| e.to_string())
        .and_then(|name| nix::unistd::getgrouplist(&name, account.gid).map_err(|e| e.to_string()))
        .map_err(|e| {
            Error::RunAs(format!("looking up the groups of run-as user {requested:?} failed: {e}"))
        })?;
    let setpriv = SETPRIV.iter().map(Path::new).find(|p| is_executable(p)).ok_or_else(|| {
        Error::RunAs(format!(
            "run-as user {requested:?} needs setpriv (util-linux), which is not installed on this host"
        ))
    })?;
    let shell = login_shell(&account.shell);
    Ok(RunAs::Switch(Switch { account, groups, shell, setpriv: setpriv.to_owned() }))
}

/// The run-as decision for the user `requested`, whose password entry is `found`:
/// `Ok(None)` runs as the agent's own user, `Ok(Some)` switches to the account, `Err` says
/// why the session cannot start.
fn decide(
    requested: &str,
    found: Option<Account>,
    agent_uid: Uid,
    agent_name: impl FnOnce() -> String,
) -> Result<Option<Account>, String> {
    let Some(account) = found else {
        return Err(format!("run-as user {requested:?} does not exist on this host"));
    };
    if account.uid == agent_uid {
        Ok(None)
    } else if agent_uid.is_root() {
        Ok(Some(account))
    } else {
        Err(format!(
            "run-as user {requested:?} needs the agent to run as root (it runs as {:?})",
            agent_name()
        ))
    }
}

/// The name of `uid` in the password database, else the number.
fn user_name(uid: Uid) -> String {
    match User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// `shell` if it is a program that can be run, else [`FALLBACK_SHELL`].
fn login_shell(shell: &Path) -> PathBuf {
    if shell.is_absolute() && is_executable(shell) {
        shell.to_owned()
    } else {
        PathBuf::from(FALLBACK_SHELL)
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Switch {
    pub(crate) fn uid(&self) -> Uid {
        self.account.uid
    }

    /// The login shell.
    pub(crate) fn shell(&self) -> &Path {
        &self.shell
    }

    /// The program to start: `setpriv`, which becomes the user and execs what
    /// [`Switch::setpriv_args`] names.
    pub(crate) fn setpriv(&self) -> &Path {
        &self.setpriv
    }

    /// `setpriv`'s arguments that run `program args…` as the user.
    pub(crate) fn setpriv_args(&self, program: &Path, args: &[&OsStr]) -> Vec<OsString> {
        let groups = if self.groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            let list: Vec<String> = self.groups.iter().map(Gid::to_string).collect();
            format!("--groups={}", list.join(","))
        };
        let mut argv: Vec<OsString> = vec![
            format!("--reuid={}", self.account.uid).into(),
            format!("--regid={}", self.account.gid).into(),
            groups.into(),
            "--".into(),
            program.into(),
        ];
        argv.extend(args.iter().map(|&a| a.to_owned()));
        argv
    }

    /// The whole environment of the process, as a login sets it: none of the agent's
    /// variables. Shells add `TERM`.
    pub(crate) fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("HOME", self.account.home.clone().into_os_string()),
            ("USER", self.account.name.clone().into()),
            ("LOGNAME", self.account.name.clone().into()),
            ("SHELL", self.shell.clone().into_os_string()),
            ("PATH", USER_PATH.into()),
        ]
    }

    /// Where the process starts: the home directory, or `/` when that is missing.
    pub(crate) fn workdir(&self) -> PathBuf {
        if self.account.home.is_dir() {
            self.account.home.clone()
        } else {
            PathBuf::from("/")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, uid: u32) -> Account {
        Account {
            name: name.into(),
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(uid),
            home: PathBuf::from(format!("/home/{name}")),
            shell: PathBuf::from("/bin/bash"),
        }
    }

    fn no_name() -> String {
        panic!("the agent's name is only needed for the not-root message")
    }

    #[test]
    fn unknown_user_fails_with_its_name() {
        let err = decide("bob", None, Uid::from_raw(0), no_name).unwrap_err();
        assert_eq!(err, r#"run-as user "bob" does not exist on this host"#);
        // Names are quoted with escapes: a hostile name cannot forge the message.
        let err = decide("a\"b\n", None, Uid::from_raw(0), no_name).unwrap_err();
        assert_eq!(err, r#"run-as user "a\"b\n" does not exist on this host"#);
    }

    #[test]
    fn own_user_runs_as_the_agent() {
        assert_eq!(decide("alice", Some(account("alice", 1000)), Uid::from_raw(1000), no_name), Ok(None));
        assert_eq!(decide("root", Some(account("root", 0)), Uid::from_raw(0), no_name), Ok(None));
    }

    #[test]
    fn root_switches_to_another_user() {
        let bob = account("bob", 1001);
        assert_eq!(decide("bob", Some(bob.clone()), Uid::from_raw(0), no_name), Ok(Some(bob)));
    }

    #[test]
    fn another_user_needs_root() {
        let err =
            decide("bob", Some(account("bob", 1001)), Uid::from_raw(1000), || "alice".into()).unwrap_err();
        assert_eq!(err, r#"run-as user "bob" needs the agent to run as root (it runs as "alice")"#);
    }

    #[test]
    fn no_run_as_is_the_agent() {
        let who = resolve(None).unwrap();
        assert!(matches!(who, RunAs::Agent { .. }));
        assert_eq!(who.user(), user_name(Uid::effective()));
    }

    #[test]
    fn resolve_reports_unknown_users() {
        let err = resolve(Some("airlock-no-such-user")).unwrap_err();
        assert_eq!(err.to_string(), r#"run-as user "airlock-no-such-user" does not exist on this host"#);
        // A NUL cannot be in a user name.
        assert!(resolve(Some("ro\0ot")).unwrap_err().to_string().contains("does not exist"));
    }

    #[test]
    fn login_shell_falls_back_to_sh() {
        assert_eq!(login_shell(Path::new("/bin/sh")), PathBuf::from("/bin/sh"));
        assert_eq!(login_shell(Path::new("")), PathBuf::from(FALLBACK_SHELL));
        assert_eq!(login_shell(Path::new("/nonexistent/shell")), PathBuf::from(FALLBACK_SHELL));
        assert_eq!(login_shell(Path::new("/etc")), PathBuf::from(FALLBACK_SHELL));
        assert_eq!(login_shell(Path::new("bin/sh")), PathBuf::from(FALLBACK_SHELL));
        // Not executable.
        assert_eq!(login_shell(Path::new("/etc/passwd")), PathBuf::from(FALLBACK_SHELL));
    }

    fn switch(home: &str, groups: &[u32]) -> Switch {
        Switch {
            account: Account { home: home.into(), ..account("bob", 1001) },
            groups: groups.iter().copied().map(Gid::from_raw).collect(),
            shell: PathBuf::from("/bin/bash"),
            setpriv: PathBuf::from("/usr/bin/setpriv"),
        }
    }

    #[test]
    fn setpriv_sets_uid_gid_and_groups_then_runs_the_program() {
        let s = switch("/home/bob", &[1001, 27, 100]);
        let args = s.setpriv_args(Path::new("/bin/sh"), &[OsStr::new("-c"), OsStr::new("id -un; echo --")]);
        let expected = [
            "--reuid=1001",
            "--regid=1001",
            "--groups=1001,27,100",
            "--",
            "/bin/sh",
            "-c",
            "id -un; echo --",
        ];
        assert_eq!(args, expected.map(OsString::from));
        let none = switch("/home/bob", &[]).setpriv_args(Path::new("/bin/bash"), &[OsStr::new("-l")]);
        assert_eq!(
            none,
            ["--reuid=1001", "--regid=1001", "--clear-groups", "--", "/bin/bash", "-l"].map(OsString::from)
        );
    }

    #[test]
    fn environment_is_a_logins() {
        let env = switch("/home/bob", &[1001]).env();
        let expected = [
            ("HOME", "/home/bob"),
            ("USER", "bob"),
            ("LOGNAME", "bob"),
            ("SHELL", "/bin/bash"),
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ];
        assert_eq!(env, expected.map(|(k, v)| (k, OsString::from(v))));
    }

    #[test]
    fn workdir_is_home_else_root() {
        let tmp = std::env::temp_dir();
        assert_eq!(switch(tmp.to_str().unwrap(), &[]).workdir(), tmp);
        assert_eq!(switch("/nonexistent/home/bob", &[]).workdir(), PathBuf::from("/"));
    }
}
