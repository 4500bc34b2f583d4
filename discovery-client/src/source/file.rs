use std::path::{Path, PathBuf};
use std::time::Duration;

use resilience_core::config::{validate_name, validate_positive_duration};
use resilience_core::{BoxError, ConfigError};

use super::{Backoff, FetchSet, SourceHealth, SourceStream, parse_entry, spawn_polling};
use crate::endpoint::Endpoint;

/// Validated configuration of a [`FileSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSourceConfig {
    path: PathBuf,
    name: String,
    poll_interval: Duration,
    backoff: Backoff,
}

/// Builds a [`FileSourceConfig`]; see [`FileSourceConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct FileSourceConfigBuilder {
    config: FileSourceConfig,
}

/// Endpoints listed in a TOML or JSON file, reloaded when it changes.
///
/// The file is checked every `poll_interval` and parsed again when its
/// content changed. `.json` files are JSON, anything else TOML:
///
/// ```toml
/// [[endpoints]]
/// address = "10.0.0.1:8080"
///
/// [[endpoints]]
/// address = "10.0.0.2:8080"
/// weight = 2
/// metadata = { zone = "b" }
/// ```
///
/// ```json
/// {"endpoints": [{"address": "10.0.0.1:8080"}, {"address": "10.0.0.2:8080", "weight": 2}]}
/// ```
///
/// (a bare JSON array of entries works too). A file that cannot be read or
/// parsed keeps the last good set; an invalid entry is skipped alone.
#[derive(Debug)]
pub struct FileSource {
    config: FileSourceConfig,
}

struct Poller {
    path: PathBuf,
    poll_interval: Duration,
    last: Option<(Vec<u8>, Vec<Endpoint>)>,
}

// === impl FileSourceConfig ===

impl FileSourceConfig {
    /// The `name` metric label: `"file"`.
    pub const DEFAULT_NAME: &'static str = "file";
    /// How often the file is checked for changes: `5s`.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

    /// A builder for the file at `path`, with the defaults.
    pub fn builder(path: impl Into<PathBuf>) -> FileSourceConfigBuilder {
        FileSourceConfigBuilder {
            config: FileSourceConfig {
                path: path.into(),
                name: Self::DEFAULT_NAME.to_owned(),
                poll_interval: Self::DEFAULT_POLL_INTERVAL,
                backoff: Backoff::default(),
            },
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

// === impl FileSourceConfigBuilder ===

impl FileSourceConfigBuilder {
    /// Names the source: the `name` label of its metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// How often the file is checked (default
    /// [`FileSourceConfig::DEFAULT_POLL_INTERVAL`]).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.config.poll_interval = d;
        self
    }

    /// The retry delays after a failed read.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `poll_interval` is zero or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    pub fn build(self) -> Result<FileSourceConfig, ConfigError> {
        validate_name("name", &self.config.name)?;
        validate_positive_duration("poll_interval", self.config.poll_interval)?;
        Ok(self.config)
    }
}

// === impl FileSource ===

impl FileSource {
    /// A source reading the configured file.
    pub fn new(config: FileSourceConfig) -> Self {
        Self { config }
    }

    /// Starts watching the file.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn into_stream(self) -> SourceStream {
        let c = self.config;
        let status = SourceHealth::new(&c.name);
        spawn_polling(
            Poller {
                path: c.path,
                poll_interval: c.poll_interval,
                last: None,
            },
            status,
            c.backoff,
        )
    }
}

impl FetchSet for Poller {
    async fn fetch(
        &mut self,
        status: &SourceHealth,
    ) -> Result<(Vec<Endpoint>, Duration), BoxError> {
        let bytes = tokio::fs::read(&self.path).await?;
        if let Some((last, set)) = &self.last {
            if *last == bytes {
                return Ok((set.clone(), self.poll_interval));
            }
        }
        let json = self
            .path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let set = parse_file(&bytes, json, status)?;
        tracing::info!(path = %self.path.display(), endpoints = set.len(), "endpoint file loaded");
        self.last = Some((bytes, set.clone()));
        Ok((set, self.poll_interval))
    }
}

/// Parses a whole file; invalid entries are skipped alone.
pub(crate) fn parse_file(
    bytes: &[u8],
    json: bool,
    status: &SourceHealth,
) -> Result<Vec<Endpoint>, BoxError> {
    let doc: serde_json::Value = if json {
        serde_json::from_slice(bytes)?
    } else {
        let text = std::str::from_utf8(bytes)?;
        toml::from_str(text)?
    };
    let entries = match &doc {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => match o.get("endpoints") {
            Some(serde_json::Value::Array(a)) => a,
            None => return Ok(Vec::new()),
            Some(_) => return Err("\"endpoints\" is not a list".into()),
        },
        _ => return Err("expected a list of endpoints".into()),
    };
    let mut set = Vec::with_capacity(entries.len());
    for entry in entries {
        match parse_entry(entry) {
            Ok(ep) => set.push(ep),
            Err(why) => status.skipped(&entry.to_string(), &why),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn toml_and_json_parse_and_skip_bad_entries() {
        let status = SourceHealth::new("t");
        let toml = br#"
            [[endpoints]]
            address = "127.0.0.1:1"
            [[endpoints]]
            address = "nonsense"
            [[endpoints]]
            address = "[::1]:2"
            weight = 2
            metadata = { zone = "b" }
        "#;
        let set = parse_file(toml, false, &status).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set[1].weight(), 2);
        assert_eq!(set[1].metadata()["zone"], "b");
        let json = br#"[{"address": "127.0.0.1:1"}, {"address": 5}]"#;
        assert_eq!(parse_file(json, true, &status).unwrap().len(), 1);
        assert!(parse_file(b"{", true, &status).is_err());
        assert!(parse_file(b"endpoints = 3", false, &status).is_err());
        assert!(parse_file(b"", false, &status).unwrap().is_empty());
    }

    #[test]
    fn config_rejects_zero_interval() {
        let err = FileSourceConfig::builder("x.toml")
            .poll_interval(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "poll_interval");
        let err = FileSourceConfig::builder("x.toml")
            .poll_interval(resilience_core::config::MAX_DURATION + Duration::from_nanos(1))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "poll_interval");
    }
}
