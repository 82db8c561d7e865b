//! Bounded queues, time-outs and slow clients: refuse fast, never hang.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};

/// Waits until `count` bookings of event 1 are decided (committed or not).
async fn wait_until_decided(app: &TestApp, count: u64) {
    for _ in 0..10_000 {
        let (booked, waiting) = app.counts("1").await;
        if booked + waiting >= count {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("fewer than {count} bookings were ever decided");
}

#[actix_web::test]
async fn a_full_store_queue_refuses_at_once_with_server_busy() {
    let app = spawn_app_with(&[
        ("BOOKING_STORE_BACKLOG", "2"),
        ("BOOKING_BUSY_TIMEOUT_MS", "20000"),
        ("BOOKING_REQUEST_TIMEOUT_MS", "20000"),
    ]);
    app.initialize(json!(1), 10).await;
    // Commits stall behind another connection's lock: the queue fills and stays full.
    let intruder = rusqlite::Connection::open(app.database()).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let queued = async { join_all(["a", "b"].map(|u| app.book(json!(1), json!(u)))).await };
    let refused = async {
        wait_until_decided(&app, 2).await;
        let started = Instant::now();
        let refused = app.book(json!(1), json!("c")).await;
        let took = started.elapsed();
        // Also an initialize, which needs the same queue.
        let refused_too = app.initialize(json!(2), 1).await;
        intruder.execute_batch("ROLLBACK").unwrap();
        (refused, took, refused_too)
    };
    let (queued, (refused, took, refused_too)) = futures::join!(queued, refused);

    assert_eq!(
        (refused.status, &refused.body),
        (503, &json!({"error": "Server busy", "code": "server_busy"}))
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    assert_eq!(
        refused_too.body,
        json!({"error": "Server busy", "code": "server_busy"})
    );
    // The queued ones were stored and answered; the refused ones changed nothing.
    assert!(
        queued.iter().all(|a| a.body["status"] == "booked"),
        "{queued:?}"
    );
    assert_eq!(app.counts("1").await, (2, 0));
    assert_eq!(app.user_status("1", "c").await.status, 404);
    assert_eq!(app.status("2").await.status, 404);
    let page = app.get("/metrics").await;
    let page = String::from_utf8_lossy(&page.raw);
    assert!(
        page.contains(r#"booking_mailbox_rejections_total{queue="store"} 2"#),
        "{page}"
    );
    // The queue drained: bookings go through again.
    assert_eq!(app.book(json!(1), json!("c")).await.status, 200);
}

#[actix_web::test]
async fn a_stalled_commit_times_out_with_a_clear_error() {
    let app = spawn_app_with(&[
        ("BOOKING_BUSY_TIMEOUT_MS", "20000"),
        ("BOOKING_REQUEST_TIMEOUT_MS", "300"),
    ]);
    app.initialize(json!(1), 10).await;
    let intruder = rusqlite::Connection::open(app.database()).unwrap();
    intruder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let started = Instant::now();
    let timed_out = app.book(json!(1), json!("a")).await;
    let took = started.elapsed();
    assert_eq!(timed_out.status, 503);
    assert_eq!(timed_out.body["error"], "Request timed out");
    assert_eq!(timed_out.body["code"], "request_timed_out");
    assert!(timed_out.body["details"]
        .as_str()
        .unwrap()
        .contains("may still be stored"));
    assert_eq!(timed_out.header("retry-after"), Some("1"));
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let initialize = app.initialize(json!(2), 1).await;
    assert_eq!(initialize.body["error"], "Request timed out");
    assert_eq!(initialize.body["code"], "request_timed_out");

    // Once the disk answers, what was decided is stored: the time-out said "maybe".
    intruder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(app.book(json!(1), json!("a")).await.status, 409);
    assert_eq!(app.initialize(json!(2), 1).await.status, 409);
}

/// Connects and sends `head` (part of a request), then reads what comes back.
fn send_partial_request(address: &str, head: &str, wait: Duration) -> (String, Duration) {
    let address = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[actix_web::test]
async fn a_slow_client_is_cut_off_and_does_not_hold_up_others() {
    let app = spawn_app_with(&[("BOOKING_CLIENT_REQUEST_TIMEOUT_MS", "300")]);
    let address = app.address.clone();
    // Slowloris: many connections that never finish their request head.
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || {
                send_partial_request(
                    &address,
                    "POST /api/book HTTP/1.1\r\nHost: x\r\n",
                    Duration::from_secs(10),
                )
            })
        })
        .collect();
    assert_eq!(app.get("/health").await.status, 200);
    assert_eq!(app.initialize(json!(1), 1).await.status, 201);
    for handle in slow {
        let (answer, took) = handle.join().unwrap();
        assert!(took < Duration::from_secs(5), "held for {took:?}");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
}

#[actix_web::test]
async fn sigterm_with_idle_and_slow_connections_exits_within_docker_grace() {
    let mut app = spawn_app_with(&[]);
    app.initialize(json!(1), 10).await;
    let address = app.address.trim_start_matches("http://").to_string();
    // An idle keep-alive connection, and one stuck half-way through its head.
    let mut idle = TcpStream::connect(&address).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    let mut stuck = TcpStream::connect(&address).unwrap();
    stuck.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let booking = app.try_book(json!(1), json!("a"));
    let started = Instant::now();
    let (answer, _) = futures::join!(booking, async { app.send_signal("TERM") });
    let status = app.wait_exit();
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    eprintln!("stopped {took:?} after SIGTERM");
    if answer.is_some_and(|answer| answer.status == 200) {
        app.start();
        assert_eq!(app.user_status("1", "a").await.body["status"], "booked");
    }
}
