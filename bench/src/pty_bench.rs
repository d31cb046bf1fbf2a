//! Drives a remote shell client (ssh or airlock) on a PTY like a person would, and measures
//! keystroke echo latency and bulk output throughput. Prints one line of `key=value` figures.
//!
//! Usage: `pty-bench LABEL BYTES KEYSTROKES -- COMMAND [ARGS…]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

struct Session {
    rx: Receiver<Vec<u8>>,
    writer: Box<dyn Write + Send>,
    seen: Vec<u8>,
}

impl Session {
    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()?;
        Ok(())
    }

    /// Reads until `needle` appears; returns the number of bytes read on the way.
    fn until(&mut self, needle: &[u8], limit: Duration) -> Result<u64> {
        let deadline = Instant::now() + limit;
        let mut total = 0u64;
        loop {
            if let Some(pos) = find(&self.seen, needle) {
                self.seen.drain(..pos + needle.len());
                return Ok(total);
            }
            // Keep only a tail long enough to hold a split needle.
            if self.seen.len() > needle.len() {
                let cut = self.seen.len() - needle.len();
                self.seen.drain(..cut);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = self
                .rx
                .recv_timeout(left)
                .with_context(|| format!("waiting for {:?}", String::from_utf8_lossy(needle)))?;
            total += chunk.len() as u64;
            self.seen.extend_from_slice(&chunk);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sep =
        args.iter().position(|a| a == "--").context("usage: pty-bench LABEL BYTES KEYSTROKES -- COMMAND…")?;
    if sep != 4 || args.len() <= sep + 1 {
        bail!("usage: pty-bench LABEL BYTES KEYSTROKES -- COMMAND…");
    }
    let label = &args[1];
    let bytes: u64 = args[2].parse().context("BYTES")?;
    let keystrokes: usize = args[3].parse().context("KEYSTROKES")?;

    let pty = portable_pty::native_pty_system().openpty(portable_pty::PtySize {
        rows: 50,
        cols: 200,
        pixel_width: 0,
        pixel_height: 0,
    })?;
    let mut cmd = portable_pty::CommandBuilder::new(&args[sep + 1]);
    cmd.args(&args[sep + 2..]);
    let mut child = pty.slave.spawn_command(cmd)?;
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader()?;
    let (tx, rx) = sync_channel::<Vec<u8>>(4096);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut s = Session { rx, writer: pty.master.take_writer()?, seen: Vec::new() };

    // A prompt we can recognise, whatever the login shell printed.
    s.send(b"export PS1='BENCH''READY> '\r")?;
    s.until(b"BENCHREADY> ", Duration::from_secs(30))?;

    // Keystroke echo: one key at a time, the next only after the echo came back.
    let mut lat = Vec::with_capacity(keystrokes);
    for i in 0..keystrokes {
        let key = [b'a' + (i % 26) as u8];
        let t = Instant::now();
        s.send(&key)?;
        s.until(&key, Duration::from_secs(10))?;
        lat.push(t.elapsed());
        if i % 40 == 39 {
            s.send(b"\x15")?; // Ctrl-U clears the line so it never wraps
            std::thread::sleep(Duration::from_millis(20));
            while s.rx.try_recv().is_ok() {}
            s.seen.clear();
        }
    }
    s.send(b"\x15\r")?;
    s.until(b"BENCHREADY> ", Duration::from_secs(10))?;
    lat.sort();

    // Bulk output: base64 of BYTES zeros through the PTY; the marker is computed remotely so
    // the echoed command line cannot match it.
    let cmd = format!("head -c {bytes} /dev/zero | base64; echo END-$((40+2))-MARK\r");
    let t = Instant::now();
    s.send(cmd.as_bytes())?;
    let got = s.until(b"END-42-MARK", Duration::from_secs(600))?;
    let secs = t.elapsed().as_secs_f64();
    s.send(b"exit\r")?;
    let _ = child.wait();

    println!(
        "label={label} output_bytes={got} seconds={secs:.3} mib_per_s={:.1} echo_p50_us={} echo_p99_us={} keystrokes={}",
        got as f64 / secs / (1 << 20) as f64,
        percentile(&lat, 50).as_micros(),
        percentile(&lat, 99).as_micros(),
        lat.len()
    );
    Ok(())
}
