//! The README's first command works as a user runs it: `hack/demo.sh`, on its own control plane, plays
//! the whole story (operator, dev-issuer, GitLab deploy job, allowed and refused actions, audit trail),
//! says that it keeps running, and does, with its controller and its exchange (each as the chart's own
//! ServiceAccount) answering `/readyz`; Ctrl-C (SIGINT to its
//! process group, as a terminal sends it) then stops everything it started and exits 0.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous deadlines: the demo starts a whole control plane on a loaded 2-core machine, possibly beside
/// the one `hack/test.sh` runs the suite on.
const PLAYED_WITHIN: Duration = Duration::from_secs(20 * 60);
const READY_WITHIN: Duration = Duration::from_secs(2 * 60);
const STOPPED_WITHIN: Duration = Duration::from_secs(3 * 60);
const GONE_WITHIN: Duration = Duration::from_secs(60);

/// What the demo prints once it has played and keeps running.
const KEEPS_RUNNING: &str = "keep running";

#[test]
fn the_demo_plays_keeps_running_and_stops_cleanly_on_ctrl_c() {
    let mut demo = Demo::start();

    let stdout = demo.wait_for_output(KEEPS_RUNNING, PLAYED_WITHIN);
    for expected in [
        "Application payments/payments is running generation 2",
        "allowed  read its Application",
        "refused  read Secrets",
        "refused  change the scaler trait (deploy guard)",
        "refused  touch another namespace",
        "refused  replay the same ID token",
        "refused  exchange a token from an unprotected branch",
        "refused  the approver changes the image (approve grant: no spec)",
        "refused  the approver marks the production step succeeded (approve guard)",
        "Application payments/storefront: resumed workflow step approve-production",
        "deploy-production: succeeded",
        "TokenIssued",
        "\"outcome\":\"issued\"",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}\n{}",
            demo.output()
        );
    }

    // It keeps running: the controller and the exchange it started, each as its own chart
    // ServiceAccount, are alive and ready at the addresses the demo printed.
    let operators: Vec<Proc> = processes()
        .into_iter()
        .filter(|p| p.is_operator_of(&demo.cluster_dir))
        .collect();
    let mut roles: Vec<&str> = operators
        .iter()
        .filter_map(|p| p.arg_after("--role"))
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        ["controller", "exchange"],
        "expected the demo's controller and exchange, found {operators:?}\n{}",
        demo.output()
    );
    for operator in &operators {
        assert_eq!(
            operator.pgrp,
            demo.pgid(),
            "the operator runs in the demo's process group"
        );
        let health = operator
            .arg_after("--health-addr")
            .expect("the operator's --health-addr");
        assert!(
            stdout.contains(&format!("http://{health}/readyz")),
            "the demo prints the operator's readiness address {health}\n{stdout}"
        );
        let addr: SocketAddr = health.parse().expect("--health-addr is host:port");
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match http_status(addr, "/readyz") {
                Ok(200) => break,
                other if Instant::now() > deadline => panic!(
                    "the demo's operator (pid {}) does not answer /readyz with 200 after \
                     {READY_WITHIN:?}: {other:?}\n{}",
                    operator.pid,
                    demo.output()
                ),
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
    assert!(
        demo.child.try_wait().unwrap().is_none(),
        "hack/demo.sh exited while it said it keeps running\n{}",
        demo.output()
    );

    // Ctrl-C: a clean exit, and nothing of the demo left running (its control plane included).
    let status = demo.interrupt(STOPPED_WITHIN);
    assert_eq!(
        status.code(),
        Some(0),
        "hack/demo.sh after Ctrl-C: {status}\n{}",
        demo.output()
    );
    let deadline = Instant::now() + GONE_WITHIN;
    loop {
        let left = demo.processes_left();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of the demo still running {GONE_WITHIN:?} after it exited: {left:#?}\n{}",
            demo.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `hack/demo.sh` run as the README says, in its own process group and cluster directory, its output
/// collected as it comes. Dropping it kills whatever of it is left and stops its control plane.
struct Demo {
    child: Child,
    root: PathBuf,
    cluster_dir: PathBuf,
    output: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let cluster_dir = dir.path().join("cluster");
        // As from a terminal: SIGINT at its default disposition. A test runner started in the
        // background of a script inherits it ignored, and bash cannot trap a signal ignored on entry.
        let mut child = Command::new("env")
            .arg("--default-signal=INT")
            .arg(root.join("hack/demo.sh"))
            .current_dir(&root)
            .env("OAM_TRUST_CLUSTER_DIR", &cluster_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("starting hack/demo.sh");
        let output = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), output.clone());
        collect(child.stderr.take().unwrap(), output.clone());
        Demo {
            child,
            root,
            cluster_dir,
            output,
            _dir: dir,
        }
    }

    fn pgid(&self) -> u32 {
        self.child.id()
    }

    /// stdout and stderr, interleaved as they arrived.
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Polls until the output contains `text`; fails if the demo exits first or the deadline passes.
    fn wait_for_output(&mut self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let out = self.output();
            if out.contains(text) {
                return out;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("hack/demo.sh exited ({status}) before printing {text:?}\n{out}");
            }
            assert!(
                Instant::now() < deadline,
                "hack/demo.sh did not print {text:?} within {within:?}\n{out}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Sends SIGINT to the demo's process group, as Ctrl-C in its terminal does, and waits for its exit.
    fn interrupt(&mut self, within: Duration) -> ExitStatus {
        signal_group("INT", self.pgid());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hack/demo.sh still running {within:?} after Ctrl-C\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Live processes of the demo: in its process group, or naming its cluster directory (the control
    /// plane runs in sessions of its own).
    fn processes_left(&self) -> Vec<Proc> {
        let dir = self.cluster_dir.to_string_lossy().into_owned();
        processes()
            .into_iter()
            .filter(|p| p.state != 'Z')
            .filter(|p| p.pgrp == self.pgid() || p.args.iter().any(|a| a.contains(&dir)))
            .collect()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal_group("KILL", self.pgid());
            let _ = self.child.wait();
        }
        let _ = Command::new(self.root.join("hack/cluster.sh"))
            .arg("down")
            .env("OAM_TRUST_CLUSTER_DIR", &self.cluster_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut out = into.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
}

fn signal_group(signal: &str, pgid: u32) {
    let status = Command::new("bash")
        .args(["-c", &format!("kill -{signal} -- -{pgid}")])
        .status()
        .expect("running kill");
    assert!(
        status.success() || signal == "KILL",
        "kill -{signal} -{pgid}: {status}"
    );
}

/// The status code of a plain HTTP/1.1 GET.
fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line)?;
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {status_line:?}")))
}

/// A process as `/proc` shows it.
#[derive(Debug)]
struct Proc {
    pid: u32,
    pgrp: u32,
    state: char,
    args: Vec<String>,
    /// `NAME=value` entries of its environment (the demo exports `OAM_TRUST_CLUSTER_DIR`).
    env: Vec<String>,
}

impl Proc {
    fn is_operator_of(&self, cluster_dir: &Path) -> bool {
        let dir = cluster_dir.to_string_lossy();
        self.state != 'Z'
            && self.args.first().is_some_and(|a| a.ends_with("oam-trust"))
            && self.args.get(1).is_some_and(|a| a == "run")
            && self
                .args
                .iter()
                .chain(self.env.iter())
                .any(|a| a.contains(dir.as_ref()))
    }

    fn arg_after(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }
}

fn processes() -> Vec<Proc> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(entry.path().join("stat")),
            std::fs::read(entry.path().join("cmdline")),
        ) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (
            fields.first().and_then(|s| s.chars().next()),
            fields.get(2).and_then(|g| g.parse().ok()),
        ) else {
            continue;
        };
        let args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let env = std::fs::read(entry.path().join("environ"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        found.push(Proc {
            pid,
            pgrp,
            state,
            args,
            env,
        });
    }
    found
}
