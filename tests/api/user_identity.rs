//! One identity per user: user ids are normalized to Unicode NFC in bodies
//! and paths, ids that cannot be told apart from another or from nothing
//! are refused, and ids stored before normalization are normalized once.

use rusqlite::Connection;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{spawn_app, TestApp};

#[actix_web::test]
async fn canonically_equivalent_ids_are_one_user_in_bodies_and_paths() {
    let app = spawn_app();
    app.initialize(json!(119), 2).await;
    let composed = "j\u{00fc}rgen";
    let decomposed = "ju\u{0308}rgen";
    let booked = app.book(json!(119), json!(decomposed)).await;
    // The answer carries the normalized form.
    assert_eq!(booked.body, json!({"status": "booked", "userId": composed}));
    let again = app.book(json!(119), json!(composed)).await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    for path in ["ju%CC%88rgen", "j%C3%BCrgen"] {
        let standing = app.user_status("119", path).await;
        assert_eq!(
            standing.body,
            json!({"eventId": 119, "userId": composed, "status": "booked"}),
            "{path}"
        );
    }
    // U+212B ANGSTROM SIGN is U+00C5 in NFC, and U+212A KELVIN SIGN is "K".
    for (first, second) in [("\u{212B}", "\u{00C5}"), ("\u{212A}", "K")] {
        let answer = app.book(json!(119), json!(first)).await;
        assert_eq!(answer.body["userId"], second, "{first}");
        assert_eq!(
            app.book(json!(119), json!(second)).await.status,
            409,
            "{second}"
        );
    }
    // Sold out: the Ångström user waits; the same user in another spelling cannot wait twice.
    assert_eq!(app.counts("119").await, (2, 1));
    let waiting = app.book(json!(119), json!("\u{00C5}")).await;
    assert_eq!(waiting.status, 409, "{:?}", waiting.body);
    // A cancel in the other spelling cancels the one booking, and the queue moves up.
    let cancelled = app.cancel(json!(119), json!(composed)).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(app.user_status("119", "K").await.body["status"], "booked");
    assert_eq!(app.counts("119").await, (2, 0));
}

#[actix_web::test]
async fn compatibility_forms_and_case_stay_distinct_users() {
    let app = spawn_app();
    app.initialize(json!(1), 10).await;
    for user in [
        "u1",
        "\u{ff55}\u{ff11}",
        "J\u{00fc}rgen",
        "j\u{00fc}rgen",
        "\u{fb01}",
        "fi",
    ] {
        let answer = app.book(json!(1), json!(user)).await;
        assert_eq!(answer.body, json!({"status": "booked", "userId": user}));
    }
    assert_eq!(app.counts("1").await, (6, 0));
}

#[actix_web::test]
async fn ids_indistinguishable_from_another_or_from_nothing_are_refused() {
    let app = spawn_app();
    app.initialize(json!(1), 10).await;
    let cases = [
        ("", "empty"),
        ("   ", "blank"),
        ("\u{3000}", "blank"),
        ("\u{200b}", "blank"),
        ("\u{2060}\u{feff}", "blank"),
        (" \u{200b} ", "blank"),
        (" a", "whitespace"),
        ("a ", "whitespace"),
        ("\u{00a0}a", "whitespace"),
        ("a\u{2003}", "whitespace"),
        ("\u{200b}a", "invisible"),
        ("a\u{200b}", "invisible"),
        ("a\u{200d}", "invisible"),
        ("\u{fe0f}a", "invisible"),
    ];
    for (user, rule) in cases {
        let answer = app.book(json!(1), json!(user)).await;
        assert_eq!(answer.status, 400, "{user:?}: {:?}", answer.body);
        let details = answer.body["details"].as_str().unwrap_or_default();
        assert!(
            details.contains(rule),
            "{user:?}: {details:?} should say {rule}"
        );
        // The same id in a path.
        if !user.is_empty() {
            let encoded: String = user.bytes().map(|b| format!("%{b:02X}")).collect();
            let answer = app.user_status("1", &encoded).await;
            assert_eq!(answer.status, 400, "path {user:?}: {:?}", answer.body);
            let details = answer.body["details"].as_str().unwrap_or_default();
            assert!(details.contains(rule), "path {user:?}: {details:?}");
        }
    }
    assert_eq!(app.counts("1").await, (0, 0));
    // What emoji and some scripts need inside an id, or at its end, stays.
    for user in [
        "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}",
        "\u{2764}\u{FE0F}",
        "\u{0645}\u{06cc}\u{200c}\u{062e}\u{0648}\u{0627}\u{0647}\u{0645}",
    ] {
        let answer = app.book(json!(1), json!(user)).await;
        assert_eq!(answer.body, json!({"status": "booked", "userId": user}));
    }
}

#[actix_web::test]
async fn length_is_counted_after_normalization() {
    let app = spawn_app();
    app.initialize(json!(1), 10).await;
    // 512 code points as sent, 256 in NFC: allowed.
    let decomposed = "e\u{0301}".repeat(256);
    let answer = app.book(json!(1), json!(decomposed)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["userId"], "\u{00e9}".repeat(256));
    let too_long = "e\u{0301}".repeat(257);
    let answer = app.book(json!(1), json!(too_long)).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body["details"].as_str().unwrap().contains("not 257"));
}

/// A keyed booking, written exactly as `body`.
async fn keyed(app: &TestApp, key: &str, body: &str) -> crate::helpers::Answer {
    let headers = [
        ("Idempotency-Key", key),
        ("Content-Type", "application/json"),
    ];
    app.request_raw("POST", "/api/book", &headers, body).await
}

#[actix_web::test]
async fn a_retry_is_the_same_request_however_it_is_spelled() {
    let app = spawn_app();
    app.initialize(json!(1), 10).await;
    let first = keyed(&app, "k1", r#"{"eventId": 1, "userId": "ju\u0308rgen"}"#).await;
    assert_eq!(
        first.body,
        json!({"status": "booked", "userId": "j\u{00fc}rgen"})
    );
    for retry in [
        r#"{"eventId": 1, "userId": "j\u00fcrgen"}"#,
        r#"{"userId": "ju\u0308rgen", "eventId": 1.0}"#,
        "{\"eventId\":\"1\",\n \"userId\":\"j\u{00fc}rgen\"}",
    ] {
        let replayed = keyed(&app, "k1", retry).await;
        assert_eq!(replayed.status, 200, "{retry}: {:?}", replayed.body);
        assert_eq!(
            replayed.header("idempotent-replayed"),
            Some("true"),
            "{retry}"
        );
        assert_eq!(replayed.raw, first.raw, "{retry}");
    }
    let other = keyed(&app, "k1", r#"{"eventId": 1, "userId": "jurgen"}"#).await;
    assert_eq!(other.status, 422, "{:?}", other.body);
    // A number and its decimal text are one user, but not one answer: not the same request.
    let number = keyed(&app, "k2", r#"{"eventId": 1, "userId": 7}"#).await;
    assert_eq!(number.body["userId"], json!(7));
    let text = keyed(&app, "k2", r#"{"eventId": 1, "userId": "7"}"#).await;
    assert_eq!(text.status, 422, "{:?}", text.body);
    assert_eq!(app.counts("1").await, (2, 0));
}

#[actix_web::test]
async fn answers_stored_before_canonical_fingerprints_still_replay_to_the_same_body() {
    let mut app = spawn_app();
    app.initialize(json!(1), 10).await;
    let body = r#"{"eventId": 1, "userId": "u1"}"#;
    let first = keyed(&app, "old", body).await;
    assert_eq!(first.status, 200);
    app.stop_with("TERM");
    // As an earlier version stored it: a digest of the route and the body as sent.
    let raw: Vec<u8> = Sha256::new()
        .chain_update("/api/book")
        .chain_update(b"\n")
        .chain_update(body)
        .finalize()
        .to_vec();
    let db = Connection::open(app.database()).unwrap();
    db.execute("UPDATE idempotency SET fingerprint = ?1", [&raw])
        .unwrap();
    db.execute_batch("UPDATE fingerprints SET raw_before = (SELECT max(seq) + 1 FROM idempotency)")
        .unwrap();
    drop(db);
    app.start();
    let replayed = keyed(&app, "old", body).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.raw, first.raw);
    // Only the body as it was sent matches such an answer.
    let reordered = keyed(&app, "old", r#"{"userId": "u1", "eventId": 1}"#).await;
    assert_eq!(reordered.status, 422, "{:?}", reordered.body);
}

/// The state of the event of the test below, after the migration.
async fn expect_migrated_state(app: &TestApp) {
    // The acknowledged standing is whole: 3 tickets held, one waiting.
    assert_eq!(app.counts("e").await, (3, 1));
    let standing = app.user_status("e", "ju%CC%88rgen").await;
    assert_eq!(standing.body["userId"], "j\u{00fc}rgen");
    assert_eq!(standing.body["status"], "booked");
    assert_eq!(
        app.user_status("e", "%C3%85").await.body["status"],
        "booked"
    );
    let queued = app.user_status("e", "%C3%B6").await.body;
    assert_eq!(
        (&queued["status"], &queued["position"]),
        (&json!("waiting"), &json!(1))
    );
}

#[actix_web::test]
async fn ids_stored_before_normalization_are_normalized_once_and_collisions_keep_their_standing() {
    let mut app = spawn_app();
    app.initialize(json!("e"), 3).await;
    app.stop_with("TERM");
    // A database of schema version 3, written before ids were normalized.
    let db = Connection::open(app.database()).unwrap();
    db.execute_batch(
        "DROP TABLE fingerprints;
         PRAGMA user_version = 3;",
    )
    .unwrap();
    let rows = [
        ("ju\u{0308}rgen", "booked"), // only stored decomposed: renamed to NFC
        ("\u{00C5}", "booked"),       // NFC spelling ...
        ("\u{212B}", "booked"),       // ... and another: NFC keeps the id
        ("o\u{0308}", "waiting"),     // a queue place, renamed
        ("ju\u{0308}rgen", "cancelled"), // a later row of a renamed user
        ("ju\u{0308}rgen", "booked"),
    ];
    for (user, status) in rows {
        db.execute(
            "INSERT INTO order_log (event_id, user_id, status) VALUES ('e', ?1, ?2)",
            [user, status],
        )
        .unwrap();
    }
    drop(db);

    app.start();
    expect_migrated_state(&app).await;
    assert!(
        app.log().contains("one user in NFC"),
        "the collision is logged:\n{}",
        app.log()
    );
    let stored: Vec<String> = {
        let db = Connection::open(app.database()).unwrap();
        let mut query = db
            .prepare("SELECT user_id FROM order_log ORDER BY seq")
            .unwrap();
        query
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        !stored
            .iter()
            .any(|u| u == "ju\u{0308}rgen" || u == "o\u{0308}"),
        "{stored:?}"
    );
    assert!(
        stored.iter().any(|u| u == "\u{212B}"),
        "the other spelling keeps its rows: {stored:?}"
    );
    // The same after another restart (the migration ran once), and the
    // renamed user acts as one: a cancel frees the ticket for the queue.
    app.restart();
    expect_migrated_state(&app).await;
    let cancelled = app.cancel(json!("e"), json!("j\u{00fc}rgen")).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(
        app.user_status("e", "%C3%B6").await.body["status"],
        "booked"
    );
    app.restart();
    assert_eq!(app.counts("e").await, (3, 0));
    assert_eq!(
        app.user_status("e", "j%C3%BCrgen").await.body["status"],
        "cancelled"
    );
}
