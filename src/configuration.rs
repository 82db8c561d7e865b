//! Settings: `config/default.toml` (built in), an optional file named by
//! `BOOKING_CONFIG`, then `BOOKING_*` environment variables, in that order.

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
    pub actor_threads: usize,
    pub synchronous: Synchronous,
    pub commit_batch_limit: usize,
    pub busy_timeout_ms: u64,
    pub max_page_count: u32,
    pub body_limit: usize,
    pub shutdown_timeout_secs: u64,
    pub log_level: String,
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
        Self::from_layers(
            std::env::var("BOOKING_CONFIG").ok().as_deref(),
            Environment::with_prefix("BOOKING"),
        )
    }

    fn from_layers(file: Option<&str>, environment: Environment) -> Result<Self, ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::with_name(path).format(FileFormat::Toml));
        }
        let settings: Settings = builder
            .add_source(environment.try_parsing(true))
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|error| ConfigError(error.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |message: &str| Err(ConfigError(message.to_string()));
        if self.database.trim().is_empty() {
            return fail("database must name a file");
        }
        if self.commit_batch_limit == 0 {
            return fail("commit_batch_limit must be at least 1");
        }
        if self.body_limit < 256 {
            return fail("body_limit must be at least 256 bytes");
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
        Self::from_layers(None, Environment::with_prefix("BOOKING_UNUSED_IN_DEFAULTS"))
            .expect("config/default.toml holds valid settings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let source: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_layers(
            None,
            Environment::with_prefix("BOOKING").source(Some(source)),
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
        assert!(with_env(&[("BOOKING_COMMIT_BATCH_LIMIT", "0")])
            .unwrap_err()
            .to_string()
            .contains("commit_batch_limit"));
    }
}
