//! `SessionSpec::Shell`: the user's login shell on a PTY, with the shell profile typed in;
//! `SessionSpec::InteractiveCommand`: `sh -c <command>` on a PTY.
//!
//! PTY reads, writes and the wait for the shell block, so each runs on a thread of its own
//! and talks to the session through bounded channels. The threads poll the PTY together with
//! a stop pipe, so they end with the session even when a leftover background job keeps the
//! terminal open.
//!
//! Exit codes: the shell is a `std::process::Child` underneath portable-pty, so its real wait
//! status gives 128 + signal for a killed shell. Should that ever not be the case, the code
//! falls back to portable-pty's `exit_code()`, which reports 1 for any signal.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;
use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use tokio::sync::{mpsc, watch};

use super::process::{
    self, Output, Process, ProcessControl, Stopper, CHUNK, INPUT_QUEUE, OUTPUT_QUEUE, UNKNOWN_EXIT,
};
use super::run_as::RunAs;
use crate::error::Error;

/// What runs on the PTY.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Program<'a> {
    /// The user's login shell, with this profile typed in.
    LoginShell {
        /// The shell profile, typed in followed by a newline.
        profile: Option<&'a str>,
    },
    /// `sh -c <command>`.
    Command(&'a str),
}

const SH: &str = "/bin/sh";

/// Starts `program` as `who` on a `cols`×`rows` PTY with `TERM=term`.
pub(crate) fn spawn(
    cols: u16,
    rows: u16,
    term: &str,
    program: Program<'_>,
    who: &RunAs,
    drain: Duration,
) -> Result<Process, Error> {
    let profile = match program {
        Program::LoginShell { profile } => profile,
        Program::Command(_) => None,
    };
    let size = PtySize {
        rows: if rows == 0 { 24 } else { rows },
        cols: if cols == 0 { 80 } else { cols },
        pixel_width: 0,
        pixel_height: 0,
    };
    let pair = native_pty_system().openpty(size).map_err(|e| Error::Spawn(format!("openpty: {e}")))?;
    let raw = pair.master.as_raw_fd().ok_or_else(|| Error::Spawn("PTY master has no descriptor".into()))?;
    // SAFETY: `raw` is an open descriptor owned by `pair.master`, which lives until the end of
    // this function, and `master` is only used (to dup it) before then, so the borrow never
    // outlives the descriptor.
    #[allow(unsafe_code)]
    let master = unsafe { BorrowedFd::borrow_raw(raw) };
    // A close-on-exec duplicate, so no later child inherits the terminal.
    let io = Arc::new(master.try_clone_to_owned()?);
    set_nonblocking(&io)?;
    let (stop_rx, stop_tx) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(std::io::Error::from)?;
    let stop_rx = Arc::new(stop_rx);
    let stopper = Stopper::new(stop_tx);

    let term = if term.is_empty() { "xterm" } else { term };
    let cmd = match who {
        RunAs::Agent { .. } => {
            // The default program is the login shell: $SHELL, else the password database,
            // else /bin/sh, started with a `-` in argv[0].
            let mut cmd = match program {
                Program::LoginShell { .. } => CommandBuilder::new_default_prog(),
                Program::Command(command) => {
                    let mut cmd = CommandBuilder::new(SH);
                    cmd.args(["-c", command]);
                    cmd
                }
            };
            cmd.env("TERM", term);
            if let Some(home) = process::home_dir() {
                cmd.env("HOME", &home);
                cmd.cwd(&home);
            }
            cmd
        }
        RunAs::Switch(user) => {
            // The terminal belongs to its user, as login(1) and sshd make it: programs that
            // open it by name (`tty`, GPG_TTY for pinentry, `mesg`) need that.
            if let Some(tty) = pair.master.tty_name() {
                if let Err(e) = nix::unistd::chown(&tty, Some(user.uid()), None) {
                    tracing::warn!("could not give {} to the run-as user: {e}", tty.display());
                }
            }
            // setpriv execs the shell in place as the user (see `run_as`). argv[0] is then
            // the shell's path, so `-l` makes it a login shell (bash, dash, zsh, ksh, fish
            // and busybox sh all take it). The environment is a login's, plus TERM.
            let mut argv = vec![user.setpriv().as_os_str().to_owned()];
            match program {
                Program::LoginShell { .. } => {
                    argv.extend(user.setpriv_args(user.shell(), &[OsStr::new("-l")]))
                }
                Program::Command(command) => argv.extend(
                    user.setpriv_args(std::path::Path::new(SH), &[OsStr::new("-c"), OsStr::new(command)]),
                ),
            }
            let mut cmd = CommandBuilder::from_argv(argv);
            cmd.env_clear();
            for (key, value) in user.env() {
                cmd.env(key, value);
            }
            cmd.env("TERM", term);
            cmd.cwd(user.workdir());
            cmd
        }
    };
    let child = pair.slave.spawn_command(cmd).map_err(|e| {
        Error::Spawn(format!(
            "{}: {e}",
            match program {
                Program::LoginShell { .. } => "login shell",
                Program::Command(_) => "sh -c",
            }
        ))
    })?;
    // Our copy of the terminal side would keep the PTY open after the shell exits and hide EOF.
    drop(pair.slave);
    let pid = child.process_id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);

    let (exit_tx, exit_rx) = watch::channel(None);
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(INPUT_QUEUE);
    let (reader_done_tx, reader_done_rx) = std::sync::mpsc::channel::<()>();

    // The waiter reaps the shell, so it starts first: if a later step fails, dropping
    // `control` kills the shell and the waiter still collects it.
    let drain_stopper = stopper.clone();
    let waiter = thread("pty-wait", move || {
        let code = wait_child(child);
        let _ = exit_tx.send(Some(code));
        // Output still flowing after `drain` comes from a background job holding the
        // terminal; the session does not wait for it.
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = reader_done_rx.recv_timeout(drain) {
            drain_stopper.stop();
        }
    });
    if let Err(e) = waiter {
        if let Some(pid) = pid {
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        }
        return Err(e);
    }
    let Some(pid) = pid else {
        stopper.stop();
        return Err(Error::Spawn("shell has no pid".into()));
    };
    let control = ProcessControl::new(pid, exit_rx, Some(pair.master), Some(stopper));
    // The shell profile (SSM's shellProfile) is the first input, as if typed: the terminal
    // echoes it and the shell runs it once it reads input, after its own start-up files.
    if let Some(text) = profile.filter(|text| !text.trim().is_empty()) {
        // The queue is new and empty, so this cannot find it full.
        in_tx
            .try_send(Bytes::from(format!("{text}\n")))
            .map_err(|_| Error::Spawn("could not queue the shell profile".into()))?;
    }
    let (read_fd, read_stop) = (io.clone(), stop_rx.clone());
    thread("pty-read", move || {
        read_loop(&read_fd, &read_stop, &out_tx);
        drop(reader_done_tx);
    })?;
    thread("pty-write", move || write_loop(&io, &stop_rx, in_rx))?;
    Ok(Process { output: out_rx, input: Some(in_tx), control })
}

fn thread(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(drop)
        .map_err(|e| Error::Spawn(format!("thread {name}: {e}")))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), Error> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    Ok(())
}

/// Reaps the shell and turns its status into a session exit code.
fn wait_child(child: Box<dyn portable_pty::Child + Send + Sync>) -> i32 {
    let child: Box<dyn portable_pty::Child> = child;
    match child.downcast::<std::process::Child>() {
        Ok(mut std_child) => match std_child.wait() {
            Ok(status) => process::exit_code(status),
            Err(e) => {
                tracing::warn!("waiting for the shell failed: {e}");
                UNKNOWN_EXIT
            }
        },
        Err(mut other) => match other.wait() {
            Ok(status) => i32::try_from(status.exit_code()).unwrap_or(UNKNOWN_EXIT),
            Err(e) => {
                tracing::warn!("waiting for the shell failed: {e}");
                UNKNOWN_EXIT
            }
        },
    }
}

/// What a poll on the PTY plus the stop pipe found.
enum Ready {
    /// The PTY is ready; `hangup` when the terminal side is closed.
    Io { hangup: bool },
    /// The session is over.
    Stop,
}

fn wait_ready(fd: &OwnedFd, events: PollFlags, stop: &OwnedFd) -> Ready {
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), events), PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return Ready::Stop,
        }
        if fds[1].any().unwrap_or(true) {
            return Ready::Stop;
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::POLLERR);
        if !revents.is_empty() {
            let hangup = revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL);
            return Ready::Io { hangup };
        }
    }
}

/// Copies PTY output into the queue until EOF (EIO once every terminal descriptor is closed).
fn read_loop(pty: &OwnedFd, stop: &OwnedFd, out: &mpsc::Sender<Output>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let Ready::Io { hangup } = wait_ready(pty, PollFlags::POLLIN, stop) else { return };
        match nix::unistd::read(pty, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                // A full queue blocks this thread, and so the shell: backpressure.
                if out.blocking_send(Output::Stdout(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                    return;
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) if !hangup => {}
            Err(_) => return,
        }
    }
}

/// Writes queued input into the PTY until the session drops its sender or the PTY closes.
fn write_loop(pty: &OwnedFd, stop: &OwnedFd, mut input: mpsc::Receiver<Bytes>) {
    while let Some(chunk) = input.blocking_recv() {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            match nix::unistd::write(pty, rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => match wait_ready(pty, PollFlags::POLLOUT, stop) {
                    Ready::Io { hangup: false } => {}
                    _ => return,
                },
                Err(_) => return,
            }
        }
    }
}
