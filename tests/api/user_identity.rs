//! One identity per user: user ids are normalized to Unicode NFC in bodies
//! and paths, ids that cannot be told apart from another or from nothing
//! are refused, and ids stored before normalization are normalized once.

use rusqlite::Connection;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{spawn_app, TestApp, BACK_TO_VERSION_3};

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
        // A variation selector or tag shows nothing after what is no emoji or ideograph.
        ("abc\u{fe0f}", "invisible"),
        ("abc\u{e007f}", "invisible"),
        ("abc \u{fe0f}", "invisible"),
        ("abc\u{200b}\u{fe0f}", "invisible"),
        // Inside an id, what only hides: "ab", "a b" and a reversed "ba" to the eye.
        ("a\u{200b}b", "contain an invisible"),
        ("a\u{00ad}b", "contain an invisible"),
        ("a\u{202e}b", "contain an invisible"),
        ("a\u{3164}b", "contain an invisible"),
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
        // The flag of Scotland: a black flag and tags; a variant of an ideograph.
        "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
        "\u{8FBB}\u{E0100}",
        "\u{0645}\u{06cc}\u{200c}\u{062e}\u{0648}\u{0627}\u{0647}\u{0645}",
    ] {
        let answer = app.book(json!(1), json!(user)).await;
        assert_eq!(answer.body, json!({"status": "booked", "userId": user}));
    }
}

#[actix_web::test]
async fn a_path_that_is_not_utf8_is_refused_not_read_as_replacement_characters() {
    let app = spawn_app();
    app.initialize(json!(1), 10).await;
    assert_eq!(app.book(json!(1), json!("\u{fffd}")).await.status, 200);
    // A Latin-1 byte, a lone byte, an overlong "/", a surrogate: none is U+FFFD.
    for path in ["%E9", "%FF", "%C0%AF", "%ED%A0%80"] {
        let answer = app.user_status("1", path).await;
        assert_eq!(answer.status, 400, "{path}: {:?}", answer.body);
        assert_eq!(
            answer.body["details"], "the path is not UTF-8 once percent-decoded",
            "{path}"
        );
    }
    assert_eq!(app.get("/api/status/%FF").await.status, 400);
    assert_eq!(
        app.user_status("1", "%EF%BF%BD").await.body["status"],
        "booked"
    );
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
    // A number and its decimal text are one user: the first answer comes back.
    let number = keyed(&app, "k2", r#"{"eventId": 1, "userId": 7}"#).await;
    assert_eq!(number.body["userId"], json!(7));
    let text = keyed(&app, "k2", r#"{"eventId": 1, "userId": "7"}"#).await;
    assert_eq!(text.header("idempotent-replayed"), Some("true"));
    assert_eq!(text.raw, number.raw);
    // And so are `2` and `"2"` as an event: a retried initialize replays.
    let headers = [
        ("Idempotency-Key", "k3"),
        ("Content-Type", "application/json"),
    ];
    let created = app
        .request_raw(
            "POST",
            "/api/initialize",
            &headers,
            r#"{"eventId": 2, "totalTickets": 5}"#,
        )
        .await;
    assert_eq!(created.status, 201);
    let retried = app
        .request_raw(
            "POST",
            "/api/initialize",
            &headers,
            r#"{"totalTickets": 5.0, "eventId": "2"}"#,
        )
        .await;
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(retried.raw, created.raw);
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
    // A database of schema version 3, as that version left it.
    let db = Connection::open(app.database()).unwrap();
    db.execute("UPDATE idempotency SET fingerprint = ?1", [&raw])
        .unwrap();
    db.execute_batch(BACK_TO_VERSION_3).unwrap();
    drop(db);
    // The migration marks the answers stored until then.
    app.start();
    let replayed = keyed(&app, "old", body).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.raw, first.raw);
    // Only the body as it was sent matches such an answer.
    let reordered = keyed(&app, "old", r#"{"userId": "u1", "eventId": 1}"#).await;
    assert_eq!(reordered.status, 422, "{:?}", reordered.body);
    // Answers stored from now on are matched by what they read.
    let new = keyed(&app, "new", r#"{"eventId": 1, "userId": "u2"}"#).await;
    assert_eq!(new.status, 200);
    app.restart();
    let reordered = keyed(&app, "new", r#"{"userId": "u2", "eventId": 1.0}"#).await;
    assert_eq!(reordered.header("idempotent-replayed"), Some("true"));
    assert_eq!(reordered.raw, new.raw);
    assert_eq!(keyed(&app, "old", body).await.raw, first.raw);
}

/// The state of the event of the test below, after the migration.
async fn expect_migrated_state(app: &TestApp) {
    // The acknowledged standing is whole: 8 tickets held, one waiting.
    assert_eq!(app.counts("e").await, (8, 1));
    let standing = app.user_status("e", "ju%CC%88rgen").await;
    assert_eq!(standing.body["userId"], "j\u{00fc}rgen");
    assert_eq!(standing.body["status"], "booked");
    // U+1E0D U+0307, the NFC of both stored spellings of d with two dots.
    for user in ["%C3%85", "K", "%E1%B8%8D%CC%87"] {
        assert_eq!(
            app.user_status("e", user).await.body["status"],
            "booked",
            "{user}"
        );
    }
    let queued = app.user_status("e", "%C3%B6").await.body;
    assert_eq!(
        (&queued["status"], &queued["position"]),
        (&json!("waiting"), &json!(1))
    );
}

#[actix_web::test]
async fn ids_stored_before_normalization_are_normalized_once_and_collisions_keep_their_standing() {
    let mut app = spawn_app();
    app.initialize(json!("e"), 8).await;
    app.stop_with("TERM");
    // A database of schema version 3, written before ids were normalized.
    let db = Connection::open(app.database()).unwrap();
    db.execute_batch(BACK_TO_VERSION_3).unwrap();
    let rows = [
        // Only stored decomposed: renamed to NFC, all its rows.
        ("ju\u{0308}rgen", "booked"),
        // An NFC spelling and two others: the NFC one keeps the id.
        ("\u{00C5}", "booked"),
        ("\u{212B}", "booked"),
        ("A\u{030A}", "booked"),
        // KELVIN SIGN, whose NFC is the ASCII "K", stored too: "K" keeps it.
        ("\u{212A}", "booked"),
        ("K", "booked"),
        // Two spellings, neither NFC: the first stored keeps the id.
        ("d\u{0307}\u{0323}", "booked"),
        ("\u{1E0B}\u{0323}", "booked"),
        // A queue place, renamed.
        ("o\u{0308}", "waiting"),
        // Later rows of a renamed user.
        ("ju\u{0308}rgen", "cancelled"),
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
    let collisions = app.log().matches("one user in NFC").count();
    assert_eq!(collisions, 4, "each collision is logged:\n{}", app.log());
    let stored: Vec<String> = {
        let db = Connection::open(app.database()).unwrap();
        let mut query = db
            .prepare("SELECT DISTINCT user_id FROM order_log")
            .unwrap();
        query
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    for renamed in ["ju\u{0308}rgen", "o\u{0308}", "d\u{0307}\u{0323}"] {
        assert!(
            !stored.iter().any(|u| u == renamed),
            "{renamed:?}: {stored:?}"
        );
    }
    for kept in ["\u{212B}", "A\u{030A}", "\u{212A}", "\u{1E0B}\u{0323}"] {
        assert!(
            stored.iter().any(|u| u == kept),
            "{kept:?} keeps its rows: {stored:?}"
        );
    }
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
    assert_eq!(app.counts("e").await, (8, 0));
    assert_eq!(
        app.user_status("e", "j%C3%BCrgen").await.body["status"],
        "cancelled"
    );
}
