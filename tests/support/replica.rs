//! `oam-trust run` as a process, the way a Deployment runs it: leader election on a Lease, health and
//! metrics on a port, the token exchange over plain HTTP on another, JSON logs in a file. Tests kill,
//! pause and signal replicas; dropping one kills it, so a failed assertion leaves nothing running.
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

pub struct Replica {
    pub name: String,
    pub child: Child,
    pub health: u16,
    pub exchange: u16,
    /// Its stdout and stderr (JSON lines), deleted when it is dropped unless the test is failing.
    pub log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kept for a failed test to be read; gone otherwise.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts replica `name` electing on Lease `lease_ns/lease` and waits until it is ready.
pub async fn start(name: &str, lease_ns: &str, lease: &str) -> Replica {
    start_with(name, lease_ns, lease, &[], &[]).await
}

/// As [`start`], with more flags and environment.
pub async fn start_with(
    name: &str,
    lease_ns: &str,
    lease: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Replica {
    let (health, exchange) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("oam-trust-{name}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_oam-trust"))
        .args([
            "run",
            "--instance",
            name,
            "--lease-namespace",
            lease_ns,
            "--lease-name",
            lease,
            "--exchange-insecure-http",
        ])
        .arg(format!("--health-addr=127.0.0.1:{health}"))
        .arg(format!("--exchange-listen=127.0.0.1:{exchange}"))
        .args(args)
        .env("KUBECONFIG", super::kubeconfig_path().await)
        .env("OAM_TRUST_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("starting oam-trust run");
    let mut r = Replica {
        name: name.into(),
        child,
        health,
        exchange,
        log,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !r.ready().await {
        let log = || std::fs::read_to_string(&r.log).unwrap_or_default();
        if let Some(status) = r.child.try_wait().unwrap() {
            panic!("{name} exited ({status}) before it was ready: {}", log());
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{name} not ready within 60 s; log {}", r.log.display());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    r
}

impl Replica {
    /// SIGKILL, and reap it: a crash, nothing released.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (`TERM`, `STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) -> std::io::Result<()> {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()?;
        match status.success() {
            true => Ok(()),
            false => Err(std::io::Error::other(format!("kill -{signal} failed"))),
        }
    }

    /// `/readyz` answers 200.
    pub async fn ready(&self) -> bool {
        get(self.health, "/readyz")
            .await
            .is_some_and(|(s, _)| s == 200)
    }

    /// Base URL of its token exchange.
    pub fn exchange_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.exchange)
    }

    /// Its log so far, one JSON object per line (lines that are not JSON are skipped).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A bare HTTP/1.1 GET or POST on loopback: (status, body).
pub async fn request(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string(),
    ))
}

pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path, "").await
}

/// The exchange answers (here: a well-formed RFC 6749 refusal of a token that is no JWT).
pub async fn serves_exchange(r: &Replica) -> bool {
    let body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=not-a-jwt&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt";
    match request(r.exchange, "POST", "/v1/token", body).await {
        Some((400, body)) => body.contains("\"error\""),
        _ => false,
    }
}

/// Sum of one counter family of its `/metrics` whose lines start with `prefix`.
pub async fn counter(r: &Replica, prefix: &str) -> u64 {
    let (_, text) = get(r.health, "/metrics").await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Application reconciles it counted, whatever their result.
pub async fn reconciles(r: &Replica) -> u64 {
    counter(r, "oam_trust_reconciles_total{controller=\"application\"").await
}

/// Who holds Lease `ns/lease`.
pub async fn holder(client: &Client, ns: &str, lease: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(lease)
        .await
        .unwrap()?
        .spec?
        .holder_identity
}
