//! One throw-away PostgreSQL server per run of the tests, for the tests of
//! the PostgreSQL backend, and a database of its own for each test. The
//! server is Debian's (package `postgresql`): `initdb` into a temporary
//! folder and `postgres` on a free loopback port, run as the unprivileged
//! user `postgres` where the tests run as root (`initdb` refuses root). It
//! stops when the test process exits (its parent-death signal).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use crate::helpers::skip;

/// The running server, for the whole test process.
pub struct Postgres {
    port: u16,
    bin: PathBuf,
}

static SERVER: OnceLock<Result<Postgres, String>> = OnceLock::new();

/// Databases created so far: each test's gets the next number.
static CREATED: AtomicUsize = AtomicUsize::new(0);

/// A new, empty database on the shared server and its connection URL; `None`
/// (the test then passes, saying why) where PostgreSQL is not installed,
/// unless `BOOKING_TESTS_REQUIRE_POSTGRES` is set, as CI sets it.
pub fn postgres_database() -> Option<PostgresDatabase> {
    let server = match SERVER.get_or_init(Postgres::start) {
        Ok(server) => server,
        Err(why) => {
            assert!(
                std::env::var_os("BOOKING_TESTS_REQUIRE_POSTGRES").is_none(),
                "PostgreSQL is required, and cannot run: {why}"
            );
            skip(format!("needs PostgreSQL: {why}"));
            return None;
        }
    };
    let name = format!(
        "booking_{}_{}",
        std::process::id(),
        CREATED.fetch_add(1, Ordering::Relaxed)
    );
    server.sql("postgres", &format!("CREATE DATABASE {name}"));
    Some(PostgresDatabase {
        name,
        port: server.port,
    })
}

/// One test's database.
#[derive(Clone)]
pub struct PostgresDatabase {
    pub name: String,
    port: u16,
}

impl PostgresDatabase {
    /// What `BOOKING_STORAGE__POSTGRES_URL` takes.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    /// The server's settings for an instance on this database.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BOOKING_STORAGE__BACKEND".into(), "postgres".into()),
            ("BOOKING_STORAGE__POSTGRES_URL".into(), self.url()),
        ]
    }

    /// Runs `sql` in this database; returns what `psql` printed, unaligned,
    /// without headers (one line per row, `|` between columns).
    pub fn sql(&self, sql: &str) -> String {
        server().sql(&self.name, sql)
    }
}

fn server() -> &'static Postgres {
    SERVER
        .get()
        .and_then(|server| server.as_ref().ok())
        .expect("started")
}

impl Postgres {
    fn start() -> Result<Postgres, String> {
        let bin = find_bin()?;
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
        remove_left_over();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let as_postgres = running_as_root();
        if as_postgres {
            let chowned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(|e| e.to_string())?;
            if !chowned.success() {
                return Err("cannot give the data folder to user postgres".into());
            }
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let initdb = as_user(initdb, as_postgres)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        let port = free_port();
        let log = std::fs::File::create(dir.join("postgres.log")).map_err(|e| e.to_string())?;
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
            .args(["-c", "max_connections=300"])
            .stdout(Stdio::null())
            .stderr(log);
        // From a thread that lives as long as the process: the parent-death
        // signal follows the thread that started the child.
        let (started, outcome) = mpsc::channel();
        std::thread::spawn(move || {
            let child = as_user(postgres, as_postgres).spawn();
            let _ = started.send(child.map(|_| ()).map_err(|e| format!("postgres: {e}")));
            loop {
                std::thread::park();
            }
        });
        outcome.recv().map_err(|e| e.to_string())??;
        let server = Postgres { port, bin };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.answers() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                return Err(format!("PostgreSQL did not start:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn answers(&self) -> bool {
        self.psql("postgres", "SELECT 1")
            .output()
            .is_ok_and(|out| out.status.success())
    }

    fn psql(&self, database: &str, sql: &str) -> Command {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-tAqc", sql])
        .stdin(Stdio::null());
        psql
    }

    fn sql(&self, database: &str, sql: &str) -> String {
        let out = self.psql(database, sql).output().expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

/// The data folders' names, before the test process's id.
const PREFIX: &str = "event-booking-postgres-";

/// Deletes the data folders of test processes that have ended.
fn remove_left_over() {
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Debian's versioned folder of PostgreSQL's programs (the newest), else
/// the folder of an `initdb` on the PATH.
fn find_bin() -> Result<PathBuf, String> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    if let Some(newest) = versions.pop() {
        return Ok(newest);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
        .ok_or_else(|| {
            "no initdb: PostgreSQL is not installed (Debian: apt-get install postgresql)".into()
        })
}

pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// `command`, as user `postgres` where `switch`, and told to stop (SIGQUIT:
/// PostgreSQL's immediate shutdown) when the thread that started it ends.
pub fn as_user(mut command: Command, switch: bool) -> Command {
    let ids = switch.then(|| (id("-u"), id("-g")));
    // SAFETY: setgid, setuid and prctl are single system calls, safe between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if let Some((uid, gid)) = ids {
                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // After the switch of user, which clears it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    command
}

/// User `postgres`'s uid (`-u`) or gid (`-g`).
fn id(which: &str) -> u32 {
    let out = Command::new("id")
        .args([which, "postgres"])
        .output()
        .expect("id runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("user postgres exists")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}
