//! API keys, rate limits and CORS, as a client (or a browser) meets them.

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Answer, TestApp};

const ADMIN: &str = "admin-0123456789";
const CLIENT: &str = "client-0123456789";

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn post_as(app: &TestApp, key: Option<&str>, path: &str, body: Value) -> Answer {
    let auth = key.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    app.request("POST", path, &headers, Some(&body)).await
}

async fn get_as(app: &TestApp, key: Option<&str>, path: &str) -> Answer {
    let auth = key.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    app.request("GET", path, &headers, None).await
}

fn keyed_app(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("BOOKING_ADMIN_KEYS", ADMIN),
        ("BOOKING_CLIENT_KEYS", CLIENT),
    ];
    env.extend_from_slice(extra);
    spawn_app_with(&env)
}

#[actix_web::test]
async fn requests_without_a_valid_key_are_401_and_change_nothing() {
    let app = keyed_app(&[]);
    let event = json!({"eventId": 1, "totalTickets": 5});
    for key in [None, Some("wrong-key"), Some("")] {
        let answer = post_as(&app, key, "/api/initialize", event.clone()).await;
        assert_eq!(
            (answer.status, &answer.body),
            (
                401,
                &json!({"error": "Unauthorized", "code": "unauthorized"})
            ),
            "{key:?}"
        );
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        assert!(answer.content_type.starts_with("application/json"));
    }
    for path in ["/api/status/1", "/api/status/1/u"] {
        assert_eq!(get_as(&app, None, path).await.status, 401, "{path}");
    }
    let basic = app
        .request(
            "GET",
            "/api/status/1",
            &[("authorization", "Basic YWRtaW4=")],
            None,
        )
        .await;
    assert_eq!(basic.status, 401);
    // Nothing was created by the refused requests.
    assert_eq!(get_as(&app, Some(ADMIN), "/api/status/1").await.status, 404);
    // Liveness stays open.
    assert_eq!(app.get("/health").await.status, 200);
}

#[actix_web::test]
async fn a_client_key_books_and_reads_but_only_an_admin_key_initializes() {
    let app = keyed_app(&[]);
    let forbidden = post_as(
        &app,
        Some(CLIENT),
        "/api/initialize",
        json!({"eventId": 1, "totalTickets": 2}),
    )
    .await;
    assert_eq!(
        (forbidden.status, forbidden.body),
        (403, json!({"error": "Forbidden", "code": "forbidden"}))
    );
    assert_eq!(
        get_as(&app, Some(CLIENT), "/api/status/1").await.status,
        404,
        "403 changed nothing"
    );

    let created = post_as(
        &app,
        Some(ADMIN),
        "/api/initialize",
        json!({"eventId": 1, "totalTickets": 2}),
    )
    .await;
    assert_eq!(created.status, 201);
    let booked = post_as(
        &app,
        Some(CLIENT),
        "/api/book",
        json!({"eventId": 1, "userId": "u1"}),
    )
    .await;
    assert_eq!(booked.body, json!({"status": "booked", "userId": "u1"}));
    assert_eq!(
        get_as(&app, Some(CLIENT), "/api/status/1/u1").await.body["status"],
        "booked"
    );
    assert_eq!(
        post_as(
            &app,
            Some(CLIENT),
            "/api/cancel",
            json!({"eventId": 1, "userId": "u1"})
        )
        .await
        .status,
        200
    );
    // An admin key may do everything a client key may; the scheme is case-insensitive.
    let lower = format!("bearer {ADMIN}");
    let by_admin = app
        .request(
            "POST",
            "/api/book",
            &[("authorization", &lower)],
            Some(&json!({"eventId": 1, "userId": "u2"})),
        )
        .await;
    assert_eq!(by_admin.status, 200);
}

#[actix_web::test]
async fn without_keys_the_api_is_open_and_the_log_says_so() {
    let app = spawn_app();
    assert_eq!(app.initialize(json!(1), 1).await.status, 201);
    assert!(
        app.log().contains("no API keys configured"),
        "{}",
        app.log()
    );
    let keyed = keyed_app(&[]);
    assert!(!keyed.log().contains("no API keys configured"));
    assert!(
        !keyed.log().contains(ADMIN) && !keyed.log().contains(CLIENT),
        "keys must never be logged"
    );
}

#[actix_web::test]
async fn over_the_rate_limit_a_client_gets_429_with_retry_after() {
    let app = keyed_app(&[
        ("BOOKING_RATE_LIMIT__ENABLED", "true"),
        ("BOOKING_RATE_LIMIT__PER_SECOND", "1"),
        ("BOOKING_RATE_LIMIT__BURST", "3"),
    ]);
    let answers = join_all((0..6).map(|_| get_as(&app, Some(CLIENT), "/api/status/1"))).await;
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        answers.len() - refused.len(),
        3,
        "the burst passes: {answers:?}"
    );
    for answer in &refused {
        assert_eq!(
            answer.body,
            json!({"error": "Too many requests", "code": "rate_limited"})
        );
        let retry_after: u64 = answer
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry_after), "{retry_after}");
    }
    // Another client has its own allowance, and probes are never limited.
    assert_eq!(get_as(&app, Some(ADMIN), "/api/status/1").await.status, 404);
    assert!(join_all((0..10).map(|_| app.get("/health")))
        .await
        .iter()
        .all(|a| a.status == 200));
}

#[actix_web::test]
async fn rate_limiting_is_off_by_default() {
    let app = spawn_app();
    let answers = join_all((0..300).map(|_| app.get("/api/status/1"))).await;
    assert!(answers.iter().all(|a| a.status == 404));
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_forwarded_address_is_its_own_client() {
    let limited = |trust: &'static str| {
        spawn_app_with(&[
            ("BOOKING_RATE_LIMIT__ENABLED", "true"),
            ("BOOKING_RATE_LIMIT__PER_SECOND", "1"),
            ("BOOKING_RATE_LIMIT__BURST", "1"),
            ("BOOKING_RATE_LIMIT__TRUST_PROXY", trust),
        ])
    };
    let trusting = limited("true");
    assert_eq!(
        (
            from(&trusting, "192.0.2.1").await,
            from(&trusting, "192.0.2.2").await
        ),
        (404, 404)
    );
    assert_eq!(from(&trusting, "192.0.2.1").await, 429);
    // Not trusted: the header is ignored, every request is 127.0.0.1's.
    let plain = limited("false");
    assert_eq!(
        (
            from(&plain, "192.0.2.1").await,
            from(&plain, "192.0.2.2").await
        ),
        (404, 429)
    );
}

/// A status request that a proxy forwarded for `address`; returns the status.
async fn from(app: &TestApp, address: &str) -> u16 {
    let forwarded = format!("10.9.8.7, {address}");
    app.request(
        "GET",
        "/api/status/1",
        &[("x-forwarded-for", &forwarded)],
        None,
    )
    .await
    .status
}

async fn preflight(app: &TestApp, origin: &str) -> Answer {
    let headers = [
        ("origin", origin),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "content-type, authorization, idempotency-key",
        ),
    ];
    app.request("OPTIONS", "/api/book", &headers, None).await
}

#[actix_web::test]
async fn an_allowed_origin_passes_preflight_and_sees_the_exposed_headers() {
    let app = spawn_app_with(&[(
        "BOOKING_CORS__ALLOWED_ORIGINS",
        "https://shop.example,http://localhost:5173",
    )]);
    let answer = preflight(&app, "https://shop.example").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let allowed = answer
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for header in ["content-type", "authorization", "idempotency-key"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    let booked = app
        .request(
            "POST",
            "/api/initialize",
            &[("origin", "http://localhost:5173")],
            Some(&json!({"eventId": 1, "totalTickets": 1})),
        )
        .await;
    assert_eq!(booked.status, 201);
    assert_eq!(
        booked.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    let exposed = booked
        .header("access-control-expose-headers")
        .unwrap_or_default();
    for header in ["retry-after", "idempotent-replayed", "location"] {
        assert!(exposed.contains(header), "{exposed}");
    }
}

#[actix_web::test]
async fn a_disallowed_origin_gets_no_cors_headers_and_never_a_5xx() {
    // Without CORS, OPTIONS is a method the route lacks; with it, actix-cors
    // refuses the preflight with a text 400, which json_errors rewrites.
    for (app, status, code) in [
        (spawn_app(), 405, "method_not_allowed"),
        (
            spawn_app_with(&[("BOOKING_CORS__ALLOWED_ORIGINS", "https://shop.example")]),
            400,
            "invalid_input",
        ),
    ] {
        let answer = preflight(&app, "https://evil.example").await;
        assert_eq!(
            (answer.status, &answer.body["code"]),
            (status, &json!(code)),
            "{answer:?}"
        );
        assert!(answer.content_type.starts_with("application/json"));
        assert!(answer.body["error"].is_string());
        assert_eq!(answer.header("access-control-allow-origin"), None);
        let simple = app
            .request(
                "GET",
                "/health",
                &[("origin", "https://evil.example")],
                None,
            )
            .await;
        assert_eq!(
            (simple.status, simple.header("access-control-allow-origin")),
            (200, None)
        );
    }
}

#[actix_web::test]
async fn any_origin_is_allowed_with_a_warning() {
    let app = spawn_app_with(&[("BOOKING_CORS__ALLOWED_ORIGINS", "*")]);
    let answer = preflight(&app, "https://anywhere.example").await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("access-control-allow-origin").is_some());
    assert!(
        app.log().contains("CORS allows any origin"),
        "{}",
        app.log()
    );
}
