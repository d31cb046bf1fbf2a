//! Sessions per second through one broker: K workers, each starting non-interactive command
//! sessions back to back for T seconds, end to end as the CLI does them (signed StartSession
//! over HTTPS, a new QUIC connection, ClientHello → Ready, the agent runs the command, the
//! broker records it, Exit and Close come back, the connection closes), but in one process
//! through the `airlock-cli` library, so no process spawn is counted.
//!
//! `session-load hold N TARGET` opens N shell sessions and holds them until stdin closes (for
//! memory per session).
//!
//! `session-load spawn WORKERS SECONDS CMD [ARGS…]` times a command run as a process instead
//! (the anchor: `ssh host true`, or the airlock CLI itself).
//!
//! `session-load WORKERS SECONDS TARGET [COMMAND]` (COMMAND defaults to `true`), with the
//! broker, CA and credentials from AIRLOCK_ENDPOINT, AIRLOCK_CA_FILE and AWS_*, prints
//! `sessions=… failed=… seconds_us=… per_s=… start_p50_us=… start_p99_us=… total_p50_us=…
//! total_p99_us=…`. "start" is StartSession → Ready (the session is open on the agent);
//! "total" runs on to the exit code and Close.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "env_client.rs"]
mod env_client;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_cli::link::Link;
use airlock_cli::session::{self, End};
use airlock_cli::Client;
use airlock_proto::stream::FramedStream;
use airlock_proto::{CloseReason, MAX_FRAME_LEN};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Per-session timings, integer microseconds.
#[derive(Default)]
struct Timings {
    start_us: Vec<u64>,
    total_us: Vec<u64>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One session, end to end; returns (start, total) durations.
async fn one_session(client: &Client, ca: &[u8], body: &Value) -> Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let response = client.call_with_peer("StartSession", body).await?;
    let field = |name: &str| response.body.get(name).and_then(Value::as_str).map(str::to_owned);
    let (Some(id), Some(token)) = (field("SessionId"), field("TokenValue")) else {
        bail!("StartSession answered without SessionId or TokenValue");
    };
    let link = Link::connect(client.endpoint(), ca, response.peer.map(|p| p.ip())).await?;
    let (send, recv) = link.open_stream().await?;
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    session::handshake(&mut stream, session::client_hello(&token, None, "xterm".into()), &id).await?;
    let started = t0.elapsed();
    // The writer stays open until the end: a finished client stream means the client left.
    let (mut reader, _writer) = stream.split();
    let outcome = session::pump_output(
        &mut reader,
        &mut tokio::io::sink(),
        &mut tokio::io::sink(),
        &tokio::sync::watch::channel(session::Feedback::default()).0,
    )
    .await;
    let total = t0.elapsed();
    let ended_well = matches!(&outcome.end, End::Closed { reason: CloseReason::Exited, .. });
    if ended_well {
        link.settle();
    }
    link.close("done").await;
    if !ended_well || outcome.exit != Some(0) {
        bail!("session {id} ended with {:?}, exit {:?}", outcome.end, outcome.exit);
    }
    Ok((started, total))
}

/// Nearest-rank percentile `p` of sorted `v` (0 when empty).
fn percentile(v: &[u64], p: usize) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[(p * v.len()).div_ceil(100).max(1) - 1]
}

/// The anchor: WORKERS threads each running `argv` back to back for SECONDS (so process
/// spawn is included), printing the same line with `start_*` equal to `total_*`.
fn spawn_mode(args: &[String]) -> Result<()> {
    let [workers, seconds, argv @ ..] = args else {
        bail!("usage: session-load spawn WORKERS SECONDS CMD [ARGS…]");
    };
    if argv.is_empty() {
        bail!("no command");
    }
    let workers: usize = workers.parse().context("WORKERS")?;
    let run_for = Duration::from_secs(seconds.parse().context("SECONDS")?);
    let began = Instant::now();
    let results: Vec<(Vec<u64>, u64, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let (mut times, mut failed, mut first) = (Vec::new(), 0u64, None);
                    while began.elapsed() < run_for {
                        let t0 = Instant::now();
                        let status = std::process::Command::new(&argv[0])
                            .args(&argv[1..])
                            .stdin(std::process::Stdio::null())
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null())
                            .status();
                        match status {
                            Ok(s) if s.success() => times.push(micros(t0.elapsed())),
                            other => {
                                failed += 1;
                                first.get_or_insert_with(|| format!("{other:?}"));
                            }
                        }
                    }
                    (times, failed, first)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed_us = micros(began.elapsed()).max(1);
    let mut all: Vec<u64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    all.sort_unstable();
    let failed: u64 = results.iter().map(|r| r.1).sum();
    if let Some(e) = results.iter().find_map(|r| r.2.as_ref()) {
        eprintln!("first failure: {e}");
    }
    let done = all.len() as u64;
    let (p50, p99) = (percentile(&all, 50), percentile(&all, 99));
    println!(
        "sessions={done} failed={failed} seconds_us={elapsed_us} per_s={} start_p50_us={p50} start_p99_us={p99} total_p50_us={p50} total_p99_us={p99}",
        done * 1_000_000 / elapsed_us
    );
    Ok(())
}

/// For memory per session: opens N shell sessions (default document, an 80x24 PTY on the
/// agent) on one runtime, prints `ready=N` once all are open, holds them until stdin closes,
/// then ends them.
fn hold_mode(args: &[String]) -> Result<()> {
    let [count, target] = args else { bail!("usage: session-load hold N TARGET") };
    let count: usize = count.parse().context("N")?;
    let (client, ca) = env_client::client_from_env()?;
    let body = json!({ "Target": target });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            let response = client.call_with_peer("StartSession", &body).await?;
            let field = |name: &str| response.body.get(name).and_then(Value::as_str).map(str::to_owned);
            let (Some(id), Some(token)) = (field("SessionId"), field("TokenValue")) else {
                bail!("StartSession answered without SessionId or TokenValue");
            };
            let link = Link::connect(client.endpoint(), &ca, response.peer.map(|p| p.ip())).await?;
            let (send, recv) = link.open_stream().await?;
            let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
            session::handshake(
                &mut stream,
                session::client_hello(&token, Some((80, 24)), "xterm".into()),
                &id,
            )
            .await?;
            let (mut reader, writer) = stream.split();
            // Drain the prompt and anything else the shell prints, as a terminal would.
            let drain = tokio::spawn(async move {
                session::pump_output(
                    &mut reader,
                    &mut tokio::io::sink(),
                    &mut tokio::io::sink(),
                    &tokio::sync::watch::channel(session::Feedback::default()).0,
                )
                .await
            });
            held.push((link, writer, drain));
        }
        println!("ready={}", held.len());
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut tokio::io::sink()).await;
        for (link, writer, drain) in held {
            drain.abort();
            drop(writer);
            link.close("done").await;
        }
        Ok(())
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("spawn") => return spawn_mode(&args[1..]),
        Some("hold") => return hold_mode(&args[1..]),
        _ => {}
    }
    let [workers, seconds, target, rest @ ..] = args.as_slice() else {
        bail!("usage: session-load WORKERS SECONDS TARGET [COMMAND]");
    };
    let workers: usize = workers.parse().context("WORKERS")?;
    let seconds: u64 = seconds.parse().context("SECONDS")?;
    let command = rest.first().map_or("true", String::as_str);
    let (client, ca) = env_client::client_from_env()?;
    let body = json!({
        "Target": target,
        "DocumentName": "AWS-StartNonInteractiveCommand",
        "Parameters": { "command": [command] },
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let timings = Arc::new(Mutex::new(Timings::default()));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let run_for = Duration::from_secs(seconds);
    let began = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (client, ca, body) = (client.clone(), ca.clone(), body.clone());
            let (timings, failed, first_error) = (timings.clone(), failed.clone(), first_error.clone());
            tasks.push(tokio::spawn(async move {
                while began.elapsed() < run_for {
                    match one_session(&client, &ca, &body).await {
                        Ok((start, total)) => {
                            let mut t = timings.lock().unwrap();
                            t.start_us.push(micros(start));
                            t.total_us.push(micros(total));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed_us = micros(began.elapsed()).max(1);
    let mut t = timings.lock().unwrap();
    t.start_us.sort_unstable();
    t.total_us.sort_unstable();
    let done = t.total_us.len() as u64;
    if let Some(e) = first_error.lock().unwrap().as_ref() {
        eprintln!("first failure: {e}");
    }
    println!(
        "sessions={done} failed={} seconds_us={elapsed_us} per_s={} start_p50_us={} start_p99_us={} total_p50_us={} total_p99_us={}",
        failed.load(Ordering::Relaxed),
        done * 1_000_000 / elapsed_us,
        percentile(&t.start_us, 50),
        percentile(&t.start_us, 99),
        percentile(&t.total_us, 50),
        percentile(&t.total_us, 99),
    );
    Ok(())
}
