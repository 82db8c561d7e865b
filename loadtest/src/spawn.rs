//! `--spawn`: the release server on a free port with a temporary database.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use event_booking::probe;
use event_booking::startup::LISTENING;

/// The database's file name in the server's temporary folder.
const DATABASE: &str = "bookings.db";

/// A server process of our own, stopped (SIGTERM) when dropped.
pub struct SpawnedServer {
    child: Child,
    url: String,
    /// Holds the database, across restarts, until the server is gone.
    dir: TempDir,
    /// `BOOKING_*` settings of every start, besides port, host and database.
    settings: Vec<(String, String)>,
}

impl SpawnedServer {
    /// Starts the `event-booking` binary that sits beside this one on a new
    /// temporary database.
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[])
    }

    /// As `start`, with these `BOOKING_*` settings.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, url) = launch(&dir, &settings)?;
        Ok(SpawnedServer {
            child,
            url,
            dir,
            settings,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the server process, in bytes.
    pub fn rss_bytes(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .map_err(|e| format!("cannot read the server's memory use: {e}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| "no VmRSS line in /proc/<pid>/status".into())
    }

    /// Stops the server gracefully and starts it again on the same database;
    /// returns the time from process start to ready (recovery included).
    pub fn restart(&mut self) -> Result<Duration, String> {
        self.stop();
        let started = Instant::now();
        let (child, url) = launch(&self.dir, &self.settings)?;
        let ready = started.elapsed();
        (self.child, self.url) = (child, url);
        Ok(ready)
    }

    /// Stops the server gracefully, runs `change` on its database file, and
    /// starts it again; returns the time from process start to ready.
    pub fn restart_after(
        &mut self,
        change: impl FnOnce(&std::path::Path) -> Result<(), String>,
    ) -> Result<Duration, String> {
        self.stop();
        change(&self.dir.path().join(DATABASE))?;
        let started = Instant::now();
        let (child, url) = launch(&self.dir, &self.settings)?;
        let ready = started.elapsed();
        (self.child, self.url) = (child, url);
        Ok(ready)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server on `dir`'s database; returns once `/ready` answers 200.
fn launch(dir: &TempDir, settings: &[(String, String)]) -> Result<(Child, String), String> {
    let binary = server_binary()?;
    let mut child = Command::new(&binary)
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .env("BOOKING_PORT", "0")
        .env("BOOKING_HOST", "127.0.0.1")
        .env("BOOKING_DATABASE", dir.path().join(DATABASE))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let url = BufReader::new(stdout)
        .lines()
        .find_map(|line| line.ok()?.strip_prefix(LISTENING).map(str::to_string))
        .ok_or_else(|| format!("{} exited before listening", binary.display()))?;
    wait_until_ready(&url)?;
    Ok((child, url))
}

/// Polls `/ready`: the server listens while it still recovers.
fn wait_until_ready(url: &str) -> Result<(), String> {
    const PATIENCE: Duration = Duration::from_secs(120);
    let address = url
        .strip_prefix("http://")
        .and_then(|address| address.parse().ok())
        .ok_or_else(|| format!("the server printed an address we cannot call: {url}"))?;
    let started = Instant::now();
    loop {
        let answered = probe::get(address, "/ready");
        if answered.as_deref().is_ok_and(probe::is_ok) {
            return Ok(());
        }
        if started.elapsed() > PATIENCE {
            return Err(format!(
                "{url}/ready did not answer 200 within {PATIENCE:?}: {answered:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `event-booking` binary beside this program.
pub fn server_binary() -> Result<PathBuf, String> {
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
