//! Three instances on one PostgreSQL behind nginx, as `scripts/cluster.sh
//! up` starts them: the contract through nginx, the routing by event (njs
//! reads the legacy routes' bodies), and simultaneous bookings through nginx
//! and straight at every instance. One cluster for the whole file.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{skip, BINARY};
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

    /// A metric of every instance, in order.
    async fn metric(&self, name: &str) -> Vec<f64> {
        let mut values = Vec::new();
        for node in &self.nodes {
            let mut response = self
                .client
                .get(format!("{node}/metrics"))
                .send()
                .await
                .unwrap();
            let text = String::from_utf8(response.body().await.unwrap().to_vec()).unwrap();
            let value = text
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .map_or(0.0, |v| v.trim().parse().unwrap());
            values.push(value);
        }
        values
    }
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
async fn three_instances_behind_nginx_keep_the_booking_contract() {
    let Some(cluster) = cluster() else {
        return;
    };

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

/// Books `users` users (`prefix` and a number) over `events` events through nginx, 32 at a time,
/// and calls `midway` once half of them were answered; returns the
/// acknowledged bookings (event, user, answer).
async fn storm(
    cluster: &Cluster,
    prefix: &str,
    events: usize,
    users: usize,
    midway: impl FnOnce(),
) -> Vec<(String, String, Value)> {
    use futures::StreamExt;
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let mut midway = Some(midway);
    let mut acknowledged = Vec::new();
    let mut answers = futures::stream::iter(0..users)
        .map(|i| {
            let (event, user) = (format!("s{}", i % events), format!("{prefix}{i}"));
            let answered = &answered;
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
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (event, user, answer)
            }
        })
        .buffer_unordered(32);
    while let Some((event, user, answer)) = answers.next().await {
        if answered.load(std::sync::atomic::Ordering::Relaxed) >= users / 2 {
            if let Some(midway) = midway.take() {
                midway();
            }
        }
        match answer {
            Some((200, body)) => acknowledged.push((event, user, body)),
            // Refused (503) or cut off by the kill: not acknowledged, may or may not be stored.
            Some((503, _)) | None => {}
            Some(other) => panic!("{other:?}"),
        }
    }
    acknowledged
}

/// Every acknowledged booking is there, no event oversold, and each
/// event's waiting list numbered 1..n: read through nginx, polling while an
/// event is refused (503) for up to `within`.
async fn verify(
    cluster: &Cluster,
    events: usize,
    tickets: u64,
    acknowledged: &[(String, String, Value)],
    within: Duration,
) {
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
    for e in 0..events {
        let (status, counts) = get(format!("/api/status/s{e}")).await;
        assert_eq!(status, 200, "{counts:?}");
        assert!(
            counts["bookedTickets"].as_u64().unwrap() <= tickets,
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
    for (event, user, answer) in acknowledged {
        let (status, standing) = get(format!("/api/status/{event}/{user}")).await;
        assert_eq!(
            status, 200,
            "{event}/{user} acknowledged {answer}, now {standing}"
        );
        assert_ne!(standing["status"], "cancelled", "{event}/{user}");
    }
}

#[actix_web::test]
async fn a_killed_instance_and_a_restarted_postgres_lose_nothing() {
    let Some(cluster) = cluster() else {
        return;
    };
    const EVENTS: usize = 12;
    const TICKETS: u64 = 20;
    for e in 0..EVENTS {
        let body = json!({"eventId": format!("s{e}"), "totalTickets": TICKETS});
        assert_eq!(cluster.api("POST", "/api/events", Some(body)).await.0, 201);
    }

    // kill -9 of an instance in the middle of a storm over every event.
    let pid = std::fs::read_to_string(cluster.dir.path().join("node-2.pid")).unwrap();
    let killed = storm(&cluster, "k", EVENTS, 600, || {
        let kill = Command::new("kill").args(["-KILL", pid.trim()]).status();
        assert!(kill.unwrap().success());
    })
    .await;
    eprintln!("kill -9 mid-storm: {} of 600 acknowledged", killed.len());
    assert!(killed.len() >= 300, "{} acknowledged", killed.len());
    // Its events are served by the others within 15 s, and nothing acknowledged is lost.
    verify(&cluster, EVENTS, TICKETS, &killed, Duration::from_secs(15)).await;

    // PostgreSQL restarted in the middle of another storm: refusals while
    // it is down, nothing acknowledged lost, service back without a restart.
    let pgbin = std::fs::read_to_string(cluster.dir.path().join("postgres.bin")).unwrap();
    let data = cluster.dir.path().join("postgres/data");
    let log = cluster.dir.path().join("postgres/postgres.log");
    let restarted = storm(&cluster, "r", EVENTS, 600, || {
        let pg_ctl = Command::new(format!("{}/pg_ctl", pgbin.trim()));
        let mut pg_ctl = as_user(pg_ctl, running_as_root());
        // Its log to the file: the new server would hold a pipe open for ever.
        let restart = pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-m", "fast", "-w", "restart"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        assert!(restart.status().unwrap().success());
    })
    .await;
    eprintln!(
        "PostgreSQL restarted mid-storm: {} of 600 acknowledged",
        restarted.len()
    );
    let all: Vec<_> = killed.into_iter().chain(restarted).collect();
    verify(&cluster, EVENTS, TICKETS, &all, Duration::from_secs(15)).await;
    let (status, _) = cluster
        .api(
            "POST",
            "/api/book",
            Some(json!({"eventId": "s0", "userId": "after"})),
        )
        .await;
    assert_eq!(status, 200);
}
