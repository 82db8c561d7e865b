//! `--spawn`: the release server on a free port with a temporary database.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

/// A server process of our own, stopped (SIGTERM) when dropped.
pub struct SpawnedServer {
    child: Child,
    url: String,
    /// Holds the database until the server is gone.
    _dir: TempDir,
}

impl SpawnedServer {
    /// Starts the `event-booking` binary that sits beside this one, with
    /// `env` on top of the inherited environment.
    pub fn start(env: &[(&str, &str)]) -> Result<Self, String> {
        let binary = server_binary()?;
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
        let mut child = Command::new(&binary)
            .env("BOOKING_PORT", "0")
            .env("BOOKING_HOST", "127.0.0.1")
            .env("BOOKING_DATABASE", dir.path().join("bookings.db"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = lines
            .find_map(|line| {
                line.ok()?
                    .strip_prefix("event-booking listening on ")
                    .map(str::to_string)
            })
            .ok_or_else(|| format!("{} exited before listening", binary.display()))?;
        Ok(SpawnedServer {
            child,
            url,
            _dir: dir,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn server_binary() -> Result<PathBuf, String> {
    let here = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let binary = here.with_file_name("event-booking");
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: build it first (cargo build --release)",
            binary.display()
        ))
    }
}
