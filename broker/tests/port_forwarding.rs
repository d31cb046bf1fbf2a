//! Port forwarding and ssh's ProxyCommand through the agent, with stock OpenSSH.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_for, Agent, Broker, Proc};
use sha2::{Digest, Sha256};

/// A TCP server that answers each connection with the SHA-256 of everything it read, after
/// the client half-closed: proof of every byte and of the half-close.
fn digest_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut hasher = Sha256::new();
                let mut buf = [0u8; 65536];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => hasher.update(&buf[..n]),
                    }
                }
                let _ = conn.write_all(hex::encode(hasher.finalize()).as_bytes());
            });
        }
    });
    (port, handle)
}

/// Starts `airlock start-session` for a port document and returns the local ports it opened.
fn forward(broker: &Broker, target: &str, params: &str, count: usize) -> (Proc, Vec<u16>) {
    let mut child = broker
        .cli()
        .args(["start-session", "--target", target, "--document-name", "AWS-StartPortForwardingSession"])
        .args(["--parameters", params])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ports = Vec::new();
    while ports.len() < count {
        let line = lines.next().expect("the CLI printed its ports").unwrap();
        if let Some(rest) = line.strip_prefix("Port ") {
            ports.push(rest.split_whitespace().next().unwrap().parse().unwrap());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), ports)
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn fifty_concurrent_connections_of_one_mebibyte_and_a_closed_port() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let (server_port, _server) = digest_server();
    let closed_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let params = format!(r#"{{"portNumber":["{server_port}","{closed_port}"],"localPortNumber":["0","0"]}}"#);
    let (_cli, ports) = forward(&broker, &agent.instance_id, &params, 2);

    let workers: Vec<_> = (0..50u64)
        .map(|i| {
            let port = ports[0];
            std::thread::spawn(move || {
                let data = random_bytes(1 << 20, i + 1);
                let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut writer = conn.try_clone().unwrap();
                let sender = std::thread::spawn(move || {
                    writer.write_all(&data).unwrap();
                    writer.shutdown(std::net::Shutdown::Write).unwrap();
                });
                let mut answer = String::new();
                conn.read_to_string(&mut answer).unwrap();
                sender.join().unwrap();
                (answer, hex::encode(Sha256::digest(random_bytes(1 << 20, i + 1))))
            })
        })
        .collect();
    // Meanwhile a connection to the closed port fails alone.
    let mut refused = TcpStream::connect(("127.0.0.1", ports[1])).unwrap();
    refused.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)), "the failed connection is closed");
    for w in workers {
        let (got, want) = w.join().unwrap();
        assert_eq!(got, want, "every byte arrived and the half-close went through");
    }

    // The session is recorded: connection opens and closes with byte counts.
    let active = broker.api(&["describe-sessions", "--state", "Active"]);
    let id = active["Sessions"][0]["SessionId"].as_str().unwrap().to_owned();
    broker.api(&["terminate-session", "--session-id", &id]);
    let cast = wait_for("the finished recording", Duration::from_secs(20), || {
        std::fs::read_to_string(broker.data_dir().join("recordings").join(format!("{id}.cast"))).ok()
    });
    assert!(cast.contains(&format!("to localhost:{server_port}")), "{cast}");
    assert!(cast.contains("1048576 bytes to"), "byte counts are recorded");
    assert!(
        cast.contains(&format!("to localhost:{closed_port} refused"))
            && cast.to_lowercase().contains("refused")
    );
    assert_eq!(cast.matches(" closed: ").count(), 50);
}

#[test]
fn forbidden_target_is_a_clear_error() {
    let broker = Broker::start();
    let (id, code) = broker.activation(1);
    let dir = broker.dir.path().join("agent-strict");
    assert!(broker.register(&dir, &id, &code).status.success());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("agent.json")).unwrap()).unwrap();
    let instance = state["instance_id"].as_str().unwrap().to_owned();
    let (server_port, _server) = digest_server();
    let child = Command::new(common::bin("airlock-agent"))
        .args(["run", "--data-dir"])
        .arg(&dir)
        .args(["--allow-port", &format!("localhost:{server_port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Agent { instance_id: instance.clone(), dir, proc: Proc(child) };
    broker.wait_online(&instance);
    let out = broker
        .cli()
        .args(["start-session", "--target", &instance, "--document-name", "AWS-StartSSHSession"])
        .args(["--parameters", "portNumber=22"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("localhost:22") && err.contains("allow"), "{err}");
    let (_cli, ports) =
        forward(&broker, &instance, &format!("portNumber={server_port},localPortNumber=0"), 1);
    let mut conn = TcpStream::connect(("127.0.0.1", ports[0])).unwrap();
    conn.write_all(b"allowed").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, hex::encode(Sha256::digest(b"allowed")));
}

/// sshd on a free loopback port, with generated host and user keys.
struct Sshd {
    port: u16,
    key: std::path::PathBuf,
    _proc: Proc,
}

fn sshd(dir: &Path) -> Sshd {
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"].into_iter().find(|p| Path::new(p).exists());
    let sshd = sshd.expect("OpenSSH's sshd is installed (scripts/test.sh installs openssh-server)");
    std::fs::create_dir_all("/run/sshd").unwrap();
    let keygen = |path: &Path| {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success());
    };
    keygen(&dir.join("host_key"));
    keygen(&dir.join("user_key"));
    std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "ListenAddress 127.0.0.1\nPort {port}\nHostKey {h}\nAuthorizedKeysFile {a}\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPermitRootLogin yes\nUsePAM no\nStrictModes no\nPidFile {p}\n\
         Subsystem sftp internal-sftp\n",
        h = dir.join("host_key").display(),
        a = dir.join("authorized_keys").display(),
        p = dir.join("sshd.pid").display(),
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_for("sshd to listen", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).ok());
    Sshd { port, key: dir.join("user_key"), _proc: proc }
}

fn ssh_options(broker: &Broker, sshd: &Sshd) -> Vec<String> {
    let airlock = common::bin("airlock");
    let proxy = format!(
        "{} --endpoint-url {} --ca-file {} start-session --target %h --document-name AWS-StartSSHSession --parameters portNumber=%p",
        airlock.display(),
        broker.url,
        broker.ca_file().display()
    );
    [
        "-o".to_owned(),
        format!("ProxyCommand={proxy}"),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-i".into(),
        sshd.key.display().to_string(),
    ]
    .into()
}

#[test]
fn ssh_and_scp_through_the_proxy_command() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let sshd = sshd(broker.dir.path());
    let user =
        String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_owned();
    let opts = ssh_options(&broker, &sshd);
    let dest = format!("{user}@{}", agent.instance_id);
    let env =
        [("AWS_ACCESS_KEY_ID", broker.key_id.as_str()), ("AWS_SECRET_ACCESS_KEY", broker.secret.as_str())];

    let out = Command::new("ssh")
        .args(&opts)
        .args(["-p", &sshd.port.to_string(), &dest, "echo hello-from-$((6*7))"])
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello-from-42");

    // scp of a 50 MiB random file there and back.
    let local = broker.dir.path().join("blob");
    let data = random_bytes(50 << 20, 7);
    std::fs::write(&local, &data).unwrap();
    let remote = broker.dir.path().join("blob.remote");
    let back = broker.dir.path().join("blob.back");
    let scp = |from: String, to: String| {
        let out = Command::new("scp")
            .args(&opts)
            .args(["-q", "-P", &sshd.port.to_string(), &from, &to])
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "scp failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    scp(local.display().to_string(), format!("{dest}:{}", remote.display()));
    scp(format!("{dest}:{}", remote.display()), back.display().to_string());
    let want = hex::encode(Sha256::digest(&data));
    assert_eq!(hex::encode(Sha256::digest(std::fs::read(&remote).unwrap())), want);
    assert_eq!(hex::encode(Sha256::digest(std::fs::read(&back).unwrap())), want);
}
