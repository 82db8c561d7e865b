//! Three instances on one PostgreSQL behind nginx, as `scripts/cluster.sh
//! up` starts them: the contract through nginx, the routing by event (njs
//! reads the legacy routes' bodies), simultaneous bookings through nginx
//! and straight at every instance, then storms through nginx while an
//! instance is added and removed, one instance's sessions are terminated,
//! one instance is killed and PostgreSQL restarts; and at the end, the
//! committed log shows no event decided by two owners at once. One cluster
//! for the whole file: one test, in steps.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{skip, EventReader, BINARY};
use crate::postgres_server::{as_user, running_as_root};

/// A running cluster; `down` when dropped, even after a failed assertion.
struct Cluster {
    dir: tempfile::TempDir,
    nginx: String,
    nodes: Vec<String>,
    client: awc::Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = script()
            .arg("down")
            .env("CLUSTER_DIR", self.dir.path())
            .output();
    }
}

fn script() -> Command {
    Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh"))
}

/// Starts the cluster, or says why it cannot (skipped unless
/// `BOOKING_TESTS_REQUIRE_CLUSTER` is set, as CI sets it).
fn cluster() -> Option<Cluster> {
    let dir = tempfile::tempdir().unwrap();
    let out = script()
        .arg("up")
        .env("CLUSTER_DIR", dir.path())
        .env("EVENT_BOOKING_BIN", BINARY)
        .output()
        .expect("scripts/cluster.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(nginx) = stdout
        .lines()
        .find_map(|line| line.strip_prefix("READY "))
        .map(str::to_string)
    else {
        let why = format!(
            "scripts/cluster.sh up failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = script().arg("down").env("CLUSTER_DIR", dir.path()).output();
        assert!(
            std::env::var_os("BOOKING_TESTS_REQUIRE_CLUSTER").is_none(),
            "{why}"
        );
        skip(why);
        return None;
    };
    let nodes = (1..=3)
        .map(|i| std::fs::read_to_string(dir.path().join(format!("node-{i}.url"))).unwrap())
        .map(|url| url.trim().to_string())
        .collect();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    Some(Cluster {
        dir,
        nginx,
        nodes,
        client,
    })
}

impl Cluster {
    /// `scripts/cluster.sh` with `args` on this cluster, on a blocking
    /// thread (the storm goes on meanwhile); what it printed.
    async fn script(&self, args: &[&str]) -> String {
        let mut command = script();
        command.args(args).env("CLUSTER_DIR", self.dir.path());
        let out = actix_web::rt::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("scripts/cluster.sh runs");
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "cluster.sh {args:?}: {printed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        printed
    }

    /// A file of the cluster's folder, trimmed.
    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs `sql` in the cluster's database; what `psql` printed, unaligned.
    async fn sql(&self, sql: &str) -> String {
        let mut psql = Command::new(format!("{}/psql", self.file("postgres.bin")));
        psql.args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.file("postgres.url"));
        let out = actix_web::rt::task::spawn_blocking(move || psql.output())
            .await
            .unwrap()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn send(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let request = self.client.request(method, format!("{base}{path}"));
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .expect("an answer");
        let bytes = response.body().await.expect("a body");
        (
            response.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Through nginx.
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(&self.nginx, method, path, body).await
    }

    /// A metric of each of the first three instances, in order.
    async fn metric(&self, name: &str) -> Vec<f64> {
        let mut values = Vec::new();
        for node in &self.nodes {
            values.push(self.metric_of(node, name).await);
        }
        values
    }

    /// A metric of the instance at `node`.
    async fn metric_of(&self, node: &str, name: &str) -> f64 {
        let mut response = self
            .client
            .get(format!("{node}/metrics"))
            .send()
            .await
            .unwrap();
        let text = String::from_utf8(response.body().await.unwrap().to_vec()).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }
}

impl Cluster {
    /// A stream at `url`, once the instance takes it (a hand-off may be under way: 503).
    async fn stream(&self, url: &str, headers: &[(&str, &str)]) -> EventReader {
        for _ in 0..100 {
            let stream = EventReader::open(&self.client, url, headers).await;
            if stream.status != 503 {
                return stream;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{url}: 503 for 10 s");
    }

    /// A POST straight at `node`, again while a hand-off answers 503.
    async fn post_at(&self, node: &str, path: &str, body: Value) -> (u16, Value) {
        for _ in 0..100 {
            let answer = self.send(node, "POST", path, Some(body.clone())).await;
            if answer.0 != 503 {
                return answer;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{node}{path}: 503 for 10 s");
    }
}

/// A stream is served by its event's owner: opened at an instance, it
/// brings the event there; when the event is handed to another instance,
/// it ends, and its client, reconnecting with `Last-Event-ID`, hears at
/// once what it missed from the new owner.
async fn a_stream_follows_its_event_to_the_owner(cluster: &Cluster) {
    let wait = Duration::from_secs(10);
    let body = json!({"eventId": "live", "totalTickets": 5});
    assert_eq!(cluster.api("POST", "/api/events", Some(body)).await.0, 201);
    let (first, second) = (&cluster.nodes[0], &cluster.nodes[1]);
    let url = |node: &str| format!("{node}/api/events/live/stream");
    let mut stream = cluster.stream(&url(first), &[]).await;
    assert_eq!(stream.status, 200);
    let seen = stream.next_event(wait).await.expect("the status");
    let booking = json!({"userId": "a"});
    let booked = cluster
        .post_at(second, "/api/events/live/bookings", booking)
        .await;
    assert_eq!(booked.0, 201, "{booked:?}");
    assert!(stream.next_event(wait).await.is_none());
    assert!(stream.ended, "the stream at the former owner ended");
    let mut stream = cluster
        .stream(&url(second), &[("last-event-id", &seen.id)])
        .await;
    let caught_up = stream.next_event(wait).await.expect("what it missed");
    assert_eq!(caught_up.data["bookedTickets"], 1, "{caught_up:?}");
    let booking = json!({"userId": "b"});
    let booked = cluster
        .post_at(second, "/api/events/live/bookings", booking)
        .await;
    assert_eq!(booked.0, 201, "{booked:?}");
    let next = stream
        .next_event(wait)
        .await
        .expect("the owner's next change");
    assert_eq!(next.data["bookedTickets"], 2, "{next:?}");
}

/// Positions of the waiting answers, sorted; and how many were booked.
fn tally(answers: &[(u16, Value)]) -> (usize, Vec<u64>) {
    let booked = answers
        .iter()
        .filter(|(_, body)| body["status"] == "booked")
        .count();
    let mut positions: Vec<u64> = answers
        .iter()
        .filter_map(|(_, body)| body["position"].as_u64())
        .collect();
    positions.sort_unstable();
    (booked, positions)
}

#[actix_web::test]
async fn three_instances_behind_nginx() {
    let Some(cluster) = cluster() else {
        return;
    };
    the_booking_contract_holds(&cluster).await;
    a_stream_follows_its_event_to_the_owner(&cluster).await;
    // Storms over EVENTS events of TICKETS tickets each, created now.
    for e in 0..EVENTS {
        let body = json!({"eventId": format!("s{e}"), "totalTickets": TICKETS});
        assert_eq!(cluster.api("POST", "/api/events", Some(body)).await.0, 201);
    }
    let mut acknowledged = Vec::new();
    an_instance_added_and_removed_takes_events_and_gives_them_back(&cluster, &mut acknowledged)
        .await;
    terminated_sessions_acknowledge_nothing_unstored(&cluster, &mut acknowledged).await;
    a_killed_instance_and_a_restarted_postgres_lose_nothing(&cluster, &mut acknowledged).await;
    // Nothing acknowledged in any storm was lost in a later one.
    verify(&cluster, &acknowledged, Duration::from_secs(15)).await;
    no_event_was_decided_by_two_owners_at_once(&cluster).await;
}

/// Enough that an added instance's place on nginx's hash ring takes some
/// of them whatever its port: with 12 it took none in about 3% of runs.
const EVENTS: usize = 48;
const TICKETS: u64 = 20;

async fn the_booking_contract_holds(cluster: &Cluster) {
    // The contract through nginx, old routes and new.
    let (status, _) = cluster
        .api(
            "POST",
            "/api/initialize",
            Some(json!({"eventId": 7, "totalTickets": 1})),
        )
        .await;
    assert_eq!(status, 201);
    let (_, booked) = cluster
        .api(
            "POST",
            "/api/book",
            Some(json!({"eventId": 7, "userId": "a"})),
        )
        .await;
    assert_eq!(booked["status"], "booked");
    let (status, waiting) = cluster
        .api(
            "POST",
            "/api/events/7/bookings",
            Some(json!({"userId": "b"})),
        )
        .await;
    assert_eq!((status, &waiting["position"]), (201, &json!(1)));
    let (_, cancelled) = cluster
        .api(
            "POST",
            "/api/cancel",
            Some(json!({"eventId": "7", "userId": "a"})),
        )
        .await;
    assert_eq!(cancelled["status"], "reassigned");
    let (_, standing) = cluster.api("GET", "/api/status/7/b", None).await;
    assert_eq!(standing["status"], "booked");
    let (_, counts) = cluster.api("GET", "/api/events/7", None).await;
    assert_eq!(
        (&counts["bookedTickets"], &counts["waitingListCount"]),
        (&json!(1), &json!(0))
    );

    // nginx sent every one of those (bodies and paths, 7 and "7") to one
    // instance: the event was activated once and never handed over.
    assert_eq!(
        cluster
            .metric("booking_event_activations_total")
            .await
            .iter()
            .sum::<f64>(),
        1.0
    );
    assert_eq!(
        cluster
            .metric("booking_event_passivations_total")
            .await
            .iter()
            .sum::<f64>(),
        0.0
    );

    // 1,000 simultaneous bookings of 100 tickets through nginx.
    cluster
        .api(
            "POST",
            "/api/events",
            Some(json!({"eventId": "drop", "totalTickets": 100})),
        )
        .await;
    let answers = join_all((0..1000).map(|i| {
        cluster.api(
            "POST",
            "/api/book",
            Some(json!({"eventId": "drop", "userId": format!("u{i}")})),
        )
    }))
    .await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let (booked, positions) = tally(&answers);
    assert_eq!(booked, 100);
    assert_eq!(positions, (1..=900).collect::<Vec<_>>());

    // 300 more, straight at all three instances: the event moves between
    // them (hand-offs); a request refused meanwhile (503) is retried, as a
    // client would. Every one is decided exactly once.
    cluster
        .api(
            "POST",
            "/api/events",
            Some(json!({"eventId": "spread", "totalTickets": 30})),
        )
        .await;
    let answers = join_all((0..300).map(|i| {
        let cluster = &cluster;
        async move {
            let node = &cluster.nodes[i % 3];
            let body = json!({"eventId": "spread", "userId": format!("v{i}")});
            for _ in 0..300 {
                let answer = cluster
                    .send(node, "POST", "/api/book", Some(body.clone()))
                    .await;
                if answer.0 != 503 {
                    return answer;
                }
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("v{i} refused for 30 s")
        }
    }))
    .await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let (booked, positions) = tally(&answers);
    assert_eq!(booked, 30);
    assert_eq!(positions, (1..=270).collect::<Vec<_>>());
    let (_, counts) = cluster.api("GET", "/api/status/spread", None).await;
    assert_eq!(
        (&counts["bookedTickets"], &counts["waitingListCount"]),
        (&json!(30), &json!(270))
    );
}

/// A storm's progress, shared with what runs beside it.
#[derive(Default)]
struct StormProgress {
    /// Bookings acknowledged (2xx) so far.
    acknowledged: AtomicUsize,
    /// Set to end the storm: no request is sent after it.
    stop: AtomicBool,
}

impl StormProgress {
    /// Resolves once `more` bookings were acknowledged after this call;
    /// fails after 60 s.
    async fn goes_on(&self, more: usize) {
        let target = self.acknowledged.load(Ordering::Relaxed) + more;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.acknowledged.load(Ordering::Relaxed) < target {
            assert!(
                std::time::Instant::now() < deadline,
                "the storm acknowledged fewer than {more} bookings in 60 s"
            );
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets the storm acknowledge `more` bookings, then ends it: after a
    /// disruption, so that the check of what it acknowledged is not empty.
    async fn ends_after(&self, more: usize) {
        self.goes_on(more).await;
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Books users (`prefix` and a number) over the storms' events through
/// nginx, 32 at a time, until `load.stop`; returns the acknowledged
/// bookings (event, user, answer).
async fn storm(
    cluster: &Cluster,
    prefix: &str,
    load: &StormProgress,
) -> Vec<(String, String, Value)> {
    use futures::StreamExt;
    let mut acknowledged = Vec::new();
    let mut answers = futures::stream::iter(0..)
        .take_while(|_| std::future::ready(!load.stop.load(Ordering::Relaxed)))
        .map(|i| {
            let (event, user) = (format!("s{}", i % EVENTS), format!("{prefix}{i}"));
            async move {
                let body = json!({"eventId": event, "userId": user});
                let request = cluster.client.post(format!("{}/api/book", cluster.nginx));
                let answer = match request.send_json(&body).await {
                    Ok(mut response) => {
                        let status = response.status().as_u16();
                        let body = response.body().await.ok();
                        body.and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                            .map(|body| (status, body))
                    }
                    Err(_) => None,
                };
                if answer.as_ref().is_some_and(|(status, _)| *status == 200) {
                    load.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                (event, user, answer)
            }
        })
        .buffer_unordered(32);
    let mut refused = 0;
    while let Some((event, user, answer)) = answers.next().await {
        match answer {
            Some((200, body)) => acknowledged.push((event, user, body)),
            // Refused (503), an instance gone from under nginx (502), or
            // cut off by a kill: not acknowledged, may or may not be stored.
            Some((502 | 503, _)) | None => refused += 1,
            Some(other) => panic!("{other:?}"),
        }
    }
    eprintln!(
        "storm {prefix}: {} acknowledged, {refused} not",
        acknowledged.len()
    );
    acknowledged
}

/// Every acknowledged booking is there, no event oversold, and each
/// event's waiting list numbered 1..n: read through nginx, polling while an
/// event is refused (503) for up to `within`.
async fn verify(cluster: &Cluster, acknowledged: &[(String, String, Value)], within: Duration) {
    use futures::StreamExt;
    let deadline = std::time::Instant::now() + within;
    let get = |path: String| async move {
        loop {
            let answer = cluster.api("GET", &path, None).await;
            if answer.0 != 503 {
                return answer;
            }
            assert!(std::time::Instant::now() < deadline, "{path}: {answer:?}");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    };
    for e in 0..EVENTS {
        let (status, counts) = get(format!("/api/status/s{e}")).await;
        assert_eq!(status, 200, "{counts:?}");
        assert!(
            counts["bookedTickets"].as_u64().unwrap() <= TICKETS,
            "{counts:?}"
        );
        let (_, page) = get(format!("/api/events/s{e}/waiting-list?limit=1000")).await;
        let positions: Vec<u64> = page["waiting"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["position"].as_u64().unwrap())
            .collect();
        assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
        assert_eq!(counts["waitingListCount"], positions.len());
    }
    let mut standings = futures::stream::iter(acknowledged)
        .map(|(event, user, answer)| async move {
            let (status, standing) = get(format!("/api/status/{event}/{user}")).await;
            (event, user, answer, status, standing)
        })
        .buffer_unordered(32);
    while let Some((event, user, answer, status, standing)) = standings.next().await {
        assert_eq!(
            status, 200,
            "{event}/{user} acknowledged {answer}, now {standing}"
        );
        assert_ne!(standing["status"], "cancelled", "{event}/{user}");
    }
}

/// A fourth instance joins nginx during a storm, and leaves once it took
/// an event over (a hand-off): its events go back, nothing acknowledged is
/// lost.
async fn an_instance_added_and_removed_takes_events_and_gives_them_back(
    cluster: &Cluster,
    acknowledged: &mut Vec<(String, String, Value)>,
) {
    let load = StormProgress::default();
    let (booked, ()) = futures::join!(storm(cluster, "m", &load), async {
        load.goes_on(300).await;
        let added = cluster.script(&["add"]).await;
        let (number, url) = added
            .lines()
            .find_map(|line| line.strip_prefix("ADDED "))
            .and_then(|added| added.split_once(' '))
            .unwrap_or_else(|| panic!("{added}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while cluster
            .metric_of(url, "booking_event_activations_total")
            .await
            == 0.0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the added instance took no event in 15 s"
            );
            load.goes_on(10).await;
        }
        load.goes_on(300).await;
        cluster.script(&["remove", number]).await;
        load.ends_after(300).await;
    });
    verify_and_keep(acknowledged, booked, cluster).await;
}

/// `pg_terminate_backend` of every session of one instance mid-storm: it
/// acknowledges nothing it did not store, then serves again.
async fn terminated_sessions_acknowledge_nothing_unstored(
    cluster: &Cluster,
    acknowledged: &mut Vec<(String, String, Value)>,
) {
    let load = StormProgress::default();
    let (booked, ()) = futures::join!(storm(cluster, "t", &load), async {
        load.goes_on(300).await;
        // Its writer's session is among them: the one that holds its owner lock.
        let ended = cluster
            .sql(
                "SELECT count(pg_terminate_backend(pid)) FILTER (WHERE EXISTS (
                     SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory'))
                 FROM pg_stat_activity a WHERE application_name = 'node-1'",
            )
            .await;
        assert_ne!(
            ended.trim(),
            "0",
            "node-1's writer was not among its sessions"
        );
        load.ends_after(300).await;
    });
    verify_and_keep(acknowledged, booked, cluster).await;
    // It takes events again: straight at it, an event it may not own.
    booked_at(cluster, &cluster.nodes[0], "after-terminate").await;
}

/// Verifies a storm's acknowledged bookings, then keeps them for the
/// check of all at the end.
async fn verify_and_keep(
    acknowledged: &mut Vec<(String, String, Value)>,
    booked: Vec<(String, String, Value)>,
    cluster: &Cluster,
) {
    verify(cluster, &booked, Duration::from_secs(15)).await;
    acknowledged.extend(booked);
}

/// `kill -9` of an instance mid-storm, then PostgreSQL restarted mid-storm.
async fn a_killed_instance_and_a_restarted_postgres_lose_nothing(
    cluster: &Cluster,
    acknowledged: &mut Vec<(String, String, Value)>,
) {
    // Its events are served by the others within 15 s (verify's bound).
    let load = StormProgress::default();
    let (booked, ()) = futures::join!(storm(cluster, "k", &load), async {
        load.goes_on(300).await;
        let kill = Command::new("kill")
            .args(["-KILL", &cluster.file("node-2.pid")])
            .status();
        assert!(kill.unwrap().success());
        load.ends_after(300).await;
    });
    verify_and_keep(acknowledged, booked, cluster).await;

    // Refusals while it is down, nothing acknowledged lost, service back
    // without a restart of the instances.
    let load = StormProgress::default();
    let (booked, ()) = futures::join!(storm(cluster, "r", &load), async {
        load.goes_on(300).await;
        let pg_ctl = Command::new(format!("{}/pg_ctl", cluster.file("postgres.bin")));
        let mut pg_ctl = as_user(pg_ctl, running_as_root());
        // Its log to the file: the new server would hold a pipe open for ever.
        pg_ctl
            .arg("-D")
            .arg(cluster.dir.path().join("postgres/data"))
            .arg("-l")
            .arg(cluster.dir.path().join("postgres/postgres.log"))
            .args(["-m", "fast", "-w", "restart"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let restart = actix_web::rt::task::spawn_blocking(move || pg_ctl.status());
        assert!(restart.await.unwrap().unwrap().success());
        load.ends_after(300).await;
    });
    verify_and_keep(acknowledged, booked, cluster).await;
    booked_at(cluster, &cluster.nginx, "after-restart").await;
}

/// Books `user` at event `s0` through `base`, retrying refusals (503) for
/// up to 15 s, as a client would.
async fn booked_at(cluster: &Cluster, base: &str, user: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let body = json!({"eventId": "s0", "userId": user});
        let (status, answer) = cluster.send(base, "POST", "/api/book", Some(body)).await;
        if status == 200 {
            return;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(std::time::Instant::now() < deadline, "{answer}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fence, read from the committed log: along each event's rows the
/// number of the claim under which they were committed never goes down
/// (schema version 2), so no two owners' changes interleave; and the
/// storms did move events between owners.
async fn no_event_was_decided_by_two_owners_at_once(cluster: &Cluster) {
    let rows = cluster
        .sql("SELECT event_id, claim FROM order_log ORDER BY event_id, seq")
        .await;
    let mut owners: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    for row in rows.lines() {
        let (event, claim) = row.split_once('|').unwrap();
        let claim = claim
            .parse()
            .unwrap_or_else(|_| panic!("{event}: a row without its claim"));
        owners.entry(event).or_default().push(claim);
    }
    for (event, claims) in &owners {
        assert!(
            claims.is_sorted(),
            "{event} was decided by two owners at once: {claims:?}"
        );
    }
    let moved = owners
        .iter()
        .filter(|(event, claims)| {
            let stormed = event
                .strip_prefix('s')
                .is_some_and(|n| n.parse::<usize>().is_ok());
            stormed && claims.first() != claims.last()
        })
        .count();
    assert!(
        moved >= EVENTS / 2,
        "only {moved} events were owned more than once"
    );
}
