//! A cluster of `scripts/cluster.sh` (PostgreSQL, instances of the server,
//! nginx in front, all on loopback), for the benchmark and the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A running cluster, stopped (`scripts/cluster.sh down`) when dropped.
pub struct Cluster {
    /// The cluster's folder (`CLUSTER_DIR`): pids, addresses, logs.
    dir: TempDir,
    /// nginx's address, `http://127.0.0.1:PORT`.
    nginx: String,
    /// Each instance's own address, instance 1 first.
    nodes: Vec<String>,
}

impl Cluster {
    /// Starts `nodes` instances of the server binary `server` behind nginx.
    /// An error says why it could not (PostgreSQL or nginx missing, say).
    pub fn up(nodes: usize, server: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
        let out = script()
            .arg("up")
            .env("CLUSTER_DIR", dir.path())
            .env("CLUSTER_NODES", nodes.to_string())
            .env("EVENT_BOOKING_BIN", server)
            .output()
            .map_err(|e| format!("scripts/cluster.sh does not run: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let nginx = stdout
            .lines()
            .find_map(|line| line.strip_prefix("READY "))
            .map(str::to_string);
        // From here on, dropped means stopped, even half started.
        let mut cluster = Cluster {
            dir,
            nginx: String::new(),
            nodes: Vec::new(),
        };
        cluster.nginx = nginx.ok_or_else(|| {
            format!(
                "scripts/cluster.sh up failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        cluster.nodes = (1..=nodes)
            .map(|i| cluster.file(&format!("node-{i}.url")))
            .collect::<Result<_, _>>()?;
        Ok(cluster)
    }

    pub fn nginx(&self) -> &str {
        &self.nginx
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The process id of instance `number` (1 is the first).
    pub fn pid(&self, number: usize) -> Result<u32, String> {
        self.file(&format!("node-{number}.pid"))?
            .parse()
            .map_err(|e| format!("node-{number}.pid: {e}"))
    }

    /// A file of the cluster's folder, trimmed.
    fn file(&self, name: &str) -> Result<String, String> {
        std::fs::read_to_string(self.dir.path().join(name))
            .map(|text| text.trim().to_string())
            .map_err(|e| format!("{name} of the cluster: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = script()
            .arg("down")
            .env("CLUSTER_DIR", self.dir.path())
            .output();
    }
}

/// `scripts/cluster.sh` of this workspace.
fn script() -> Command {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new(root.join("scripts/cluster.sh"))
}
