//! TCP throughput, for comparing paths (direct, Airlock's port forward, `ssh -L`, socat).
//!
//! `tcp-bench serve PORT` runs a sink on 127.0.0.1:PORT that reads each connection to its end
//! and answers with the byte count; `tcp-bench send PORT BYTES` sends BYTES, half-closes,
//! waits for the count and prints `bytes=… seconds=… gbit_per_s=…`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

use anyhow::{bail, Context, Result};

fn serve(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    for conn in listener.incoming() {
        let mut conn = conn?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = conn.write_all(total.to_string().as_bytes());
        });
    }
    Ok(())
}

fn send(port: u16, bytes: u64) -> Result<()> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
    conn.set_nodelay(true)?;
    let buf = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        conn.write_all(&buf[..n])?;
        left -= n as u64;
    }
    conn.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    let elapsed = start.elapsed();
    let got: u64 = answer.trim().parse().with_context(|| format!("sink answered {answer:?}"))?;
    if got != bytes {
        bail!("sink received {got} of {bytes} bytes");
    }
    let micros = elapsed.as_micros().max(1) as u64;
    // Integer arithmetic: bits per microsecond is Mbit/s.
    let mbit = bytes * 8 / micros;
    println!("bytes={bytes} micros={micros} gbit_per_s={}.{:02}", mbit / 1000, (mbit % 1000) / 10);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 3 => serve(args[2].parse()?),
        Some("send") if args.len() == 4 => send(args[2].parse()?, args[3].parse()?),
        _ => bail!("usage: tcp-bench serve PORT | tcp-bench send PORT BYTES"),
    }
}
