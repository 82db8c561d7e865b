//! Starts the real server binary on a temporary database and talks HTTP to it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use awc::http::StatusCode;
use event_booking::startup::LISTENING;
use serde_json::{json, Value};
use tempfile::TempDir;

pub const BINARY: &str = env!("CARGO_BIN_EXE_event-booking");

/// One server process and the folder of its database, which outlives restarts.
pub struct TestApp {
    pub dir: TempDir,
    /// `BOOKING_*` settings of every start, besides the port and database.
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// The soft limit on open files the process starts with, if not ours.
    pub soft_open_files: Option<u64>,
    /// `http://127.0.0.1:<port>` of the running process (the port changes on restart).
    pub address: String,
    client: awc::Client,
}

/// A response: its status, its JSON body (`Null` if not JSON), content type and headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub content_type: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    /// The body exactly as it came.
    pub raw: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Turns a current database into one of schema version 3, as the server of
/// that version left it: its next start must upgrade it (versions 4 to 9).
/// The CHECK on the log's statuses is narrowed back as SQLite's documented
/// procedure allows (`writable_schema`), with the server stopped.
pub const BACK_TO_VERSION_3: &str = "
    PRAGMA writable_schema = ON;
    UPDATE sqlite_schema SET sql = replace(sql,
        'CHECK (status = ''booked'' OR status = ''waiting'' OR status = ''cancelled'' OR status = ''held'' OR status = ''expired'' OR status = ''offered'')',
        'CHECK (status = ''booked'' OR status = ''waiting'' OR status = ''cancelled'')')
    WHERE type = 'table' AND name = 'order_log';
    PRAGMA writable_schema = OFF;
    ALTER TABLE events DROP COLUMN version;
    ALTER TABLE events DROP COLUMN sales_open;
    ALTER TABLE events DROP COLUMN waiting_list;
    ALTER TABLE events DROP COLUMN offer_secs;
    ALTER TABLE events DROP COLUMN hold_secs;
    DROP INDEX events_holding;
    ALTER TABLE events DROP COLUMN held;
    ALTER TABLE order_log DROP COLUMN expires_at;
    DROP INDEX events_by_creation;
    DROP TABLE orders_by_event;
    DROP TABLE orders_indexed;
    ALTER TABLE events DROP COLUMN created;
    ALTER TABLE events DROP COLUMN booked;
    ALTER TABLE events DROP COLUMN waiting;
    DROP TABLE fingerprints;
    PRAGMA user_version = 3;
";

/// A test that cannot run here (it needs root: to mount a file system, to
/// raise a hard limit) says why and passes, unless
/// `BOOKING_TESTS_REQUIRE_ROOT` is set, as CI, which runs as root, sets it.
pub fn skip(why: String) {
    assert!(
        std::env::var_os("BOOKING_TESTS_REQUIRE_ROOT").is_none(),
        "required, and cannot run: {why}"
    );
    eprintln!("skipped: {why}");
}

pub fn spawn_app() -> TestApp {
    spawn_app_with(&[])
}

/// With these environment variables besides the port and database. The
/// tests log at `info` unless `RUST_LOG` is given; an empty `RUST_LOG` leaves
/// it unset, for the server's own default.
pub fn spawn_app_with(env: &[(&str, &str)]) -> TestApp {
    let mut app = unstarted_app_with(env);
    app.start();
    app
}

/// As [`spawn_app_with`], not started yet: for the settings of
/// [`TestApp::start`] that are not environment variables.
pub fn unstarted_app_with(env: &[(&str, &str)]) -> TestApp {
    TestApp {
        dir: tempfile::tempdir().expect("a temporary folder"),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        child: None,
        soft_open_files: None,
        address: String::new(),
        client: awc::Client::builder()
            // Idle pooled connections are dropped before the server's own
            // keep-alive (5 s) closes them: awc reuses a closed one as a
            // `Connect(Disconnected)` error instead of connecting again.
            .connector(
                awc::Connector::new()
                    .limit(0)
                    .conn_keep_alive(Duration::from_secs(2)),
            )
            .timeout(Duration::from_secs(60))
            .finish(),
    }
}

impl TestApp {
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("data").join("bookings.db")
    }

    /// Rows of `table` in the database, read beside the running server.
    pub fn rows_in(&self, table: &str) -> i64 {
        let db = rusqlite::Connection::open(self.database()).unwrap();
        let count = format!("SELECT COUNT(*) FROM {table}");
        db.query_row(&count, [], |row| row.get(0)).unwrap()
    }

    /// Starts the server and returns once it printed the address it listens on.
    pub fn start(&mut self) {
        let launched = self.launch_listening();
        self.listening(launched);
    }

    /// Starts several servers at once: each is launched before any is waited for.
    pub fn start_together(apps: &mut [TestApp]) {
        let launched: Vec<_> = apps.iter_mut().map(TestApp::launch_listening).collect();
        for (app, launched) in apps.iter_mut().zip(launched) {
            app.listening(launched);
        }
    }

    /// The server process, and what will hear the address it listens on.
    fn launch_listening(&mut self) -> (Child, mpsc::Receiver<String>) {
        let mut child = self.launch();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix(LISTENING) {
                    let _ = tx.send(address.to_string());
                }
            }
        });
        (child, rx)
    }

    /// Waits until the launched server listens.
    fn listening(&mut self, (mut child, rx): (Child, mpsc::Receiver<String>)) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => self.address = address,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not start; its log:\n{}", self.log())
            }
        }
        self.child = Some(child);
    }

    /// Starts the server where it is expected to exit before it listens,
    /// and waits for that (`wait_exit`'s deadline).
    pub fn start_to_exit(&mut self) -> ExitStatus {
        self.child = Some(self.launch());
        self.wait_exit()
    }

    /// The server process, its stdout piped, its stderr appended to the log.
    fn launch(&mut self) -> Child {
        assert!(self.child.is_none(), "the server is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut command = Command::new(BINARY);
        command
            .env("BOOKING_PORT", "0")
            .env("BOOKING_DATABASE", self.database())
            .env("BOOKING_WORKERS", "2")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if self
            .env
            .iter()
            .any(|(k, v)| k == "RUST_LOG" && v.is_empty())
        {
            command.env_remove("RUST_LOG");
        }
        if let Some(soft) = self.soft_open_files {
            let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
            // SAFETY: setrlimit is one system call, safe between fork and exec.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
            }
        }
        command
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the server binary starts")
    }

    /// Sends `signal` ("KILL", "TERM", "INT") without waiting, so it can be
    /// sent while requests to this server are still being awaited.
    pub fn send_signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Waits for the process to exit, with a deadline so a hung stop fails the test.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("a running server");
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!(
            "the server did not exit within 30 s; its log:\n{}",
            self.log()
        );
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        self.send_signal(signal);
        self.wait_exit()
    }

    /// Changes a `BOOKING_*` setting for the next start; `None` removes it.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.to_string(), value.to_string()));
        }
    }

    pub fn restart(&mut self) {
        let status = self.stop_with("TERM");
        assert!(status.success(), "graceful stop exited with {status}");
        self.start();
    }

    /// The port the running server listens on.
    pub fn port(&self) -> u16 {
        let port = self.address.rsplit(':').next().expect("host:port");
        port.parse().expect("a port number")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await;
        answer(response).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .send_json(body)
            .await;
        answer(response).await
    }

    /// Any request, with these headers and (for a POST) this JSON body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        let request = self.build(method, path, headers);
        answer(match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        })
        .await
    }

    fn build(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> awc::ClientRequest {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        for header in headers {
            request = request.insert_header(*header);
        }
        request
    }

    /// A POST with exactly these bytes and content type (none if `None`).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Answer {
        let headers: &[(&str, &str)] = match content_type {
            Some(content_type) => &[("content-type", content_type)],
            None => &[],
        };
        self.request_raw("POST", path, headers, body).await
    }

    /// Any request, with these headers and exactly these bytes as its body.
    pub async fn request_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Answer {
        let request = self.build(method, path, headers);
        answer(request.send_body(body.into()).await).await
    }

    /// A JSON POST whose body is sent in these pieces, each one chunk of a
    /// `Transfer-Encoding: chunked` body, so with no `Content-Length`.
    pub async fn post_chunked(&self, path: &str, pieces: &[&str]) -> Answer {
        let chunks: Vec<Result<actix_web::web::Bytes, std::io::Error>> = pieces
            .iter()
            .map(|piece| Ok(actix_web::web::Bytes::copy_from_slice(piece.as_bytes())))
            .collect();
        let request = self
            .client
            .post(format!("{}{path}", self.address))
            .insert_header(("content-type", "application/json"));
        answer(request.send_stream(futures::stream::iter(chunks)).await).await
    }

    /// The samples of `GET /metrics`, by name with labels as written.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let page = self.get("/metrics").await;
        assert_eq!(page.status, 200);
        assert!(
            page.content_type.starts_with("text/plain"),
            "{}",
            page.content_type
        );
        std::str::from_utf8(&page.raw)
            .unwrap()
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// Returns once `/ready` answers 200 (recovery is over), polling every
    /// 10 ms; fails after 60 s.
    pub async fn until_ready(&self) {
        for _ in 0..6000 {
            if self.get("/ready").await.status == 200 {
                return;
            }
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not ready after 60 s; log:\n{}", self.log());
    }

    /// The metric `name` once it reaches `expected`, or after 10 s as it is
    /// then (0 if absent): for what the server does in the background.
    pub async fn metric_reaching(&self, name: &str, expected: f64) -> f64 {
        let mut value = 0.0;
        for _ in 0..200 {
            value = self.metrics().await.get(name).copied().unwrap_or(0.0);
            if value >= expected {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        value
    }

    pub async fn initialize(&self, event: Value, total_tickets: u64) -> Answer {
        self.post(
            "/api/initialize",
            &json!({"eventId": event, "totalTickets": total_tickets}),
        )
        .await
    }

    pub async fn book(&self, event: Value, user: Value) -> Answer {
        self.post("/api/book", &json!({"eventId": event, "userId": user}))
            .await
    }

    pub async fn cancel(&self, event: Value, user: Value) -> Answer {
        self.post("/api/cancel", &json!({"eventId": event, "userId": user}))
            .await
    }

    pub async fn status(&self, event: &str) -> Answer {
        self.get(&format!("/api/status/{event}")).await
    }

    /// Booked tickets and waiting users of `event`, as its status reports them.
    pub async fn counts(&self, event: &str) -> (u64, u64) {
        let status = self.status(event).await;
        assert_eq!(status.status, 200, "status of {event}: {:?}", status.body);
        let count = |field: &str| status.body[field].as_u64().expect("a count");
        (count("bookedTickets"), count("waitingListCount"))
    }

    /// `user` goes into the path as given: percent-encode it first where needed.
    pub async fn user_status(&self, event: &str, user: &str) -> Answer {
        self.get(&format!("/api/status/{event}/{user}")).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn answer<S>(response: Result<awc::ClientResponse<S>, awc::error::SendRequestError>) -> Answer
where
    S: futures::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut response = response.expect("the server answers");
    let status: StatusCode = response.status();
    let headers: HashMap<String, String> = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                value.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    let bytes = response
        .body()
        .limit(16 << 20)
        .await
        .expect("a readable body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status: status.as_u16(),
        body,
        content_type,
        headers,
        raw: bytes.to_vec(),
    }
}

/// The same as `answer`, for requests that may fail because the server died.
pub async fn try_answer<S>(
    response: Result<awc::ClientResponse<S>, awc::error::SendRequestError>,
) -> Option<Answer>
where
    S: futures::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut response = response.ok()?;
    let status = response.status().as_u16();
    let bytes = response.body().await.ok()?;
    let body = serde_json::from_slice(&bytes).ok()?;
    Some(Answer {
        status,
        body,
        content_type: String::new(),
        headers: HashMap::new(),
        raw: bytes.to_vec(),
    })
}

impl TestApp {
    /// A booking that may get no answer (the server was killed meanwhile).
    pub async fn try_book(&self, event: Value, user: Value) -> Option<Answer> {
        let request = self.client.post(format!("{}/api/book", self.address));
        try_answer(
            request
                .send_json(&json!({"eventId": event, "userId": user}))
                .await,
        )
        .await
    }
}

/// One server-sent event, as a stream's client reads it.
#[derive(Debug, Clone)]
pub struct SentEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// The body of a stream, read as events (framing by `eventsource-stream`).
type Events = std::pin::Pin<
    Box<
        dyn futures::Stream<
            Item = Result<
                eventsource_stream::Event,
                eventsource_stream::EventStreamError<awc::error::PayloadError>,
            >,
        >,
    >,
>;

/// The events of an open `text/event-stream` response, read as they come.
pub struct EventReader {
    pub status: u16,
    pub headers: HashMap<String, String>,
    events: Events,
    /// The server ended the stream (not merely silent for a while).
    pub ended: bool,
}

impl EventReader {
    /// Opens a GET stream at `url` with these headers.
    pub async fn open(client: &awc::Client, url: &str, headers: &[(&str, &str)]) -> EventReader {
        use eventsource_stream::Eventsource;
        let mut request = client.get(url);
        for header in headers {
            request = request.insert_header(*header);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = value.to_str().unwrap_or_default().to_string();
                (name.as_str().to_string(), value)
            })
            .collect();
        EventReader {
            status,
            headers,
            events: Box::pin(response.eventsource()),
            ended: false,
        }
    }

    /// The next event (comment lines, the keep-alives, are no events);
    /// `None` once the stream ended, or if nothing came within `within`.
    pub async fn next_event(&mut self, within: Duration) -> Option<SentEvent> {
        use futures::StreamExt;
        match actix_web::rt::time::timeout(within, self.events.next()).await {
            Ok(Some(Ok(event))) => Some(SentEvent {
                event: event.event,
                id: event.id,
                data: serde_json::from_str(&event.data).unwrap_or(Value::Null),
            }),
            Ok(None) => {
                self.ended = true;
                None
            }
            // A broken connection, or silence for `within`: not an end.
            Ok(Some(Err(_))) | Err(_) => None,
        }
    }
}

impl TestApp {
    /// Opens a GET stream at `path` with these headers.
    pub async fn stream(&self, path: &str, headers: &[(&str, &str)]) -> EventReader {
        let url = format!("{}{path}", self.address);
        EventReader::open(&self.client, &url, headers).await
    }
}
