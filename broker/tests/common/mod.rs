//! End-to-end harness: the real `airlock-broker`, `airlock-agent` and `airlock` binaries on
//! 127.0.0.1 ephemeral ports in temp folders. Every wait is a poll with an upper bound.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// Where cargo put the workspace's binaries.
pub(crate) fn bin(name: &str) -> PathBuf {
    let broker = PathBuf::from(env!("CARGO_BIN_EXE_airlock-broker"));
    let path = broker.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Polls `f` until it returns Some, or panics after `limit`.
pub(crate) fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed on drop.
pub(crate) struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running broker with its admin credentials.
pub(crate) struct Broker {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub key_id: String,
    pub secret: String,
    pub proc: Proc,
    pub log: Arc<Mutex<String>>,
}

impl Broker {
    /// Starts `airlock-broker serve` on a free loopback port (HTTPS).
    pub(crate) fn start() -> Broker {
        Self::start_with(&[])
    }

    /// Starts it with extra arguments.
    pub(crate) fn start_with(extra: &[&str]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    /// Starts it in an existing data folder (a restart).
    pub(crate) fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Broker {
        Self::start_in_env(dir, extra, &[])
    }

    /// Starts it in an existing data folder with extra environment variables.
    pub(crate) fn start_in_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Broker {
        let data = dir.path().join("broker");
        let mut child = Command::new(bin("airlock-broker"))
            .args(["serve", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .env("AIRLOCK_LOG", "info,airlock_broker=debug,airlock_recordings=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut key_id, mut secret, mut url) = (String::new(), String::new(), String::new());
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(v) = line.strip_prefix("AWS_ACCESS_KEY_ID=") {
                key_id = v.to_owned();
            } else if let Some(v) = line.strip_prefix("AWS_SECRET_ACCESS_KEY=") {
                secret = v.to_owned();
            } else if let Some(rest) = line.strip_prefix("airlock-broker listening on ") {
                url = rest.split_whitespace().next().unwrap().to_owned();
                break;
            }
        }
        assert!(!url.is_empty(), "broker did not start: {}", log.lock().unwrap());
        std::thread::spawn(move || for _ in lines {});
        Broker { dir, url, key_id, secret, proc: Proc(child), log }
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("broker")
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.data_dir().join("ca.pem")
    }

    /// The `airlock` CLI pointed at this broker with the admin's key.
    pub(crate) fn cli(&self) -> Command {
        let mut cmd = Command::new(bin("airlock"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AIRLOCK_ENDPOINT", &self.url)
            .env("AIRLOCK_CA_FILE", self.ca_file())
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("TERM", "xterm");
        cmd
    }

    /// The CLI set to run `command` on `target` without a PTY (AWS-StartNonInteractiveCommand).
    pub(crate) fn command(&self, target: &str, command: &str) -> Command {
        let mut cmd = self.cli();
        cmd.args(["start-session", "--target", target, "--document-name", "AWS-StartNonInteractiveCommand"])
            .arg("--parameters")
            .arg(format!("command={command}"));
        cmd
    }

    /// `airlock start-session` forwarding a local port to `port` on the agent's host.
    pub(crate) fn port_forward(&self, target: &str, port: u16) -> Command {
        let mut cmd = self.cli();
        cmd.args(["start-session", "--target", target, "--document-name", "AWS-StartPortForwardingSession"])
            .arg("--parameters")
            .arg(format!("portNumber={port}"));
        cmd
    }

    /// Runs a CLI API command and parses its JSON output, panicking on failure.
    pub(crate) fn api(&self, args: &[&str]) -> Value {
        let out = self.cli().args(args).output().unwrap();
        assert!(out.status.success(), "airlock {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Creates an activation and returns (id, code).
    pub(crate) fn activation(&self, limit: u32) -> (String, String) {
        let v = self.api(&[
            "create-activation",
            "--iam-role",
            "airlock-test",
            "--registration-limit",
            &limit.to_string(),
        ]);
        (v["ActivationId"].as_str().unwrap().to_owned(), v["ActivationCode"].as_str().unwrap().to_owned())
    }

    /// Registers and starts an agent, waiting until the broker shows it Online.
    pub(crate) fn agent(&self, name: &str) -> Agent {
        let (id, code) = self.activation(1);
        let dir = self.dir.path().join(format!("agent-{name}"));
        let out = self.register(&dir, &id, &code);
        assert!(out.status.success(), "register failed: {}", String::from_utf8_lossy(&out.stderr));
        let state: Value = serde_json::from_slice(&std::fs::read(dir.join("agent.json")).unwrap()).unwrap();
        let instance_id = state["instance_id"].as_str().unwrap().to_owned();
        let agent = Agent::run(&dir, instance_id);
        self.wait_online(&agent.instance_id);
        agent
    }

    /// Runs `airlock-agent register` into `dir`.
    pub(crate) fn register(&self, dir: &Path, id: &str, code: &str) -> Output {
        Command::new(bin("airlock-agent"))
            .args(["register", "--data-dir"])
            .arg(dir)
            .args(["--endpoint", &self.url, "--activation-code", code, "--activation-id", id, "--ca-file"])
            .arg(self.ca_file())
            .output()
            .unwrap()
    }

    /// Waits until DescribeInstanceInformation shows the instance Online.
    pub(crate) fn wait_online(&self, instance_id: &str) -> Value {
        wait_for("the agent to be Online", Duration::from_secs(30), || {
            let v = self.api(&["describe-instance-information"]);
            v["InstanceInformationList"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["InstanceId"] == instance_id && i["PingStatus"] == "Online")
                .cloned()
        })
    }

    /// Sets the Session Manager preferences (creating or updating SSM-SessionManagerRunShell).
    pub(crate) fn set_preferences(&self, inputs: Value) {
        let content = serde_json::json!({
            "schemaVersion": "1.0",
            "description": "Session Manager preferences",
            "sessionType": "Standard_Stream",
            "inputs": inputs,
        })
        .to_string();
        let name = "SSM-SessionManagerRunShell";
        let body = serde_json::json!({ "Name": name, "Content": content, "DocumentType": "Session" });
        let (status, v) =
            self.raw_call("CreateDocument", &body.to_string(), &self.key_id, &self.secret, SystemTime::now());
        if status == 200 {
            return;
        }
        assert_eq!(v["__type"], "DocumentAlreadyExists", "{v}");
        let body = serde_json::json!({ "Name": name, "Content": content, "DocumentVersion": "$LATEST" });
        let (status, v) =
            self.raw_call("UpdateDocument", &body.to_string(), &self.key_id, &self.secret, SystemTime::now());
        assert_eq!(status, 200, "{v}");
    }

    /// Sends a raw signed API call with temporary credentials' session token.
    pub(crate) fn raw_call_with_token(
        &self,
        target: &str,
        body: &str,
        key_id: &str,
        secret: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        self.signed(target, body, key_id, secret, token, SystemTime::now())
    }

    /// Sends a raw signed API call (for requests the CLI would never make). `op` is an SSM
    /// operation name or a full target (`AirlockIAM.CreateUser`).
    pub(crate) fn raw_call(
        &self,
        op: &str,
        body: &str,
        key_id: &str,
        secret: &str,
        at: SystemTime,
    ) -> (u16, Value) {
        self.signed(op, body, key_id, secret, None, at)
    }

    fn signed(
        &self,
        op: &str,
        body: &str,
        key_id: &str,
        secret: &str,
        token: Option<&str>,
        at: SystemTime,
    ) -> (u16, Value) {
        use aws_credential_types::Credentials;
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let identity = Credentials::new(key_id, secret, token.map(str::to_owned), None, "test").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("ssm")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let host = self.url.split("://").nth(1).unwrap().to_owned();
        let target = if op.contains('.') { op.to_owned() } else { format!("AmazonSSM.{op}") };
        let headers = [
            ("host", host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let url = format!("{}/", self.url);
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().map(|(k, v)| (*k, *v)),
            SignableBody::Bytes(body.as_bytes()),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = http::Request::builder().method("POST").uri(&url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let mut req = req.body(()).unwrap();
        instructions.apply_to_request_http1x(&mut req);
        let ca = std::fs::read(self.ca_file()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(airlock_proto::quic::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(airlock_proto::quic::pinned_roots(&ca).unwrap())
            .with_no_client_auth();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let client = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
            let mut rb = client.post(&url).body(body.to_owned());
            for (k, v) in req.headers() {
                if k != "host" {
                    rb = rb.header(k.as_str(), v.as_bytes());
                }
            }
            let resp = rb.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        })
    }
}

/// A running agent.
pub(crate) struct Agent {
    pub instance_id: String,
    pub dir: PathBuf,
    pub proc: Proc,
}

impl Agent {
    /// Starts `airlock-agent run` on a registered data folder.
    pub(crate) fn run(dir: &Path, instance_id: String) -> Agent {
        let child = Command::new(bin("airlock-agent"))
            .args(["run", "--data-dir"])
            .arg(dir)
            .env("SHELL", "/bin/bash")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Agent { instance_id, dir: dir.to_owned(), proc: Proc(child) }
    }
}

/// A program running on a PTY, as a person at a terminal would run it.
pub(crate) struct Terminal {
    pub master: Box<dyn portable_pty::MasterPty + Send>,
    pub writer: Box<dyn Write + Send>,
    pub child: Box<dyn portable_pty::Child + Send + Sync>,
    pub screen: Arc<Mutex<String>>,
    /// Every byte the program wrote, as written.
    pub raw: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Spawns `cmd` on a new PTY of 80x24.
    pub(crate) fn spawn(cmd: portable_pty::CommandBuilder) -> Terminal {
        let pty = portable_pty::native_pty_system()
            .openpty(portable_pty::PtySize { rows: 24, cols: 80, pixel_width: 0, pixel_height: 0 })
            .unwrap();
        let child = pty.slave.spawn_command(cmd).unwrap();
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().unwrap();
        let writer = pty.master.take_writer().unwrap();
        let screen = Arc::new(Mutex::new(String::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (sink, raw_sink) = (screen.clone(), raw.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                raw_sink.lock().unwrap().extend_from_slice(&buf[..n]);
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal { master: pty.master, writer, child, screen, raw }
    }

    /// Types text.
    pub(crate) fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits until the screen contains `needle`.
    pub(crate) fn expect(&self, needle: &str) {
        wait_for(&format!("{needle:?} on the terminal"), Duration::from_secs(20), || {
            self.screen.lock().unwrap().contains(needle).then_some(())
        });
    }

    /// Waits for the program to exit and returns its exit code.
    pub(crate) fn wait(&mut self) -> u32 {
        let child = &mut self.child;
        wait_for("the CLI to exit", Duration::from_secs(20), || child.try_wait().unwrap()).exit_code()
    }
}

/// The `airlock` CLI command for a PTY, pointed at `broker`.
pub(crate) fn pty_cli(broker: &Broker, args: &[&str]) -> portable_pty::CommandBuilder {
    let mut cmd = portable_pty::CommandBuilder::new(bin("airlock"));
    cmd.args(args);
    cmd.env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("HOME", broker.dir.path());
    cmd.env("AIRLOCK_ENDPOINT", &broker.url);
    cmd.env("AIRLOCK_CA_FILE", broker.ca_file());
    cmd.env("AWS_ACCESS_KEY_ID", &broker.key_id);
    cmd.env("AWS_SECRET_ACCESS_KEY", &broker.secret);
    cmd.env("TERM", "xterm");
    cmd
}
