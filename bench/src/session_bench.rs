//! Launch-to-exit time of short commands, for comparing session starts (`airlock start-session`
//! running `true`, `ssh host true` cold and through a ControlMaster).
//!
//! `session-bench RUNS :: LABEL CMD ARGS… :: LABEL CMD ARGS…` runs every command RUNS times,
//! round-robin (so a noisy moment hits all of them alike), after two unmeasured warm-up runs
//! each, with stdin, stdout and stderr on /dev/null. It prints one line per command:
//! `LABEL runs=… p50_us=… p99_us=… min_us=… max_us=…`. A command that fails stops the bench.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

const WARM_UP: usize = 2;

struct Job {
    label: String,
    argv: Vec<String>,
    micros: Vec<u64>,
}

/// One run of `argv`, in integer microseconds from spawn to reaped exit.
fn time_once(argv: &[String]) -> Result<u64> {
    let start = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("spawning {}", argv[0]))?;
    let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    if !status.success() {
        bail!("{argv:?} failed: {status}");
    }
    Ok(us)
}

/// Nearest-rank percentile `p` (0..=100) of sorted `v`.
fn percentile(v: &[u64], p: usize) -> u64 {
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

fn parse(args: &[String]) -> Result<(usize, Vec<Job>)> {
    let Some((runs, rest)) = args.split_first() else {
        bail!("usage: session-bench RUNS :: LABEL CMD… [:: …]")
    };
    let runs: usize = runs.parse().context("RUNS")?;
    let mut jobs = Vec::new();
    for part in rest.split(|a| a == "::").filter(|p| !p.is_empty()) {
        if part.len() < 2 {
            bail!("each job needs a label and a command: {part:?}");
        }
        jobs.push(Job { label: part[0].clone(), argv: part[1..].to_vec(), micros: Vec::with_capacity(runs) });
    }
    if runs == 0 || jobs.is_empty() {
        bail!("nothing to run");
    }
    Ok((runs, jobs))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (runs, mut jobs) = parse(&args)?;
    for job in &jobs {
        for _ in 0..WARM_UP {
            time_once(&job.argv)?;
        }
    }
    for _ in 0..runs {
        for job in &mut jobs {
            let us = time_once(&job.argv)?;
            job.micros.push(us);
        }
    }
    for job in &mut jobs {
        job.micros.sort_unstable();
        let v = &job.micros;
        println!(
            "{} runs={} p50_us={} p99_us={} min_us={} max_us={}",
            job.label,
            v.len(),
            percentile(v, 50),
            percentile(v, 99),
            v[0],
            v[v.len() - 1]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
    }

    #[test]
    fn jobs_split_on_double_colon() {
        let a: Vec<String> = ["3", "::", "x", "true", "::", "y", "echo", "hi"].map(String::from).to_vec();
        let (runs, jobs) = parse(&a).unwrap();
        assert_eq!(runs, 3);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].argv, ["echo", "hi"]);
        assert!(parse(&["1".into(), "::".into(), "lonely".into()]).is_err());
    }
}
