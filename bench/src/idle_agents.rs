//! Idle agents held by one broker: a simulator that registers N agents and then runs N real
//! agent links (`airlock_agent::link::run`, the code `airlock-agent run` runs, with its
//! heartbeats, backoff and reconnects) in this one process, so the broker sees N mutually
//! authenticated QUIC links from N identities without N processes.
//!
//! `idle-agents N DIR` registers the agents DIR does not hold yet (DIR/agent-00042, …; with
//! activations of up to 1,000 registrations each, from the broker in AIRLOCK_ENDPOINT,
//! AIRLOCK_CA_FILE and AWS_*), prints `registered=N seconds_us=…`, starts every link, prints
//! `started=N`, and keeps them up until stdin closes.
//!
//! Each link has its own UDP socket, as a real agent does; sharing sockets would make the
//! simulator lighter but would not change what the broker holds per agent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "env_client.rs"]
mod env_client;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_agent::link::LinkConfig;
use airlock_agent::register::{register, RegisterOptions};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

/// SSM's most registrations per activation.
const PER_ACTIVATION: usize = 1000;
/// Registrations in flight at once (each one is a key pair, a CSR and an HTTPS call).
const REGISTERING_AT_ONCE: usize = 8;

fn agent_dir(root: &Path, n: usize) -> PathBuf {
    root.join(format!("agent-{n:05}"))
}

/// Registers every agent of `0..n` that `root` does not hold yet.
async fn register_missing(root: &Path, n: usize) -> Result<usize> {
    let missing: Vec<usize> = (0..n).filter(|&i| !agent_dir(root, i).join("agent.json").exists()).collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let (client, _ca) = env_client::client_from_env()?;
    let endpoint = std::env::var("AIRLOCK_ENDPOINT").context("AIRLOCK_ENDPOINT")?;
    let ca_file = PathBuf::from(std::env::var_os("AIRLOCK_CA_FILE").context("AIRLOCK_CA_FILE")?);
    let gate = Arc::new(Semaphore::new(REGISTERING_AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in missing.chunks(PER_ACTIVATION) {
        let body =
            json!({ "IamRole": "bench", "RegistrationLimit": chunk.len(), "Description": "idle-agents" });
        let act: Value = client.call("CreateActivation", &body).await?;
        let field = |name: &str| act.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(id), Some(code)) = (field("ActivationId"), field("ActivationCode")) else {
            bail!("CreateActivation answered {act}");
        };
        for &i in chunk {
            let opts = RegisterOptions {
                data_dir: agent_dir(root, i),
                endpoint: endpoint.clone(),
                activation_code: code.clone(),
                activation_id: id.clone(),
                ca_file: Some(ca_file.clone()),
                force: true,
            };
            let gate = gate.clone();
            tasks.spawn(async move {
                let _turn = gate.acquire().await?;
                register(&opts).await.with_context(|| format!("registering {}", opts.data_dir.display()))
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(missing.len())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [n, root] = args.as_slice() else { bail!("usage: idle-agents N DIR") };
    let n: usize = n.parse().context("N")?;
    let root = PathBuf::from(root);
    std::fs::create_dir_all(&root)?;
    airlock_proto::quic::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let t0 = Instant::now();
        let registered = register_missing(&root, n).await?;
        println!("registered={registered} seconds_us={}", t0.elapsed().as_micros());
        let (stop, stopped) = watch::channel(false);
        let config = Arc::new(LinkConfig::default());
        let mut links = tokio::task::JoinSet::new();
        for i in 0..n {
            let (dir, config, stopped) = (agent_dir(&root, i), config.clone(), stopped.clone());
            links.spawn(async move { airlock_agent::link::run(&dir, &config, stopped).await });
        }
        println!("started={n}");
        // Until stdin closes: the driving script decides how long the agents stay idle.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        let _ = stop.send(true);
        let deadline = Duration::from_secs(30);
        let _ = tokio::time::timeout(deadline, async { while links.join_next().await.is_some() {} }).await;
        Ok(())
    })
}
