//! The load generator: each scenario verifies against the real server, and
//! verification catches a server that breaks the booking invariants.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// The load generator; `--spawn` starts the server binary beside it, which
/// `cargo test` at the workspace root builds too (`-p loadtest` alone does not).
const LOADTEST: &str = env!("CARGO_BIN_EXE_loadtest");

fn loadtest(args: &[&str]) -> Output {
    loadtest_with(&[], args)
}

/// With these environment variables, which a `--spawn`ed server inherits.
fn loadtest_with(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(LOADTEST)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the loadtest binary runs")
}

/// The JSON report of a run that must have succeeded and verified cleanly.
fn verified_report(output: &Output, scenario: &str) -> Value {
    assert!(
        output.status.success(),
        "{scenario}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json_report(output);
    assert_eq!(
        report["verification"],
        json!({"checked": true, "violations": []}),
        "{scenario}"
    );
    assert_eq!(report["outcomes"]["errors"], 0, "{scenario}");
    report
}

fn json_report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// A small run of every scenario through either set of routes, against
/// the server `target` names (`--spawn`, or `--url` and an address):
/// (routes, scenario, output), in that order.
fn every_small_run<'a>(
    target: &'a [&'a str],
) -> impl Iterator<Item = (&'static str, &'static str, Output)> + 'a {
    ["legacy", "resource"]
        .into_iter()
        .flat_map(|api| ["drop", "spread", "churn"].map(|scenario| (api, scenario)))
        .map(move |(api, scenario)| {
            let mut args = target.to_vec();
            args.extend([
                "--api",
                api,
                "--scenario",
                scenario,
                "--requests",
                "400",
                "--users",
                "300",
                "--tickets",
                "50",
                "--events",
                "10",
                "--concurrency",
                "16",
                "--json",
            ]);
            (api, scenario, loadtest(&args))
        })
}

#[test]
fn every_scenario_verifies_against_the_real_server_through_either_routes() {
    for (api, scenario, output) in every_small_run(&["--spawn"]) {
        let run = format!("{scenario} through the {api} routes");
        let report = verified_report(&output, &run);
        let codes: Vec<&String> = report["statusCodes"].as_object().unwrap().keys().collect();
        // The resource routes create bookings (201); a cancel answers 200 on either.
        match api {
            "legacy" => assert_eq!(codes, ["200"], "{run}"),
            _ => assert!(
                codes.contains(&&"201".to_string())
                    && codes.iter().all(|code| *code == "200" || *code == "201"),
                "{run}: {codes:?}"
            ),
        }
        let outcomes = &report["outcomes"];
        let told =
            ["booked", "waiting", "reassigned", "cancelled"].map(|k| outcomes[k].as_u64().unwrap());
        assert_eq!(
            told.iter().sum::<u64>(),
            report["requests"].as_u64().unwrap(),
            "{run}"
        );
        match scenario {
            "drop" => assert_eq!((told[0], told[1]), (50, 250), "{run}"),
            "churn" => assert!(told[2] > 0, "{run} promoted nobody: {outcomes}"),
            _ => assert_eq!(told[0] + told[1], 300, "{run}"),
        }
    }
}

#[test]
fn the_checkout_scenario_holds_confirms_lets_lapse_and_verifies() {
    let output = loadtest(&[
        "--spawn",
        "--scenario",
        "checkout",
        "--users",
        "300",
        "--tickets",
        "100",
        "--hold-secs",
        "2",
        "--confirm-ratio",
        "0.5",
        "--concurrency",
        "16",
        "--json",
    ]);
    let report = verified_report(&output, "checkout");
    let outcomes = &report["outcomes"];
    let count = |key: &str| outcomes[key].as_u64().unwrap();
    // Every ticket is held first (more if a hold lapsed before the queue
    // formed, on a slow machine); about half the holders confirm, the
    // others' tickets lapse to the queue (checked by the verification).
    assert!(count("held") >= 100, "{outcomes}");
    assert_eq!(count("held") + count("waiting"), 300, "{outcomes}");
    assert!((20..=80).contains(&count("booked")), "confirms: {outcomes}");
}

#[test]
fn idempotency_keys_on_every_request_still_verify() {
    for scenario in ["drop", "churn"] {
        let output = loadtest(&[
            "--spawn",
            "--scenario",
            scenario,
            "--requests",
            "300",
            "--users",
            "250",
            "--tickets",
            "40",
            "--idempotency-keys",
            "--json",
        ]);
        verified_report(&output, scenario);
    }
}

#[test]
fn the_ceiling_scenario_reports_latency_and_skips_verification() {
    let output = loadtest(&[
        "--spawn",
        "--scenario",
        "ceiling",
        "--requests",
        "300",
        "--json",
    ]);
    assert!(output.status.success());
    let report = json_report(&output);
    assert_eq!(report["requests"], 300);
    assert_eq!(report["verification"]["checked"], false);
    let latency = &report["latencyMs"];
    assert!(latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap());
    assert!(latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap());
    // It started the server, so it knows the server's CPU as well as its own.
    let cpu = &report["cpu"];
    assert!(cpu["serverUsPerRequest"].as_f64().unwrap() >= 0.0, "{cpu}");
    assert!(
        cpu["loadGeneratorUsPerRequest"].as_f64().unwrap() >= 0.0,
        "{cpu}"
    );
    let idle = cpu["machineIdle"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&idle), "{cpu}");
}

#[test]
fn the_text_report_names_every_figure() {
    let output = loadtest(&[
        "--spawn",
        "--requests",
        "200",
        "--users",
        "200",
        "--tickets",
        "20",
    ]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for figure in [
        "requests/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "status codes: 200: 200",
        "booked 20",
        "waiting 180",
        "verification: passed",
        "CPU per request: server ",
        "machine idle",
    ] {
        assert!(text.contains(figure), "{figure} missing from:\n{text}");
    }
}

/// The run's data embedded in an HTML report (`<script id="run">`).
fn html_report_data(html: &str) -> Value {
    let start = html
        .find(r#"<script id="run" type="application/json">"#)
        .expect("the run's data");
    let data = &html[start..];
    let data = &data[data.find('>').unwrap() + 1..data.find("</script>").unwrap()];
    serde_json::from_str(data).expect("JSON")
}

#[test]
fn the_html_report_is_one_file_with_the_charts_data_the_figures_and_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    let output = loadtest(&[
        "--spawn",
        "--requests",
        "400",
        "--users",
        "400",
        "--tickets",
        "40",
        "--json",
        "--html",
        path.to_str().unwrap(),
    ]);
    let report = verified_report(&output, "drop");
    let html = std::fs::read_to_string(&path).expect("the report was written");
    // Self-contained: the chart library is inside, nothing is fetched.
    assert!(html.contains("uPlot"), "the chart library");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    let run = html_report_data(&html);
    assert_eq!(run["summary"], report, "the figures, as --json prints them");
    assert_eq!(run["settings"]["tickets"], 40);
    assert_eq!(run["settings"]["scenario"], "drop");
    let url = run["settings"]["url"].as_str().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url != "http://127.0.0.1:3000",
        "the spawned server's own address: {url}"
    );
    assert!(run["commandLine"].as_str().unwrap().contains("--html"));
    // The histogram counts every request (none was refused)...
    let latency = &run["latencyHistogram"];
    let counted: u64 = latency["count"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 400, "{latency}");
    let upper: Vec<f64> = latency["upperMs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_f64().unwrap())
        .collect();
    assert!(upper.windows(2).all(|w| w[0] < w[1]), "{upper:?}");
    // ...and so does the throughput over time, rate by bucket.
    let throughput = &run["throughput"];
    let width = throughput["bucketSecs"].as_f64().unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    let rates = throughput["requests"].as_array().unwrap();
    let last = rates.len() - 1;
    let total: f64 = rates
        .iter()
        .enumerate()
        .map(|(b, rate)| {
            let span = if b == last {
                seconds - last as f64 * width
            } else {
                width
            };
            rate.as_f64().unwrap() * span.max(1e-3)
        })
        .sum();
    assert!(
        (total - 400.0).abs() < 0.5,
        "{total} requests in {throughput}"
    );
}

#[test]
fn the_html_report_of_a_failed_verification_lists_the_violations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    let (output, _) = verify_against(Flaw::Oversells, &["--html", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let run = html_report_data(&std::fs::read_to_string(&path).unwrap());
    let violations = run["summary"]["verification"]["violations"].to_string();
    assert!(
        violations.contains("oversold, 50 booked of 10 tickets"),
        "{violations}"
    );
}

/// How a stub server breaks the rules.
#[derive(Clone, Copy)]
enum Flaw {
    /// Books everyone, whatever the ticket count.
    Oversells,
    /// Answers "booked" but keeps nothing.
    Forgets,
}

/// A tiny booking server with `flaw`, on a port of its own thread.
fn stub_server(flaw: Flaw) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let booked = Arc::new(AtomicU64::new(0));
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let booked = booked.clone();
                App::new()
                    .app_data(web::Data::new(booked))
                    .route("/api/initialize", web::post().to(|| async { HttpResponse::Created().json(json!({})) }))
                    .route(
                        "/api/book",
                        web::post().to(move |body: web::Json<Value>, booked: web::Data<Arc<AtomicU64>>| async move {
                            if let Flaw::Oversells = flaw {
                                booked.fetch_add(1, Ordering::Relaxed);
                            }
                            HttpResponse::Ok().json(json!({"status": "booked", "userId": body["userId"]}))
                        }),
                    )
                    .route(
                        "/api/status/{event}",
                        web::get().to(|booked: web::Data<Arc<AtomicU64>>| async move {
                            let booked = booked.load(Ordering::Relaxed);
                            HttpResponse::Ok().json(json!({"totalTickets": 10, "bookedTickets": booked, "waitingListCount": 0}))
                        }),
                    )
                    .route(
                        "/api/status/{event}/{user}",
                        web::get().to(move || async move {
                            match flaw {
                                Flaw::Oversells => HttpResponse::Ok().json(json!({"status": "booked"})),
                                Flaw::Forgets => HttpResponse::NotFound().json(json!({"error": "Booking not found"})),
                            }
                        }),
                    )
            })
            .workers(1)
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    url
}

/// A small run against a stub server with `flaw`, with `extra` options.
fn verify_against(flaw: Flaw, extra: &[&str]) -> (Output, String) {
    let url = stub_server(flaw);
    let mut args = vec![
        "--url",
        &url,
        "--requests",
        "50",
        "--users",
        "50",
        "--tickets",
        "10",
        "--concurrency",
        "4",
    ];
    args.extend_from_slice(extra);
    let output = loadtest(&args);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, text)
}

#[test]
fn verification_catches_a_server_that_oversells() {
    let (output, text) = verify_against(Flaw::Oversells, &[]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("verification: FAILED"), "{text}");
    assert!(text.contains("oversold, 50 booked of 10 tickets"), "{text}");
    // A server found by --url is not ours to measure.
    assert!(
        text.contains("CPU per request: server unknown (not started by us)"),
        "{text}"
    );
}

#[test]
fn verification_catches_a_server_that_forgets_bookings() {
    let (output, text) = verify_against(Flaw::Forgets, &[]);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the server counts 0 booked, clients were told 50"),
        "{text}"
    );
    assert!(
        text.contains("was told booked, the server does not know it"),
        "{text}"
    );
}

/// A booking server that is right in everything but one: a cancelled
/// ticket goes to the newest waiting user, not the first.
fn lifo_server() -> String {
    #[derive(Default)]
    struct Event {
        total: usize,
        booked: Vec<String>,
        waiting: Vec<String>,
        cancelled: Vec<String>,
    }
    type Shared = web::Data<std::sync::Mutex<Event>>;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state: Shared = web::Data::new(Default::default());
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .route(
                        "/api/initialize",
                        web::post().to(|body: web::Json<Value>, state: Shared| async move {
                            state.lock().unwrap().total = body["totalTickets"].as_u64().unwrap() as usize;
                            HttpResponse::Created().json(json!({}))
                        }),
                    )
                    .route(
                        "/api/book",
                        web::post().to(|body: web::Json<Value>, state: Shared| async move {
                            let user = body["userId"].as_str().unwrap().to_string();
                            let mut event = state.lock().unwrap();
                            if event.booked.len() < event.total {
                                event.booked.push(user.clone());
                                return HttpResponse::Ok().json(json!({"status": "booked", "userId": user}));
                            }
                            event.waiting.push(user.clone());
                            let position = event.waiting.len();
                            HttpResponse::Ok().json(json!({"status": "waiting", "userId": user, "position": position}))
                        }),
                    )
                    .route(
                        "/api/cancel",
                        web::post().to(|body: web::Json<Value>, state: Shared| async move {
                            let user = body["userId"].as_str().unwrap().to_string();
                            let mut event = state.lock().unwrap();
                            event.booked.retain(|u| *u != user);
                            event.cancelled.push(user.clone());
                            match event.waiting.pop() {
                                Some(newest) => {
                                    event.booked.push(newest.clone());
                                    HttpResponse::Ok().json(json!({"status": "reassigned", "userId": newest, "cancelledUserId": user}))
                                }
                                None => HttpResponse::Ok().json(json!({"status": "cancelled", "userId": user})),
                            }
                        }),
                    )
                    .route(
                        "/api/status/{event}",
                        web::get().to(|state: Shared| async move {
                            let event = state.lock().unwrap();
                            HttpResponse::Ok().json(json!({
                                "totalTickets": event.total,
                                "bookedTickets": event.booked.len(),
                                "waitingListCount": event.waiting.len(),
                            }))
                        }),
                    )
                    .route(
                        "/api/status/{event}/{user}",
                        web::get().to(|path: web::Path<(String, String)>, state: Shared| async move {
                            let user = path.into_inner().1;
                            let event = state.lock().unwrap();
                            if event.booked.contains(&user) {
                                HttpResponse::Ok().json(json!({"status": "booked"}))
                            } else if let Some(index) = event.waiting.iter().position(|u| *u == user) {
                                HttpResponse::Ok().json(json!({"status": "waiting", "position": index + 1}))
                            } else if event.cancelled.contains(&user) {
                                HttpResponse::Ok().json(json!({"status": "cancelled"}))
                            } else {
                                HttpResponse::NotFound().json(json!({"error": "Booking not found"}))
                            }
                        }),
                    )
            })
            .workers(1)
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    url
}

#[test]
fn verification_catches_promotions_that_skip_the_head_of_the_queue() {
    let url = lifo_server();
    let output = loadtest(&[
        "--url",
        &url,
        "--scenario",
        "churn",
        "--tickets",
        "5",
        "--users",
        "150",
        "--requests",
        "200",
        "--cancel-ratio",
        "0.4",
        "--concurrency",
        "1",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("got a ticket ahead of a user who joined before it"),
        "{text}"
    );
}

#[test]
fn refusals_under_overload_are_counted_apart_and_changed_nothing() {
    // A store backlog of 2 for 32 connections: most bookings are refused with
    // 503 `server_busy`.
    let output = loadtest_with(
        &[("BOOKING_STORE_BACKLOG", "2")],
        &[
            "--spawn",
            "--scenario",
            "drop",
            "--requests",
            "600",
            "--users",
            "600",
            "--tickets",
            "50",
            "--concurrency",
            "32",
            "--json",
        ],
    );
    let report = verified_report(&output, "drop under overload");
    let outcomes = &report["outcomes"];
    let refused = outcomes["refused"].as_u64().unwrap();
    assert!(refused > 0, "nothing was refused: {report}");
    assert_eq!(report["statusCodes"]["503"].as_u64(), Some(refused));
    let answered = ["booked", "waiting", "refused"].map(|k| outcomes[k].as_u64().unwrap());
    assert_eq!(
        answered.iter().sum::<u64>(),
        report["requests"].as_u64().unwrap()
    );
    assert!(report["refusedLatencyMs"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_scenario_verifies_against_three_instances_behind_nginx() {
    let server = std::path::Path::new(LOADTEST).with_file_name("event-booking");
    let cluster = match loadtest::cluster::Cluster::up(3, &server) {
        Ok(cluster) => cluster,
        Err(why) => {
            assert!(
                std::env::var_os("BOOKING_TESTS_REQUIRE_CLUSTER").is_none(),
                "{why}"
            );
            eprintln!("skipped: {why}");
            return;
        }
    };
    let nginx = cluster.nginx();
    for (api, scenario, output) in every_small_run(&["--url", nginx]) {
        verified_report(
            &output,
            &format!("{scenario} through the {api} routes, via nginx"),
        );
    }
    drop(cluster);
}

/// A server that holds tickets and never lets a hold lapse.
fn never_lapsing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = web::Data::new(AtomicU64::new(0));
    let soon = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        jiff::Timestamp::from_millisecond(now.as_millis() as i64 + 500)
            .unwrap()
            .to_string()
    };
    let expires_at = soon();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let expires_at = expires_at.clone();
                let held_at = expires_at.clone();
                App::new()
                    .app_data(held.clone())
                    .route("/api/initialize", web::post().to(|| async { HttpResponse::Created().json(json!({})) }))
                    .route(
                        "/api/events/{event}/holds",
                        web::post().to(move |body: web::Json<Value>, held: web::Data<AtomicU64>| {
                            let expires_at = expires_at.clone();
                            async move {
                                held.fetch_add(1, Ordering::Relaxed);
                                HttpResponse::Created().json(json!({"status": "held", "userId": body["userId"], "expiresAt": expires_at}))
                            }
                        }),
                    )
                    .route(
                        "/api/events/{event}",
                        web::get().to(|held: web::Data<AtomicU64>| async move {
                            let held = held.load(Ordering::Relaxed);
                            HttpResponse::Ok().json(json!({"totalTickets": 10, "bookedTickets": 0, "heldTickets": held, "waitingListCount": 0}))
                        }),
                    )
                    .route(
                        "/api/status/{event}",
                        web::get().to(|held: web::Data<AtomicU64>| async move {
                            let held = held.load(Ordering::Relaxed);
                            HttpResponse::Ok().json(json!({"totalTickets": 10, "bookedTickets": 0, "heldTickets": held, "waitingListCount": 0}))
                        }),
                    )
                    .route(
                        "/api/status/{event}/{user}",
                        web::get().to(move || {
                            let held_at = held_at.clone();
                            async move { HttpResponse::Ok().json(json!({"status": "held", "expiresAt": held_at})) }
                        }),
                    )
            })
            .workers(1)
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    url
}

#[test]
fn verification_catches_a_server_whose_holds_never_lapse() {
    let url = never_lapsing_server();
    let output = loadtest(&[
        "--url",
        &url,
        "--scenario",
        "checkout",
        "--requests",
        "10",
        "--users",
        "10",
        "--tickets",
        "10",
        "--confirm-ratio",
        "0",
        "--concurrency",
        "2",
    ]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("u0's hold outlived its expiry by more than a second"),
        "{text}"
    );
}
