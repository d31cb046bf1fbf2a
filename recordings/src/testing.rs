//! Test support: a real moto server on a free loopback port, standing in
//! for S3 and CloudWatch Logs. The test command installs moto into the repo's `.venv`.

// Test support compiled into the library so other crates' integration tests can use it;
// like a test, it fails loudly (panics) when the environment is not set up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::aws::{AwsClients, AwsSettings};

/// A running `moto_server`; killed when dropped.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Where `moto_server` is: `$AIRLOCK_MOTO_SERVER`, else the workspace's `.venv/bin/moto_server`.
pub fn moto_server_path() -> PathBuf {
    if let Some(p) = std::env::var_os("AIRLOCK_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(&crate_dir).join(".venv/bin/moto_server")
}

/// Credentials moto accepts (any will do); also what tests give the broker.
pub const ACCESS_KEY_ID: &str = "testing";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "testing";
/// The region tests use.
pub const REGION: &str = "us-east-1";

impl Moto {
    /// Starts moto on a free port and waits until it answers.
    ///
    /// # Panics
    /// When moto is not installed or does not come up: this is test support, and a missing
    /// dependency must fail the test loudly, not skip it.
    pub fn start() -> Moto {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
        let child = Self::spawn(port);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let moto = Moto { child, addr, url: format!("http://{addr}") };
        moto.wait_until_it_answers();
        moto
    }

    /// Kills the server: connections are refused until [`Moto::start_again`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a fresh, empty server on the same port after [`Moto::kill`] and returns once it
    /// answers (polled every 20 ms, so the return is within ~20 ms of it answering).
    pub fn start_again(&mut self) {
        self.child = Self::spawn(self.addr.port());
        self.wait_until_it_answers();
    }

    fn spawn(port: u16) -> Child {
        let path = moto_server_path();
        assert!(
            path.exists(),
            "{} is missing: run `bash scripts/test.sh` once (it installs moto into .venv), \
             or set AIRLOCK_MOTO_SERVER",
            path.display()
        );
        Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()))
    }

    fn wait_until_it_answers(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers() {
            assert!(Instant::now() < deadline, "moto did not answer on {} within 60 s", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether `GET /moto-api/` answers.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = format!("GET /moto-api/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        let mut head = [0u8; 12];
        s.write_all(req.as_bytes()).is_ok()
            && s.read_exact(&mut head).is_ok()
            && head.starts_with(b"HTTP/1.1 200")
    }

    /// Freezes the server (SIGSTOP): connections hang as with a service that stopped
    /// answering, and its state survives for [`Moto::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([sig, &self.child.id().to_string()]).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill {sig} moto failed");
    }

    /// Settings for the SDK clients to use this server.
    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: Some(REGION.into()),
            endpoint_url: Some(self.url.clone()),
            static_credentials: Some((ACCESS_KEY_ID.into(), SECRET_ACCESS_KEY.into())),
        }
    }

    /// SDK clients talking to this server.
    pub async fn clients(&self) -> AwsClients {
        AwsClients::new(&self.settings()).await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // A paused server would ignore SIGKILL's exit until continued on some kernels' views
        // of the process state; continue it first so it is reaped promptly.
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
