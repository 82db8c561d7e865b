//! Every kind of malformed request gets a 4xx JSON error naming the problem,
//! and changes nothing.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Answer, TestApp};

const JSON: Option<&str> = Some("application/json");

fn assert_invalid(answer: &Answer, status: u16, mentions: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {:?}", answer.body);
    assert!(
        answer.content_type.starts_with("application/json"),
        "{what}: {}",
        answer.content_type
    );
    assert_eq!(answer.body["error"], "Invalid input", "{what}");
    let code = if status == 413 {
        "payload_too_large"
    } else {
        "invalid_input"
    };
    assert_eq!(answer.body["code"], code, "{what}");
    let details = answer.body["details"].as_str().unwrap_or_default();
    assert!(
        details.contains(mentions),
        "{what}: details {details:?} should mention {mentions:?}"
    );
}

/// An event with one booking and one waiting user, to check nothing moves.
async fn prepared_app() -> TestApp {
    let app = spawn_app();
    app.initialize(json!(1), 1).await;
    app.book(json!(1), json!("holder")).await;
    app.book(json!(1), json!("waiter")).await;
    app
}

async fn assert_unchanged(app: &TestApp) {
    let status = app.status("1").await.body;
    assert_eq!(
        status,
        json!({"eventId": 1, "totalTickets": 1, "bookedTickets": 1, "availableTickets": 0, "waitingListCount": 1})
    );
    assert_eq!(
        app.get("/api/status/2").await.status,
        404,
        "no event was created"
    );
}

#[actix_web::test]
async fn bad_fields_are_named() {
    let app = prepared_app().await;
    let twenty_digits = "12345678901234567890";
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/api/book", json!({"userId": "u"}), "eventId is required"),
        ("/api/book", json!({"eventId": 1}), "userId is required"),
        (
            "/api/book",
            json!({"eventId": null, "userId": "u"}),
            "eventId",
        ),
        ("/api/book", json!({"eventId": 1, "userId": null}), "userId"),
        (
            "/api/book",
            json!({"eventId": true, "userId": "u"}),
            "eventId",
        ),
        (
            "/api/book",
            json!({"eventId": [1], "userId": "u"}),
            "eventId",
        ),
        (
            "/api/book",
            json!({"eventId": {"id": 1}, "userId": "u"}),
            "eventId",
        ),
        (
            "/api/book",
            json!({"eventId": 1.5, "userId": "u"}),
            "eventId",
        ),
        ("/api/book", json!({"eventId": 0, "userId": "u"}), "eventId"),
        (
            "/api/book",
            json!({"eventId": -1, "userId": "u"}),
            "eventId",
        ),
        (
            "/api/book",
            json!({"eventId": 1e30, "userId": "u"}),
            "eventId",
        ),
        (
            "/api/book",
            json!({"eventId": "", "userId": "u"}),
            "eventId",
        ),
        (
            "/api/book",
            json!({"eventId": "x".repeat(65), "userId": "u"}),
            "eventId",
        ),
        (
            "/api/book",
            json!({"eventId": "a/b", "userId": "u"}),
            "eventId",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": false}),
            "userId",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": ["u"]}),
            "userId",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": {"u": 1}}),
            "userId",
        ),
        ("/api/book", json!({"eventId": 1, "userId": 2.5}), "userId"),
        ("/api/book", json!({"eventId": 1, "userId": -3}), "userId"),
        ("/api/book", json!({"eventId": 1, "userId": ""}), "userId"),
        (
            "/api/book",
            json!({"eventId": 1, "userId": "u".repeat(257)}),
            "userId",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": "bell\u{7}"}),
            "userId",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": "new\nline"}),
            "userId",
        ),
        (
            "/api/cancel",
            json!({"eventId": 1, "userId": true}),
            "userId",
        ),
        ("/api/cancel", json!({"userId": "holder"}), "eventId"),
        (
            "/api/initialize",
            json!({"eventId": 2}),
            "totalTickets is required",
        ),
        (
            "/api/initialize",
            json!({"totalTickets": 5}),
            "eventId is required",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2, "totalTickets": "100"}),
            "totalTickets",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2, "totalTickets": 0}),
            "totalTickets",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2, "totalTickets": -5}),
            "totalTickets",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2, "totalTickets": 1.5}),
            "totalTickets",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2, "totalTickets": 10_000_001}),
            "totalTickets",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2, "totalTickets": null}),
            "totalTickets",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2, "totalTickets": true}),
            "totalTickets",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2.5, "totalTickets": 5}),
            "eventId",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2, "totalTickets": 5.5}),
            "totalTickets",
        ),
    ];
    for (path, body, mentions) in cases {
        let answer = app.post(path, &body).await;
        assert_invalid(&answer, 400, mentions, &format!("{path} {body}"));
    }
    // Numbers too large for any integer type, written as raw text.
    let raw_cases = [
        (
            "/api/book",
            format!(r#"{{"eventId": {twenty_digits}, "userId": "u"}}"#),
            "eventId",
        ),
        (
            "/api/book",
            format!(r#"{{"eventId": 1, "userId": {twenty_digits}}}"#),
            "userId",
        ),
        (
            "/api/book",
            r#"{"eventId": 1e30, "userId": "u"}"#.to_string(),
            "eventId",
        ),
        (
            "/api/initialize",
            format!(r#"{{"eventId": 2, "totalTickets": {twenty_digits}}}"#),
            "totalTickets",
        ),
        (
            "/api/initialize",
            format!(r#"{{"eventId": 2, "totalTickets": 9{twenty_digits}}}"#),
            "totalTickets",
        ),
    ];
    for (path, raw, mentions) in raw_cases {
        assert_invalid(
            &app.post_raw(path, JSON, raw.clone()).await,
            400,
            mentions,
            &raw,
        );
    }
    assert_unchanged(&app).await;
}

#[actix_web::test]
async fn malformed_bodies_are_refused() {
    let app = prepared_app().await;
    let cases: Vec<(Option<&str>, Vec<u8>, &str)> = vec![
        (
            JSON,
            b"{\"eventId\": 1, \"userId\": \"u\"".to_vec(),
            "not valid JSON",
        ),
        (
            JSON,
            b"{\"eventId\": 1, \"userId\": \"u\" garbage}".to_vec(),
            "not valid JSON",
        ),
        (JSON, b"{eventId: 1}".to_vec(), "not valid JSON"),
        (JSON, b"".to_vec(), "empty"),
        (JSON, b"   ".to_vec(), "empty"),
        (JSON, b"null".to_vec(), "JSON object"),
        (
            JSON,
            b"[{\"eventId\": 1, \"userId\": \"u\"}]".to_vec(),
            "JSON object",
        ),
        (JSON, b"\"text\"".to_vec(), "JSON object"),
        (JSON, b"42".to_vec(), "JSON object"),
        (JSON, vec![0xff, 0xfe, 0x00], "not valid JSON"),
        (
            Some("text/plain"),
            b"{\"eventId\": 1, \"userId\": \"u\"}".to_vec(),
            "Content-Type",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"eventId=1&userId=u".to_vec(),
            "Content-Type",
        ),
    ];
    for path in ["/api/book", "/api/cancel", "/api/initialize"] {
        for (content_type, body, mentions) in &cases {
            let answer = app.post_raw(path, *content_type, body.clone()).await;
            let what = format!(
                "{path} {content_type:?} {:?}",
                String::from_utf8_lossy(body)
            );
            assert_invalid(&answer, 400, mentions, &what);
        }
    }
    assert_unchanged(&app).await;
}

#[actix_web::test]
async fn a_body_over_the_limit_is_413_with_or_without_a_length() {
    let app = prepared_app().await;
    let user = "x".repeat(10_000);
    let pieces = [r#"{"eventId": 1, "userId": ""#, &user, &user, r#""}"#];
    for path in ["/api/book", "/api/initialize"] {
        // With a Content-Length it is refused before it is read; sent in
        // chunks, once the limit is passed while it is read.
        let sized = app.post_raw(path, JSON, pieces.concat()).await;
        let chunked = app.post_chunked(path, &pieces).await;
        for (answer, sent) in [(sized, "with a length"), (chunked, "chunked")] {
            assert_invalid(&answer, 413, "16384 bytes", &format!("{path} {sent}"));
        }
    }
    assert_unchanged(&app).await;
}

#[actix_web::test]
async fn a_body_sent_in_pieces_is_read_whole() {
    let app = prepared_app().await;
    let pieces = [r#"{"eventId""#, r#": 1, "userId": "#, r#""in-pieces"}"#];
    let answer = app.post_chunked("/api/book", &pieces).await;
    assert_eq!(
        answer.body,
        json!({"status": "waiting", "userId": "in-pieces", "position": 2})
    );
}

#[actix_web::test]
async fn a_body_without_content_type_is_read_as_json() {
    let app = prepared_app().await;
    let answer = app
        .post_raw("/api/book", None, r#"{"eventId": 1, "userId": "plain"}"#)
        .await;
    assert_eq!(
        answer.body,
        json!({"status": "waiting", "userId": "plain", "position": 2})
    );
}

#[actix_web::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let app = prepared_app().await;
    for path in [
        "/",
        "/api",
        "/api/nothing",
        "/api/status",
        "/api/status/1/u/extra",
    ] {
        let answer = app.get(path).await;
        assert_eq!(
            (answer.status, answer.body),
            (
                404,
                json!({"error": "Not found", "code": "route_not_found"})
            ),
            "{path}"
        );
        assert!(answer.content_type.starts_with("application/json"));
    }
    for path in ["/api/book", "/api/cancel", "/api/initialize"] {
        let answer = app.get(path).await;
        assert_eq!(
            (answer.status, answer.body),
            (
                405,
                json!({"error": "Method not allowed", "code": "method_not_allowed"})
            ),
            "GET {path}"
        );
        assert_eq!(
            app.get(path).await.header("allow"),
            Some("POST"),
            "GET {path}"
        );
    }
    let answer = app.post("/api/status/1", &json!({})).await;
    assert_eq!(
        (answer.status, answer.header("allow")),
        (405, Some("GET, HEAD"))
    );
    assert_unchanged(&app).await;
}
