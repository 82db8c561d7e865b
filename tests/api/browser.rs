//! The live page (`GET /events/{eventId}`) in a real headless Chromium,
//! driven through chromedriver (WebDriver, with the `fantoccini` client):
//! the figures and a watched user's position follow bookings and cancels
//! made through the API within 2 s, the page fits 320 px, and it
//! reconnects by itself after a restart of the server. A screenshot is
//! left in `target/tmp/event-page.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; skipped without them
//! unless `BOOKING_TESTS_REQUIRE_BROWSER` is set, as CI sets it.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map};

use crate::helpers::spawn_app;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How soon the page must show a change made through the API.
const LIVE: Duration = Duration::from_secs(2);

/// chromedriver on a free loopback port, stopped with the test.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A browser session, or `None` (and the test skips) where there is no Chromium.
async fn browser(profile: &Path) -> Option<(Driver, Client)> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        let why = format!(
            "{CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)"
        );
        assert!(
            std::env::var_os("BOOKING_TESTS_REQUIRE_BROWSER").is_none(),
            "required, and cannot run: {why}"
        );
        eprintln!("skipped: {why}");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(driver);
    // As root and on a closed network: no sandbox, and nothing in the
    // background that would call Google's hosts.
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        // A phone's 320 px viewport: a desktop window is at least 500 px wide.
        json!({"binary": CHROMIUM, "args": args,
               "mobileEmulation": {"deviceMetrics": {"width": 320, "height": 800, "pixelRatio": 1}}}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connected = ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await;
        match connected {
            Ok(client) => return Some((driver, client)),
            // chromedriver is not listening yet.
            Err(_) if Instant::now() < deadline => {
                actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("no WebDriver session: {error}"),
        }
    }
}

/// The text of the element `id`.
async fn text(client: &Client, id: &str) -> String {
    match client.find(Locator::Id(id)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls the element `id` until its text satisfies `wanted`, for at most
/// `within`; fails with what it showed last.
async fn until_text(client: &Client, id: &str, within: Duration, wanted: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let shown = text(client, id).await;
        if wanted(&shown) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "#{id} shows {shown:?} after {within:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn shows(client: &Client, id: &str, within: Duration, wanted: &str) {
    until_text(client, id, within, |shown| shown == wanted).await;
}

#[actix_web::test]
async fn the_live_page_follows_bookings_and_a_users_place_in_a_real_browser() {
    let profile = tempfile::tempdir().unwrap();
    let Some((_driver, client)) = browser(profile.path()).await else {
        return;
    };
    let mut app = spawn_app();
    let created = app
        .post(
            "/api/events",
            &json!({"eventId": "release", "totalTickets": 2}),
        )
        .await;
    assert_eq!(created.status, 201);
    app.book(json!("release"), json!("ana")).await;

    client
        .goto(&format!("{}/events/release", app.address))
        .await
        .expect("the page loads");
    // The first status, however long the browser took to start.
    shows(&client, "booked", Duration::from_secs(15), "1").await;
    assert_eq!(text(&client, "available").await, "1");
    assert_eq!(text(&client, "sales").await, "open");

    for user in ["bo", "cy", "di"] {
        app.book(json!("release"), json!(user)).await;
    }
    shows(&client, "booked", LIVE, "2").await;
    shows(&client, "waiting", LIVE, "2").await;
    assert_eq!(text(&client, "available").await, "0");

    // Watch di, second in the queue; cy's cancel moves di up.
    let input = client.find(Locator::Id("user")).await.unwrap();
    input.send_keys("di").await.unwrap();
    client
        .find(Locator::Css("#watch button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_text(&client, "standing", LIVE, |s| s.contains("position 2")).await;
    assert_eq!(app.cancel(json!("release"), json!("cy")).await.status, 200);
    until_text(&client, "standing", LIVE, |s| s.contains("position 1")).await;
    shows(&client, "waiting", LIVE, "1").await;
    // ana's ticket goes to di.
    assert_eq!(app.cancel(json!("release"), json!("ana")).await.status, 200);
    until_text(&client, "standing", LIVE, |s| s.contains("has a ticket")).await;
    shows(&client, "waiting", LIVE, "0").await;

    // 320 px wide: nothing sticks out sideways.
    let widths = client
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(widths[0], 320, "the viewport");
    assert!(widths[1].as_u64().unwrap() <= 320, "{widths} px wide");
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("event-page.png"),
        png,
    )
    .unwrap();

    // A restart: the page reconnects by itself, on the same port.
    let port = app.port().to_string();
    app.set_env("BOOKING_PORT", Some(&port));
    app.restart();
    // The test client's pooled connection died with the old process: the
    // first try may find it closed, and the next one connects anew.
    let deadline = Instant::now() + Duration::from_secs(10);
    let booked = loop {
        if let Some(answer) = app.try_book(json!("release"), json!("ed")).await {
            break answer;
        }
        assert!(Instant::now() < deadline, "the restarted server answers");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(booked.status, 200);
    shows(&client, "waiting", Duration::from_secs(15), "1").await;
    until_text(&client, "connection", LIVE, |s| s.starts_with("Live")).await;

    // No such event: the page says so, and shows no figures that look live.
    client
        .goto(&format!("{}/events/nope", app.address))
        .await
        .unwrap();
    until_text(&client, "connection", LIVE, |s| s == "No event nope here.").await;
    let figures = client.find(Locator::Id("figures")).await.unwrap();
    assert!(!figures.is_displayed().await.unwrap(), "figures hidden");
    client.close().await.unwrap();
}

#[actix_web::test]
async fn the_page_and_its_files_are_served_from_the_binary_without_a_key() {
    let app = crate::helpers::spawn_app_with(&[("BOOKING_ADMIN_KEYS", "adm")]);
    let page = app.get("/events/release").await;
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"), "{page:?}");
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'self'")
    );
    let html = String::from_utf8(page.raw).unwrap();
    for file in [
        "/static/event.js",
        "/static/event.css",
        "/static/uplot/uPlot.iife.min.js",
        "/static/uplot/uPlot.min.css",
    ] {
        assert!(html.contains(file), "the page loads {file}");
        let served = app.get(file).await;
        assert_eq!(served.status, 200, "{file}");
        assert!(!served.raw.is_empty(), "{file}");
    }
    let bad = app.get("/events/%20").await;
    assert_eq!(
        (bad.status, bad.body["code"].as_str()),
        (400, Some("invalid_input"))
    );
}
