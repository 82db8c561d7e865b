//! What can be checked of the container image without a Docker engine: the
//! Dockerfile, compose.yaml, the server's defaults and the README agree.

use std::path::Path;
use std::process::Command;

use crate::helpers::BINARY;

fn read(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_else(|error| panic!("{file}: {error}"))
}

/// The instructions of the final stage, continuation lines joined: (INSTRUCTION, arguments).
fn runtime_stage() -> Vec<(String, String)> {
    let joined = read("Dockerfile").replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (instruction, arguments) = line.split_once(' ').unwrap_or((line, ""));
            (instruction.to_uppercase(), arguments.trim().to_string())
        })
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|(instruction, _)| instruction == "FROM")
        .expect("a FROM");
    instructions[last_from..].to_vec()
}

fn only(stage: &[(String, String)], instruction: &str) -> String {
    let found: Vec<&String> = stage
        .iter()
        .filter(|(i, _)| i == instruction)
        .map(|(_, arguments)| arguments)
        .collect();
    assert_eq!(found.len(), 1, "one {instruction} in the runtime stage");
    found[0].clone()
}

/// The `ENV` settings of the runtime stage.
fn environment(stage: &[(String, String)]) -> Vec<(String, String)> {
    stage
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, arguments)| arguments.split_whitespace())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.to_string(), value.trim_matches('"').to_string()))
        })
        .collect()
}

fn setting(env: &[(String, String)], name: &str) -> String {
    env.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is not set in the image"))
        .1
        .clone()
}

#[test]
fn the_image_listens_on_every_interface_on_the_exposed_port() {
    let stage = runtime_stage();
    let env = environment(&stage);
    assert_eq!(setting(&env, "BOOKING_HOST"), "0.0.0.0");
    let port = setting(&env, "BOOKING_PORT");
    assert_eq!(only(&stage, "EXPOSE"), port);
    // The same port as the server's default, and as compose publishes.
    assert!(read("config/default.toml").contains(&format!("\nport = {port}\n")));
    assert!(read("compose.yaml").contains(&format!("\"{port}:{port}\"")));
}

#[test]
fn the_database_lives_in_the_volume_with_its_wal_files() {
    let stage = runtime_stage();
    let env = environment(&stage);
    let volume = only(&stage, "VOLUME");
    assert_eq!(volume, r#"["/data"]"#);
    let database = setting(&env, "BOOKING_DATABASE");
    assert_eq!(
        Path::new(&database).parent(),
        Some(Path::new("/data")),
        "the database file sits directly in the volume, beside its -wal and -shm"
    );
    assert!(read("compose.yaml").contains("- bookings:/data"));
}

#[test]
fn the_server_runs_as_a_numeric_non_root_user_who_owns_the_volume() {
    let stage = runtime_stage();
    let user = only(&stage, "USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric user");
    assert_ne!(uid, 0, "not root");
    let run = only(&stage, "RUN");
    assert!(run.contains(&format!("--uid {uid}")), "{run}");
    assert!(run.contains("chown booking:booking /data"), "{run}");
}

#[test]
fn the_command_and_healthcheck_are_subcommands_of_this_binary() {
    let stage = runtime_stage();
    assert_eq!(only(&stage, "ENTRYPOINT"), r#"["event-booking"]"#);
    assert_eq!(only(&stage, "CMD"), r#"["serve"]"#);
    let healthcheck = only(&stage, "HEALTHCHECK");
    assert!(
        healthcheck.ends_with(r#"CMD ["event-booking", "healthcheck"]"#),
        "{healthcheck}"
    );
    let copied = only(&stage, "COPY");
    assert!(copied.ends_with("/usr/local/bin/event-booking"), "{copied}");
    for subcommand in ["serve", "healthcheck"] {
        let help = Command::new(BINARY)
            .args([subcommand, "--help"])
            .output()
            .unwrap();
        assert!(help.status.success(), "event-booking {subcommand} --help");
    }
}

#[test]
fn the_image_settings_are_valid_and_the_healthcheck_fails_without_a_server() {
    // Settings errors exit 2; a healthcheck with no server answering exits 1.
    let env = environment(&runtime_stage());
    let checked = Command::new(BINARY)
        .arg("healthcheck")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("BOOKING_PORT", "1")
        .output()
        .unwrap();
    assert_eq!(
        checked.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn sigterm_stops_within_dockers_grace_period() {
    assert_eq!(only(&runtime_stage(), "STOPSIGNAL"), "SIGTERM");
    let defaults = read("config/default.toml");
    let timeout: u64 = defaults
        .lines()
        .find_map(|line| line.strip_prefix("shutdown_timeout_secs = "))
        .expect("shutdown_timeout_secs")
        .parse()
        .unwrap();
    assert!(timeout < 10, "Docker kills 10 s after SIGTERM");
    assert!(read("compose.yaml").contains("stop_grace_period: 10s"));
}

#[test]
fn the_readme_says_how_to_build_and_run_the_image() {
    let readme = read("README.md");
    for expected in [
        "docker build",
        "docker compose up",
        "/ready",
        "/metrics",
        "/health",
    ] {
        assert!(readme.contains(expected), "README lacks {expected:?}");
    }
}
