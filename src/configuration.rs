//! Settings: `config/default.toml` (built in), an optional file named by
//! `BOOKING_CONFIG`, then `BOOKING_*` environment variables, in that order.
//! A top-level setting is `BOOKING_<NAME>` (`BOOKING_PORT`); one in a section
//! is `BOOKING_<SECTION>__<NAME>` (`BOOKING_RATE_LIMIT__ENABLED`), except the
//! API keys: `BOOKING_ADMIN_KEYS` and `BOOKING_CLIENT_KEYS`, comma separated.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// Every setting, with the meaning documented in `config/default.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub host: IpAddr,
    pub port: u16,
    pub database: String,
    pub workers: usize,
    pub synchronous: Synchronous,
    pub commit_batch_limit: usize,
    pub compaction_interval_rows: u64,
    pub busy_timeout_ms: u64,
    pub max_page_count: u32,
    pub body_limit: usize,
    pub mailbox_capacity: usize,
    pub store_backlog: usize,
    pub request_timeout_ms: u64,
    /// An event's actor stops after this many seconds without a message; 0: never.
    pub passivate_after_secs: u64,
    /// A hold's duration in seconds when neither the request nor the event names one.
    pub hold_secs: u32,
    /// Status streams open at once, at most; beyond, 503 with `Retry-After`.
    pub max_streams: usize,
    pub client_request_timeout_ms: u64,
    pub keep_alive_secs: u64,
    pub max_connections: usize,
    pub shutdown_timeout_secs: u64,
    pub log_level: String,
    pub log_requests: bool,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub cors: CorsSettings,
    pub idempotency: IdempotencySettings,
    pub storage: StorageSettings,
}

/// The longest hold, in seconds (a day), for the setting and for a request's `holdSecs`.
pub const MAX_HOLD_SECS: u32 = 86_400;

/// Where changes are committed.
#[derive(Clone, Deserialize)]
pub struct StorageSettings {
    pub backend: Backend,
    /// The PostgreSQL connection string (a libpq URI or key-value string),
    /// for `backend = "postgres"`.
    pub postgres_url: String,
}

/// The connection string may hold a password: never printed.
impl fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = if self.postgres_url.is_empty() {
            "unset"
        } else {
            "set"
        };
        write!(
            f,
            "StorageSettings {{ backend: {:?}, postgres_url: {url} }}",
            self.backend
        )
    }
}

/// The storage backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The file named by `database`, embedded: the default.
    Sqlite,
    /// A PostgreSQL server, which several instances may share.
    Postgres,
}

/// Answers of requests sent with an `Idempotency-Key`.
#[derive(Debug, Clone, Deserialize)]
pub struct IdempotencySettings {
    /// How long a key's answer is kept (and replayed) after it was stored.
    pub retention_secs: u64,
    /// Most keys kept; beyond it the oldest answers are forgotten early. 0: no cap.
    pub max_keys: usize,
}

/// Bearer keys; with both lists empty the API is open.
#[derive(Clone, Default, Deserialize)]
pub struct AuthSettings {
    /// May initialize events, and everything a client key may.
    pub admin_keys: Vec<String>,
    /// May book, cancel and read.
    pub client_keys: Vec<String>,
}

/// Keys are secrets: never printed, only counted.
impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AuthSettings {{ {} admin keys, {} client keys }}",
            self.admin_keys.len(),
            self.client_keys.len()
        )
    }
}

/// Requests per client, by the GCRA of the `governor` crate.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Sustained rate per client.
    pub per_second: u32,
    /// Requests a client may send at once above the sustained rate.
    pub burst: u32,
    /// Take the client's address from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_proxy: bool,
}

/// Origins whose pages may call the API from a browser.
#[derive(Debug, Clone, Deserialize)]
pub struct CorsSettings {
    /// `scheme://host[:port]` entries, or `*` for any; empty means same-origin only.
    pub allowed_origins: Vec<String>,
}

/// SQLite's `synchronous` pragma, limited to the values that make sense here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
    Off,
}

impl Synchronous {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Reads the layers from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let environment: HashMap<String, String> = std::env::vars()
            .filter(|(name, _)| name.starts_with("BOOKING_"))
            .collect();
        Self::from_layers(std::env::var("BOOKING_CONFIG").ok().as_deref(), environment)
    }

    fn from_layers(
        file: Option<&str>,
        environment: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let error = |error: config::ConfigError| ConfigError(error.to_string());
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::with_name(path).format(FileFormat::Toml));
        }
        for (variable, key) in [
            ("BOOKING_ADMIN_KEYS", "auth.admin_keys"),
            ("BOOKING_CLIENT_KEYS", "auth.client_keys"),
        ] {
            if let Some(list) = environment.get(variable) {
                let keys: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from)
                    .collect();
                builder = builder.set_override(key, keys).map_err(error)?;
            }
        }
        let variables = Environment::with_prefix("BOOKING")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("cors.allowed_origins")
            .source(Some(environment.into_iter().collect()));
        let settings: Settings = builder
            .add_source(variables)
            .build()
            .and_then(Config::try_deserialize)
            .map_err(error)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |message: &str| Err(ConfigError(message.to_string()));
        if self.database.trim().is_empty() {
            return fail("database must name a file");
        }
        if self.storage.backend == Backend::Postgres && self.storage.postgres_url.trim().is_empty()
        {
            return fail("storage.postgres_url must be set for storage.backend = \"postgres\"");
        }
        if self.commit_batch_limit == 0 {
            return fail("commit_batch_limit must be at least 1");
        }
        if self.mailbox_capacity == 0 || self.store_backlog == 0 || self.max_connections == 0 {
            return fail("mailbox_capacity, store_backlog and max_connections must be at least 1");
        }
        if self.request_timeout_ms == 0 || self.client_request_timeout_ms == 0 {
            return fail("request_timeout_ms and client_request_timeout_ms must be at least 1");
        }
        if !(1..=MAX_HOLD_SECS).contains(&self.hold_secs) {
            return fail("hold_secs must be 1 to 86400");
        }
        if self.body_limit < 256 {
            return fail("body_limit must be at least 256 bytes");
        }
        let keys = self.auth.admin_keys.iter().chain(&self.auth.client_keys);
        if keys
            .clone()
            .any(|key| key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return fail("auth keys must be printable ASCII without spaces");
        }
        if self.idempotency.retention_secs == 0 {
            return fail("idempotency.retention_secs must be at least 1");
        }
        if self.rate_limit.per_second == 0 || self.rate_limit.burst == 0 {
            return fail("rate_limit.per_second and rate_limit.burst must be at least 1");
        }
        let origin_ok = |o: &String| {
            o == "*"
                || (o.parse::<actix_web::http::Uri>().is_ok_and(|uri| {
                    matches!(uri.scheme_str(), Some("http" | "https")) && uri.path() == "/"
                }) && !o.ends_with('/'))
        };
        if let Some(bad) = self.cors.allowed_origins.iter().find(|o| !origin_ok(o)) {
            return Err(ConfigError(format!(
                "cors.allowed_origins: {bad:?} is not * or scheme://host[:port]"
            )));
        }
        if self.log_level.parse::<log::LevelFilter>().is_err() {
            return fail("log_level must be one of off, error, warn, info, debug, trace");
        }
        Ok(())
    }
}

impl Default for Settings {
    /// The built-in defaults, with nothing from the environment.
    fn default() -> Self {
        Self::from_layers(None, HashMap::new()).expect("config/default.toml holds valid settings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_layers(
            None,
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let settings = Settings::default();
        assert_eq!(settings.host.to_string(), "127.0.0.1");
        assert_eq!(settings.port, 3000);
        assert_eq!(settings.database, "data/bookings.db");
        assert_eq!(settings.synchronous, Synchronous::Full);
        assert_eq!(settings.body_limit, 16384);
        assert_eq!(settings.passivate_after_secs, 300);
        assert!(settings.auth.admin_keys.is_empty() && settings.auth.client_keys.is_empty());
        assert!(!settings.rate_limit.enabled);
        assert!(settings.cors.allowed_origins.is_empty());
    }

    #[test]
    fn sections_are_set_by_their_own_variables() {
        let settings = with_env(&[
            ("BOOKING_ADMIN_KEYS", "adm1n-key, second-admin"),
            ("BOOKING_CLIENT_KEYS", "client-key"),
            ("BOOKING_RATE_LIMIT__ENABLED", "true"),
            ("BOOKING_RATE_LIMIT__PER_SECOND", "5"),
            (
                "BOOKING_CORS__ALLOWED_ORIGINS",
                "https://a.example,http://localhost:5173",
            ),
        ])
        .unwrap();
        assert_eq!(settings.auth.admin_keys, ["adm1n-key", "second-admin"]);
        assert_eq!(settings.auth.client_keys, ["client-key"]);
        assert!(settings.rate_limit.enabled);
        assert_eq!(settings.rate_limit.per_second, 5);
        assert_eq!(
            settings.cors.allowed_origins,
            ["https://a.example", "http://localhost:5173"]
        );
        let printed = format!("{settings:?}");
        assert!(
            !printed.contains("adm1n-key") && printed.contains("2 admin keys"),
            "{printed}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let settings = with_env(&[
            ("BOOKING_PORT", "8080"),
            ("BOOKING_HOST", "0.0.0.0"),
            ("BOOKING_DATABASE", "/tmp/x.db"),
            ("BOOKING_WORKERS", "3"),
            ("BOOKING_SYNCHRONOUS", "normal"),
        ])
        .unwrap();
        assert_eq!((settings.port, settings.workers), (8080, 3));
        assert_eq!(settings.host.to_string(), "0.0.0.0");
        assert_eq!(settings.database, "/tmp/x.db");
        assert_eq!(settings.synchronous, Synchronous::Normal);
    }

    #[test]
    fn a_bad_value_is_named() {
        for (var, key) in [
            ("BOOKING_PORT", "port"),
            ("BOOKING_HOST", "host"),
            ("BOOKING_SYNCHRONOUS", "synchronous"),
        ] {
            let error = with_env(&[(var, "nonsense")]).unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        }
        assert!(
            with_env(&[("BOOKING_CORS__ALLOWED_ORIGINS", "example.com")])
                .unwrap_err()
                .to_string()
                .contains("cors.allowed_origins")
        );
        assert!(with_env(&[("BOOKING_RATE_LIMIT__BURST", "0")])
            .unwrap_err()
            .to_string()
            .contains("rate_limit"));
        assert!(with_env(&[("BOOKING_COMMIT_BATCH_LIMIT", "0")])
            .unwrap_err()
            .to_string()
            .contains("commit_batch_limit"));
    }
}
