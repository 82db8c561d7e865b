use std::process::Command;

use crate::helpers::spawn_app;

const BINARY: &str = env!("CARGO_BIN_EXE_event-booking");

/// Runs the server with `env` and expects it to refuse to start.
fn start_up_error(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .env("BOOKING_DATABASE", dir.path().join("b.db"))
        .env("BOOKING_PORT", "0")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "started with {env:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_setting_stops_start_up_and_is_named() {
    for (var, value, named) in [
        ("BOOKING_PORT", "eighty", "port"),
        ("BOOKING_PORT", "70000", "port"),
        ("BOOKING_HOST", "not-an-ip", "host"),
        ("BOOKING_WORKERS", "-2", "workers"),
        ("BOOKING_SYNCHRONOUS", "sometimes", "synchronous"),
        ("BOOKING_COMMIT_BATCH_LIMIT", "0", "commit_batch_limit"),
    ] {
        let error = start_up_error(&[(var, value)]);
        assert!(error.contains(named), "{var}={value}: {error}");
    }
}

#[test]
fn an_unusable_database_path_stops_start_up() {
    let error = start_up_error(&[("BOOKING_DATABASE", "/dev/null/bookings.db")]);
    assert!(error.contains("/dev/null"), "{error}");
}

#[actix_web::test]
async fn the_database_folder_is_created() {
    let app = spawn_app();
    assert!(app.database().exists());
    assert_eq!(
        app.get("/health").await.body,
        serde_json::json!({"status": "ok"})
    );
}
