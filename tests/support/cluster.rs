//! A control plane of a test binary's own (`hack/cluster.sh` with its own `OAM_TRUST_CLUSTER_DIR`), and
//! fault injection on its components: kill, stop, start, restart, pause and resume, each through the
//! script so a component comes back with exactly the flags, ports and data `up` gave it.
//!
//! For tests that break the control plane: the shared one of a test run (`hack/test.sh`) must never
//! see a fault. Dropping the `Cluster` stops it and deletes its state.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A component of the local control plane, as `hack/cluster.sh` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    Kwok,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::Kwok => "kwok",
        }
    }
}

/// A running control plane in `dir`.
pub struct Cluster {
    dir: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/cluster.sh")
}

impl Cluster {
    /// Brings up a fresh control plane in `dir` (a leftover one there is stopped first); panics with
    /// the script's output when it cannot.
    pub async fn up(dir: PathBuf) -> Cluster {
        let cluster = Cluster { dir };
        cluster.script(&["down"]).await;
        let (ok, out) = cluster.script(&["up"]).await;
        assert!(ok, "hack/cluster.sh up in {}: {out}", cluster.dir.display());
        cluster
    }

    /// Where a test binary's own control plane lives: beside the shared one of the test run
    /// (`$OAM_TRUST_CLUSTER_DIR`, default `.cluster`), suffixed with `name`.
    pub fn dir_for(name: &str) -> PathBuf {
        let base = std::env::var("OAM_TRUST_CLUSTER_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cluster"));
        let mut dir = base.into_os_string();
        dir.push(format!("-{name}"));
        PathBuf::from(dir)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `hack/cluster.sh args` for this cluster: (success, stderr and stdout).
    async fn script(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::new("bash")
            .arg(script())
            .args(args)
            .env("OAM_TRUST_CLUSTER_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running hack/cluster.sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        (out.status.success(), text)
    }

    /// Runs one fault command on `c`; panics with the script's output if it fails. Returns how long
    /// the command took (for `start`: until the component serves).
    async fn fault(&self, command: &str, c: Component) -> Duration {
        let started = Instant::now();
        let (ok, out) = self.script(&[command, c.as_str()]).await;
        assert!(ok, "hack/cluster.sh {command} {}: {out}", c.as_str());
        started.elapsed()
    }

    /// SIGKILL: a crash, no cleanup.
    pub async fn kill(&self, c: Component) -> Duration {
        self.fault("kill", c).await
    }

    /// SIGTERM (SIGKILL after 10 s).
    pub async fn stop(&self, c: Component) -> Duration {
        self.fault("stop", c).await
    }

    /// Starts `c` again as `up` did and waits until it serves; returns how long that took.
    pub async fn start(&self, c: Component) -> Duration {
        self.fault("start", c).await
    }

    pub async fn restart(&self, c: Component) -> Duration {
        self.fault("restart", c).await
    }

    /// SIGSTOP: the process keeps its sockets (connections are accepted) but answers nothing.
    pub async fn pause(&self, c: Component) {
        self.fault("pause", c).await;
    }

    /// SIGCONT.
    pub async fn resume(&self, c: Component) {
        self.fault("resume", c).await;
    }

    /// Brings every component back (continued, and started if it is not running), after a
    /// scenario that failed half-way through its fault.
    pub async fn heal(&self) {
        for c in [
            Component::Etcd,
            Component::KubeApiserver,
            Component::KubeControllerManager,
            Component::KubeScheduler,
            Component::Kwok,
        ] {
            self.script(&["resume", c.as_str()]).await;
            self.script(&["start", c.as_str()]).await;
        }
    }

    /// The tail of every component's log.
    pub async fn logs(&self) -> String {
        self.script(&["logs"]).await.1
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Synchronous: a panicking test still stops every process it started.
        let _ = std::process::Command::new("bash")
            .arg(script())
            .arg("down")
            .env("OAM_TRUST_CLUSTER_DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
