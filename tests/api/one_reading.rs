//! A body has exactly one reading: no member named twice, and one policy for
//! every integer field, whose refusals name the rule that was broken.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

const JSON: Option<&str> = Some("application/json");

/// Event 1 with its only ticket booked by "holder" and "waiter" in the queue.
async fn prepared_app() -> TestApp {
    let app = spawn_app();
    assert_eq!(app.initialize(json!(1), 1).await.status, 201);
    app.book(json!(1), json!("holder")).await;
    app.book(json!(1), json!("waiter")).await;
    app
}

async fn assert_unchanged(app: &TestApp) {
    assert_eq!(
        app.status("1").await.body,
        json!({"eventId": 1, "totalTickets": 1, "bookedTickets": 1, "availableTickets": 0, "waitingListCount": 1})
    );
    for event in ["2", "121", "122"] {
        assert_eq!(app.status(event).await.status, 404, "event {event}");
    }
    for user in ["a", "b", "u3"] {
        assert_eq!(app.user_status("1", user).await.status, 404, "user {user}");
    }
}

#[actix_web::test]
async fn a_member_named_twice_anywhere_is_refused_on_every_route_and_changes_nothing() {
    let app = prepared_app().await;
    let cases = [
        (
            "/api/book",
            r#"{"eventId": 1, "userId": "a", "userId": "b"}"#,
            "userId",
        ),
        (
            "/api/book",
            r#"{"eventId": 121, "eventId": 122, "userId": "u3"}"#,
            "eventId",
        ),
        // The same value twice is still two readings of one name.
        (
            "/api/book",
            r#"{"eventId": 1, "eventId": 1, "userId": "a"}"#,
            "eventId",
        ),
        // Names are compared as decoded: \u0049 is "I".
        (
            "/api/book",
            r#"{"eventId": 1, "userId": "a", "user\u0049d": "b"}"#,
            "userId",
        ),
        // Anywhere in the body: in a member no route reads, in an array.
        (
            "/api/book",
            r#"{"eventId": 1, "userId": "a", "extra": {"k": 1, "k": 2}}"#,
            "k",
        ),
        (
            "/api/book",
            r#"{"eventId": 1, "userId": "a", "extra": [{"k": 1}, {"k": 1, "k": 1}]}"#,
            "k",
        ),
        (
            "/api/cancel",
            r#"{"eventId": 1, "userId": "holder", "userId": "a"}"#,
            "userId",
        ),
        (
            "/api/cancel",
            r#"{"userId": "waiter", "eventId": 1, "userId": "waiter"}"#,
            "userId",
        ),
        (
            "/api/initialize",
            r#"{"eventId": 2, "totalTickets": 5, "totalTickets": 6}"#,
            "totalTickets",
        ),
        (
            "/api/initialize",
            r#"{"eventId": 121, "eventId": 2, "totalTickets": 5}"#,
            "eventId",
        ),
    ];
    for (route, body, name) in cases {
        let answer = app.post_raw(route, JSON, body).await;
        assert_eq!(
            (answer.status, &answer.body),
            (
                400,
                &json!({"error": "Invalid input", "code": "invalid_input", "details": format!("duplicate field `{name}`")})
            ),
            "{route} {body}"
        );
    }
    assert_unchanged(&app).await;
    assert_eq!(
        app.user_status("1", "holder").await.body["status"],
        "booked"
    );
    assert_eq!(app.user_status("1", "waiter").await.body["position"], 1);
}

#[actix_web::test]
async fn a_refused_duplicate_leaves_its_idempotency_key_unused() {
    let app = prepared_app().await;
    let key = [
        ("Idempotency-Key", "dup-1"),
        ("Content-Type", "application/json"),
    ];
    let refused = app
        .request_raw(
            "POST",
            "/api/book",
            &key,
            r#"{"eventId": 1, "userId": "a", "userId": "b"}"#,
        )
        .await;
    assert_eq!(refused.status, 400);
    // Not a replay of the refusal, nor a 422 for another body: the key runs now.
    let booked = app
        .request_raw(
            "POST",
            "/api/book",
            &key,
            r#"{"eventId": 1, "userId": "b"}"#,
        )
        .await;
    assert_eq!(booked.status, 200, "{:?}", booked.body);
    assert_eq!(
        booked.body,
        json!({"status": "waiting", "userId": "b", "position": 2})
    );
    assert_eq!(booked.header("idempotent-replayed"), None);
}

#[actix_web::test]
async fn integral_spellings_are_the_integer_everywhere_and_come_back_canonical() {
    let app = spawn_app();
    let created = app
        .post_raw(
            "/api/initialize",
            JSON,
            r#"{"eventId": 1.0, "totalTickets": 5e0}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        String::from_utf8(created.raw).unwrap(),
        r#"{"message":"Event initialized","eventId":1,"totalTickets":5}"#
    );
    assert_eq!(app.status("1").await.body["totalTickets"], 5);
    // The same event, however it is spelled: a second creation is a conflict.
    let again = app
        .post_raw(
            "/api/initialize",
            JSON,
            r#"{"eventId": 0.1e1, "totalTickets": 3}"#,
        )
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);

    let booked = app
        .post_raw("/api/book", JSON, r#"{"eventId": 10e-1, "userId": 1e2}"#)
        .await;
    assert_eq!(
        String::from_utf8(booked.raw).unwrap(),
        r#"{"status":"booked","userId":100}"#
    );
    // User 1e2 is user 100, as a number and as its decimal text.
    for same in [json!(100), json!(100.0), json!("100")] {
        let answer = app.book(json!(1), same.clone()).await;
        assert_eq!(answer.status, 409, "{same}: {:?}", answer.body);
    }
    // Read as JavaScript reads them: the nearest double is the integer.
    for (spelling, integer) in [
        ("9007199254740991.0", 9_007_199_254_740_991u64),
        ("9211975.99999999917", 9_211_976),
    ] {
        let body = format!(r#"{{"eventId": 1, "userId": {spelling}}}"#);
        let booked = app.post_raw("/api/book", JSON, body).await;
        assert_eq!(booked.body["userId"], json!(integer), "{spelling}");
        assert_eq!(app.book(json!(1), json!(integer)).await.status, 409);
    }
    let status = app.user_status("1", "100").await;
    assert_eq!(
        status.body,
        json!({"eventId": 1, "userId": "100", "status": "booked"})
    );
    let cancelled = app
        .post_raw("/api/cancel", JSON, r#"{"eventId": 1.0, "userId": 100.0}"#)
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["userId"], json!(100));
    assert!(!String::from_utf8(cancelled.raw).unwrap().contains("100.0"));
    assert_eq!(app.counts("1").await, (2, 0));
}

#[actix_web::test]
async fn every_integer_field_refusal_names_the_rule_broken() {
    let app = prepared_app().await;
    let max = "9007199254740991";
    // (field, spelling, what the details must say, what they must not)
    let cases: Vec<(&str, &str, Vec<&str>, &str)> = vec![
        (
            "eventId",
            "9007199254740993",
            vec!["too large", max],
            "negative",
        ),
        (
            "eventId",
            "9007199254740992.0",
            vec!["too large", max],
            "negative",
        ),
        (
            "eventId",
            "18446744073709551616",
            vec!["too large", max],
            "negative",
        ),
        ("eventId", "1e20", vec!["too large", max], "whole"),
        // Beyond any double: not a number any field could hold.
        (
            "eventId",
            "1e400",
            vec!["too large", "1e400"],
            "not valid JSON",
        ),
        ("userId", "-1e400", vec!["negative", "-1e400"], "too large"),
        // Read to the nearest double, as JavaScript reads it: these are not whole.
        (
            "userId",
            "4503599627370495.5",
            vec!["whole number"],
            "negative",
        ),
        (
            "userId",
            "9.999999999999999",
            vec!["whole number"],
            "negative",
        ),
        ("eventId", "-1", vec!["negative"], "too large"),
        (
            "eventId",
            "-9223372036854775809",
            vec!["negative"],
            "too large",
        ),
        ("eventId", "-1.5", vec!["negative"], "too large"),
        ("eventId", "0", vec!["zero"], "negative"),
        ("eventId", "0.0", vec!["zero"], "negative"),
        ("eventId", "-0", vec!["zero"], "negative"),
        ("eventId", "1.5", vec!["whole number"], "negative"),
        ("eventId", "1e-1", vec!["whole number"], "negative"),
        (
            "userId",
            "9007199254740993",
            vec!["too large", max],
            "negative",
        ),
        ("userId", "-1", vec!["negative"], "too large"),
        ("userId", "2.5", vec!["whole number"], "negative"),
        ("userId", "1e300", vec!["too large", max], "negative"),
        (
            "totalTickets",
            "10000001",
            vec!["too large", "10000000"],
            "negative",
        ),
        ("totalTickets", "1e7", vec![], "too large"), // exactly the bound: allowed
        (
            "totalTickets",
            "9007199254740993",
            vec!["too large", "10000000"],
            "negative",
        ),
        ("totalTickets", "-5", vec!["negative"], "too large"),
        ("totalTickets", "0", vec!["zero"], "negative"),
        ("totalTickets", "2.5", vec!["whole number"], "negative"),
    ];
    for (field, spelling, says, not) in cases {
        let (route, body) = match field {
            "totalTickets" => (
                "/api/initialize",
                format!(r#"{{"eventId": "t-{spelling}", "totalTickets": {spelling}}}"#),
            ),
            "eventId" => (
                "/api/book",
                format!(r#"{{"eventId": {spelling}, "userId": "a"}}"#),
            ),
            _ => (
                "/api/book",
                format!(r#"{{"eventId": 1, "userId": {spelling}}}"#),
            ),
        };
        let answer = app.post_raw(route, JSON, body.clone()).await;
        if says.is_empty() {
            assert_eq!(answer.status, 201, "{body}: {:?}", answer.body);
            continue;
        }
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        assert_eq!(answer.body["error"], "Invalid input");
        assert_eq!(answer.body["code"], "invalid_input");
        let details = answer.body["details"].as_str().unwrap_or_default();
        assert!(
            details.starts_with(field),
            "{body}: {details:?} names the field"
        );
        for said in says {
            assert!(
                details.contains(said),
                "{body}: {details:?} should say {said:?}"
            );
        }
        assert!(
            !details.contains(not),
            "{body}: {details:?} names the wrong rule"
        );
    }
    assert_unchanged(&app).await;
}

#[actix_web::test]
async fn the_api_description_states_the_number_policy() {
    let app = spawn_app();
    let document: Value = app.get("/api/openapi.json").await.body;
    let description = document["info"]["description"].as_str().unwrap_or_default();
    for stated in [
        "duplicate field `userId`",
        "`1.0`, `1e2` or `0.5e1` is that integer",
        "9007199254740991",
        "10000000",
        "NFC",
    ] {
        assert!(description.contains(stated), "{stated:?} in {description}");
    }
}

#[actix_web::test]
async fn the_error_texts_the_api_docs_quote_are_what_the_server_answers() {
    let app = prepared_app().await;
    let cases = [
        (
            "/api/book",
            json!({"eventId": 9_007_199_254_740_993u64, "userId": "a"}),
            "eventId is too large: at most 9007199254740991, not 9007199254740993",
        ),
        (
            "/api/initialize",
            json!({"eventId": 2, "totalTickets": 10_000_001}),
            "totalTickets is too large: at most 10000000, not 10000001",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": -1}),
            "userId must not be negative, not -1",
        ),
        (
            "/api/book",
            json!({"eventId": 0, "userId": "a"}),
            "eventId must not be zero",
        ),
        (
            "/api/book",
            json!({"eventId": 1.5, "userId": "a"}),
            "eventId must be a whole number, not 1.5",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": ""}),
            "userId must not be empty",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": "   "}),
            "userId must not be blank: it holds only whitespace or invisible characters",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": "\u{200b}"}),
            "userId must not be blank: it holds only whitespace or invisible characters",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": " user1"}),
            "userId must not begin or end with whitespace",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": "user1 "}),
            "userId must not begin or end with whitespace",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": "\u{200d}user1"}),
            "userId must not begin with an invisible character, not U+200D",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": "us\u{200b}er1"}),
            "userId must not contain an invisible character, not U+200B",
        ),
        (
            "/api/book",
            json!({"eventId": 1, "userId": "tab\there"}),
            "userId must not contain control characters",
        ),
    ];
    for (route, body, details) in cases {
        let answer = app.post(route, &body).await;
        assert_eq!(
            (answer.status, &answer.body),
            (
                400,
                &json!({"error": "Invalid input", "code": "invalid_input", "details": details})
            ),
            "{body}"
        );
        let api_docs = include_str!("../../docs/api.md");
        assert!(api_docs.contains(details), "docs/api.md quotes {details:?}");
    }
    assert_unchanged(&app).await;
}
