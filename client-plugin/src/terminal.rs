//! The local terminal: TTY checks, window size, raw mode, and reading stdin off the runtime.

use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;

use bytes::Bytes;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

use crate::error::Error;

/// Size of one stdin read, well under the 64 KiB frame chunk the contract asks for.
pub const STDIN_CHUNK: usize = 16 << 10;

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// Whether stderr is a terminal.
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

/// The terminal size of stdin as `(cols, rows)`, or `None` when stdin is not a terminal.
pub fn window_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass, which is valid and
    // exclusively borrowed for the duration of the call; fd 0 stays open for the process.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// The terminal name to pass to the remote shell.
pub fn term_name() -> String {
    std::env::var("TERM").ok().filter(|t| !t.is_empty()).unwrap_or_else(|| "xterm-256color".to_owned())
}

/// Raw mode on stdin for as long as this guard lives; dropping it restores the saved
/// settings, so every way out of a session (return, `?`, unwinding) leaves the terminal sane.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Switches stdin to raw mode (keys, Ctrl-C included, pass through unprocessed).
    pub fn enter() -> Result<Self, Error> {
        let stdin = std::io::stdin();
        let io = |e: nix::Error| Error::Io { what: "setting the terminal to raw mode", source: e.into() };
        let saved = tcgetattr(stdin.as_fd()).map_err(io)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw).map_err(io)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing useful can be done if this fails; the terminal is likely gone already.
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Reads stdin on a dedicated thread and hands chunks to `tx` until EOF, an error, or the
/// receiver going away.
///
/// A plain thread rather than `tokio::io::stdin`: a read blocked on a terminal cannot be
/// cancelled, and a blocking-pool task would hold up runtime shutdown; a detached thread
/// simply dies with the process. The bounded channel back-pressures reading.
pub fn spawn_stdin_reader(tx: mpsc::Sender<Bytes>) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("airlock-stdin".to_owned())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut lock = stdin.lock();
            let mut buf = vec![0u8; STDIN_CHUNK];
            loop {
                match lock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "stdin read failed; no more input");
                        break;
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|source| Error::Io { what: "starting the stdin reader", source })
}

/// Stdin as an async reader, fed by [`spawn_stdin_reader`] through a queue of `queue` chunks
/// (so the thread stops reading when we stop sending).
pub fn stdin_stream(queue: usize) -> Result<impl AsyncRead + Send + Unpin, Error> {
    let (tx, mut rx) = mpsc::channel(queue);
    spawn_stdin_reader(tx)?;
    let chunks =
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(Ok::<_, std::io::Error>)));
    Ok(StreamReader::new(chunks))
}

/// Writes `text` to stderr without blocking a runtime thread.
pub async fn note(text: &str) {
    let mut err = tokio::io::stderr();
    // Nothing sensible to do if stderr is gone; the exit status still tells the story.
    let _ = err.write_all(text.as_bytes()).await;
    let _ = err.flush().await;
}

/// Writes `text` to stdout without blocking a runtime thread.
pub async fn say(text: &str) {
    let mut out = tokio::io::stdout();
    // As for `note`: a closed stdout must not turn into a failure of the session itself.
    let _ = out.write_all(text.as_bytes()).await;
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_has_a_fallback() {
        assert!(!term_name().is_empty());
    }

    #[test]
    fn window_size_is_none_or_positive() {
        // Under `cargo test` stdin may or may not be a terminal; either answer must be sane.
        if let Some((cols, rows)) = window_size() {
            assert!(cols > 0 && rows > 0);
        }
    }
}
