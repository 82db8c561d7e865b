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
