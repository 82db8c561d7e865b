//! `HEAD` wherever there is `GET`: the same status and headers, no body.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};

/// The headers a `HEAD` must share with its `GET`.
const SHARED: [&str; 4] = [
    "content-type",
    "content-length",
    "allow",
    "www-authenticate",
];

async fn assert_head_matches_get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> u16 {
    let get = app.request("GET", path, headers, None).await;
    let head = app.request("HEAD", path, headers, None).await;
    assert_eq!(head.status, get.status, "HEAD {path}");
    for name in SHARED {
        // The metrics page grows with every request, this GET's included.
        if !(path == "/metrics" && name == "content-length") {
            assert_eq!(head.header(name), get.header(name), "HEAD {path}: {name}");
        }
    }
    assert!(head.header("content-length").is_some(), "HEAD {path}");
    assert!(
        head.raw.is_empty(),
        "HEAD {path} has a body: {:?}",
        head.raw
    );
    assert!(!get.raw.is_empty(), "GET {path} has a body");
    get.status
}

#[actix_web::test]
async fn every_get_route_answers_head_with_the_same_status_and_headers_and_no_body() {
    let app = spawn_app_with(&[("BOOKING_ADMIN_KEYS", "admin-key")]);
    let key = [("Authorization", "Bearer admin-key")];
    let created = app
        .request(
            "POST",
            "/api/initialize",
            &key,
            Some(&json!({"eventId": 1, "totalTickets": 1})),
        )
        .await;
    assert_eq!(created.status, 201);
    let booked = app
        .request(
            "POST",
            "/api/book",
            &key,
            Some(&json!({"eventId": 1, "userId": "u"})),
        )
        .await;
    assert_eq!(booked.status, 200);
    let cases = [
        ("/health", &[][..], 200),
        ("/ready", &[][..], 200),
        ("/metrics", &[][..], 200),
        ("/api/openapi.json", &[][..], 200),
        ("/docs/", &[][..], 200),
        ("/api/status/1", &key[..], 200),
        ("/api/status/1/u", &key[..], 200),
        ("/api/status/2", &key[..], 404),
        ("/api/status/1/nobody", &key[..], 404),
        ("/api/status/a%20b", &key[..], 400),
        // Refused alike: no key, and a path that is no route.
        ("/api/status/1", &[][..], 401),
        ("/nowhere", &[][..], 404),
    ];
    for (path, headers, status) in cases {
        assert_eq!(
            assert_head_matches_get(&app, path, headers).await,
            status,
            "{path}"
        );
    }
    // Not where there is no GET: the same 405 as a GET gets.
    for path in ["/api/book", "/api/cancel", "/api/initialize"] {
        let head = app.request("HEAD", path, &key, None).await;
        assert_eq!(
            (head.status, head.header("allow")),
            (405, Some("POST")),
            "{path}"
        );
    }
    // And a HEAD changes nothing.
    let status = app.request("GET", "/api/status/1", &key, None).await;
    assert_eq!(status.body["bookedTickets"], 1);
}

/// The bytes a server sends to `requests` on one connection, until it closes it.
fn on_the_wire(address: &str, requests: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(requests.as_bytes()).unwrap();
    let mut wire = Vec::new();
    stream.read_to_end(&mut wire).unwrap();
    String::from_utf8(wire).unwrap()
}

#[actix_web::test]
async fn a_head_answer_has_no_body_on_the_wire() {
    // awc drops whatever follows the head of a HEAD answer: read the bytes.
    let app = spawn_app_with(&[]);
    app.initialize(json!(1), 1).await;
    let address = app.address.trim_start_matches("http://").to_string();
    for path in ["/health", "/api/status/1", "/api/status/1/nobody"] {
        let request = |method: &str| {
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        };
        let head = on_the_wire(&address, &request("HEAD"));
        let get = on_the_wire(&address, &request("GET"));
        let (get_head, body) = get.split_once("\r\n\r\n").expect("a GET head");
        assert!(!body.is_empty(), "GET {path}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "HEAD {path} sent a body: {head:?}"
        );
        let length = |head: &str| {
            head.lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map(str::to_owned)
        };
        assert_eq!(head[..12], get_head[..12], "{path}: the same status");
        assert_eq!(length(&head), length(get_head), "{path}: the GET's length");
        // A GET pipelined after the HEAD: the answers, or the connection
        // closed (see `routes::head::Omitted`), but never a body where the
        // next answer's head belongs.
        let pipelined = on_the_wire(
            &address,
            &format!(
                "HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n{}",
                request("GET")
            ),
        );
        let after = pipelined
            .split_once("\r\n\r\n")
            .map_or("", |(_, after)| after);
        assert!(
            after.is_empty() || after.starts_with("HTTP/1.1 "),
            "{path}: after the HEAD's head: {after:?}"
        );
    }
}
