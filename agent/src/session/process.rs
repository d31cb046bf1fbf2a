//! What the session driver sees of a running process, whether on a PTY or on pipes.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use portable_pty::{MasterPty, PtySize};
use tokio::sync::{mpsc, watch};

/// Largest chunk read from a PTY or pipe, so one frame never carries more.
pub(crate) const CHUNK: usize = 32 * 1024;
/// Output chunks buffered between the readers and the stream: 1 MiB at most per session.
pub(crate) const OUTPUT_QUEUE: usize = 32;
/// Input chunks buffered towards the process.
pub(crate) const INPUT_QUEUE: usize = 16;
/// Exit code reported when the process's status could not be had.
pub(crate) const UNKNOWN_EXIT: i32 = -1;

/// One chunk of process output.
#[derive(Debug)]
pub(crate) enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A started process: its output, its input and the handle to signal and resize it.
pub(crate) struct Process {
    /// Closes once all output is read, or the drain deadline after exit passed.
    pub output: mpsc::Receiver<Output>,
    /// `None` when the process has no input (commands run with stdin closed).
    pub input: Option<mpsc::Sender<Bytes>>,
    pub control: ProcessControl,
}

/// Signals, resizes and waits for a process group.
pub(crate) struct ProcessControl {
    pgid: Pid,
    exit: watch::Receiver<Option<i32>>,
    pty: Option<Mutex<Box<dyn MasterPty + Send>>>,
    /// Dropped with the session, which wakes the PTY I/O threads so they end too.
    _stop: Option<StopOnDrop>,
}

/// Tells blocking I/O threads to quit: a byte in a pipe whose read end they poll.
///
/// The byte is never consumed, so every thread polling the pipe sees it, at any later time.
#[derive(Clone)]
pub(crate) struct Stopper(Arc<OwnedFd>);

impl Stopper {
    /// Wraps the write end of a non-blocking pipe.
    pub(crate) fn new(write_end: OwnedFd) -> Self {
        Stopper(Arc::new(write_end))
    }

    /// Wakes the threads; repeated calls are harmless.
    pub(crate) fn stop(&self) {
        // EAGAIN means the pipe is full of earlier stop bytes, which is just as good.
        let _ = nix::unistd::write(&*self.0, &[1]);
    }
}

/// Stops the threads when the owner (the session) goes away.
struct StopOnDrop(Stopper);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl ProcessControl {
    /// Control of the process group `pgid` whose exit code arrives on `exit`.
    pub(crate) fn new(
        pgid: Pid,
        exit: watch::Receiver<Option<i32>>,
        pty: Option<Box<dyn MasterPty + Send>>,
        stop: Option<Stopper>,
    ) -> Self {
        ProcessControl { pgid, exit, pty: pty.map(Mutex::new), _stop: stop.map(StopOnDrop) }
    }

    /// The exit code once the process was reaped.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Waits for the exit code ([`UNKNOWN_EXIT`] if the waiter went away without one).
    pub(crate) async fn wait(&self) -> i32 {
        let mut exit = self.exit.clone();
        let code = match exit.wait_for(Option::is_some).await {
            Ok(code) => *code,
            Err(_) => self.exit_code(),
        };
        code.unwrap_or(UNKNOWN_EXIT)
    }

    /// Sets the PTY size; ignored for commands and for zero sizes.
    pub(crate) fn resize(&self, cols: u16, rows: u16) {
        let Some(pty) = &self.pty else { return };
        if cols == 0 || rows == 0 {
            return;
        }
        let Ok(master) = pty.lock() else { return };
        if let Err(e) = master.resize(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 }) {
            tracing::debug!("resize failed: {e}");
        }
    }

    /// Sends `signal` to the process group, and to the terminal's foreground job (which job
    /// control puts in a group of its own), unless the process was already reaped.
    pub(crate) fn signal(&self, signal: Signal) {
        // Once reaped, the pid may be reused: never signal it then.
        if self.exit_code().is_some() {
            return;
        }
        let _ = killpg(self.pgid, signal);
        let foreground = self.pty.as_ref().and_then(|p| p.lock().ok().and_then(|m| m.process_group_leader()));
        if let Some(fg) = foreground.filter(|&fg| fg > 0 && fg != self.pgid.as_raw()) {
            let _ = killpg(Pid::from_raw(fg), signal);
        }
    }

    /// SIGHUP, then SIGKILL if the process is still there after `grace`.
    pub(crate) async fn terminate(&self, grace: Duration) {
        if self.exit_code().is_some() {
            return;
        }
        self.signal(Signal::SIGHUP);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            tracing::debug!("process ignored SIGHUP; sending SIGKILL");
            self.signal(Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessControl {
    // A session that ends any other way must not leave its processes behind.
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// The session exit code of a status: the code, or 128 + signal when killed.
pub(crate) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(UNKNOWN_EXIT)
}

/// The user's home directory (from the password database, then `$HOME`), if it exists.
pub(crate) fn home_dir() -> Option<std::path::PathBuf> {
    let from_passwd =
        nix::unistd::User::from_uid(nix::unistd::Uid::effective()).ok().flatten().map(|u| u.dir);
    from_passwd
        .or_else(|| std::env::var_os("HOME").map(Into::into))
        .filter(|dir: &std::path::PathBuf| dir.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes() {
        // Raw wait statuses: exit code in the high byte, signal in the low bits.
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(1)), 129);
    }
}
