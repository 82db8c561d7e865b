//! `HEAD` wherever there is `GET`: the same status and headers, no body.

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
