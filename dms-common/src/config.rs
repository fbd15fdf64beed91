//! Config loading shared by the daemons: a YAML file, then environment overrides, then typed
//! deserialization that rejects unknown keys, then the daemon's own validation. Every error
//! names the file, the key and the bad value.
//!
//! Environment overrides: `DMS_STORE__PATH=/var/lib/dms/bars.db` sets `store.path`; `__`
//! separates levels, a number selects a list element (`DMS_SOURCES__0__DIR`). The value is read
//! as a YAML scalar, so `true`, `5` and `1.5` become a bool and numbers (quote a value to keep it
//! a string: `DMS_X='"600519"'`). `DMS_CONFIG`, `DMS_LOG` and `DMS_LOG_FORMAT` are options of
//! the binaries, not overrides.
//!
//! Also here: [`ConfigDuration`] (`30s`, `5m`, `2h`, `7d`) and [`ByteSize`] (`512MiB`, `1GiB`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Environment variables that are binary options, never config overrides.
pub const RESERVED_ENV: &[&str] = &["DMS_CONFIG", "DMS_LOG", "DMS_LOG_FORMAT"];

/// YAML 1.2 scalars: only `true`/`false` are booleans, so `y`, `no` or `on` stay strings.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

/// One problem with a config value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key, e.g. `store.path` or `sources[0].dir`.
    pub key: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid YAML: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: environment variable {var}: {message}", path.display())]
    Env {
        path: PathBuf,
        var: String,
        message: String,
    },
    #[error("{}: {}", path.display(), format_issues(issues))]
    Invalid {
        path: PathBuf,
        issues: Vec<ConfigIssue>,
    },
}

fn format_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("{}: {}", i.key, i.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A config type that can check itself after deserialization.
pub trait Validate {
    /// Every problem found; empty when the config is usable.
    fn validate(&self) -> Vec<ConfigIssue>;
}

/// Loads `path` as YAML, applies overrides from `env` (pass `std::env::vars()`), deserializes
/// into `T` and validates it.
pub fn load<T, I>(path: &Path, env: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
    I: IntoIterator<Item = (String, String)>,
{
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(path, &text, env)
}

/// Like [`load`], from text already read (`path` is used in messages).
pub fn load_str<T, I>(path: &Path, text: &str, env: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
    I: IntoIterator<Item = (String, String)>,
{
    let mut value: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| {
            ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?
    };
    if value.is_null() {
        value = Value::Object(Default::default());
    }
    let mut overridden = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("DMS_") && !RESERVED_ENV.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let key = apply_override(&mut value, &var, &raw).map_err(|message| ConfigError::Env {
            path: path.to_path_buf(),
            var: var.clone(),
            message,
        })?;
        overridden.push((key, var));
    }
    let config: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let (key, mut message) = split_nested(e.path().to_string(), e.inner().to_string());
        if let Some((_, var)) = overridden.iter().find(|(k, _)| *k == key) {
            message = format!("{message} (set by {var})");
        }
        ConfigError::Invalid {
            path: path.to_path_buf(),
            issues: vec![ConfigIssue { key, message }],
        }
    })?;
    let issues = config.validate();
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            issues,
        })
    }
}

/// Marks the key path inside an error raised by [`from_value_at`].
const NESTED: char = '\u{1}';

/// Deserializes `value` as `T` inside a hand-written `Deserialize` (e.g. of a tagged enum whose
/// variant is chosen from a `type` key), keeping the path of a failing key so the final message
/// names it in full (`sources[0].interval`, not `sources[0]`).
pub fn from_value_at<T: DeserializeOwned, E: serde::de::Error>(value: Value) -> Result<T, E> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| nested_error(&e.path().to_string(), e.inner()))
}

/// An error about the key `path` below the value being deserialized.
pub fn nested_error<E: serde::de::Error>(path: &str, message: impl fmt::Display) -> E {
    let message = message.to_string();
    // Keep a path that is already nested deeper.
    let (inner, message) = split_nested(String::new(), message);
    let path = match (path, inner.as_str()) {
        (".", i) | ("", i) => i.to_owned(),
        (p, "") => p.to_owned(),
        (p, i) if i.starts_with('[') => format!("{p}{i}"),
        (p, i) => format!("{p}.{i}"),
    };
    E::custom(format!("{NESTED}{path}{NESTED}{message}"))
}

/// Joins an outer key path with a nested one carried in `message`.
fn split_nested(outer: String, message: String) -> (String, String) {
    let Some(rest) = message.strip_prefix(NESTED) else {
        return (outer, message);
    };
    let Some((inner, message)) = rest.split_once(NESTED) else {
        return (outer, message);
    };
    let key = match (outer.as_str(), inner) {
        (".", i) | ("", i) => i.to_owned(),
        (o, "") => o.to_owned(),
        (o, i) if i.starts_with('[') => format!("{o}{i}"),
        (o, i) => format!("{o}.{i}"),
    };
    (key, message.to_owned())
}

/// Deserializes a tagged enum from `value`: reads and removes `tag` (using `default_tag` when
/// absent, else failing), then lets `build` deserialize the rest for that variant.
pub fn deserialize_tagged<T, E>(
    mut value: Value,
    tag: &str,
    default_tag: Option<&str>,
    variants: &[&str],
    build: impl FnOnce(&str, Value) -> Result<T, E>,
) -> Result<T, E>
where
    E: serde::de::Error,
{
    let Some(map) = value.as_object_mut() else {
        return Err(E::custom(format!(
            "expected a mapping with a `{tag}` key, got {value}"
        )));
    };
    let kind = match map.remove(tag) {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(nested_error(
                tag,
                format!("expected one of {}, got {other}", variants.join(", ")),
            ));
        }
        None => match default_tag {
            Some(d) => d.to_owned(),
            None => {
                return Err(E::custom(format!(
                    "missing field `{tag}` (one of {})",
                    variants.join(", ")
                )));
            }
        },
    };
    if !variants.contains(&kind.as_str()) {
        return Err(nested_error(
            tag,
            format!(
                "unknown {tag} `{kind}`, expected one of {}",
                variants.join(", ")
            ),
        ));
    }
    build(&kind, value)
}

/// Sets the value named by `var` (`DMS_A__B__0__C`); returns the dotted key it set.
fn apply_override(root: &mut Value, var: &str, raw: &str) -> Result<String, String> {
    let segments: Vec<String> = var["DMS_".len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err("empty key segment (use __ between levels)".into());
    }
    let parsed: Value = if raw.is_empty() {
        Value::String(String::new())
    } else {
        serde_saphyr::from_str_with_options(raw, yaml_options())
            .unwrap_or_else(|_| Value::String(raw.to_owned()))
    };
    let mut node = root;
    let mut key = String::new();
    for (n, seg) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        if let Value::Array(items) = node {
            let index: usize = seg
                .parse()
                .map_err(|_| format!("{key} is a list; expected an index, got {seg:?}"))?;
            let len = items.len();
            let item = items.get_mut(index).ok_or_else(|| {
                format!("{key} has {len} elements; index {index} is out of range")
            })?;
            key = format!("{key}[{index}]");
            if last {
                *item = parsed;
                return Ok(key);
            }
            node = item;
            continue;
        }
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let map = node.as_object_mut().expect("object");
        key = if key.is_empty() {
            seg.clone()
        } else {
            format!("{key}.{seg}")
        };
        if last {
            map.insert(seg.clone(), parsed);
            return Ok(key);
        }
        node = map
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(key)
}

/// A secret (token, password) from the config: never printed. Its `Debug` and its serialized
/// form (what `check-config` prints) are `"<redacted>"`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The shortest token a daemon accepts: 32 characters (e.g. `openssl rand -hex 32` gives 64),
/// so that guessing one over the network is hopeless.
pub const MIN_TOKEN_CHARS: usize = 32;

/// A bearer token given inline (`token`, e.g. from `DMS_..._TOKEN` overrides) or in a file
/// (`token_file`, the file's content without surrounding whitespace). Either is at least
/// [`MIN_TOKEN_CHARS`] characters.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The token itself. Prefer `token_file`; never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
}

impl TokenConfig {
    /// A DMS bearer token: [`TokenConfig::resolve_secret`], and at least [`MIN_TOKEN_CHARS`]
    /// characters.
    pub fn resolve(&self, key: &str) -> Result<Option<Secret>, ConfigIssue> {
        let secret = self.resolve_secret(key)?;
        match &secret {
            Some(s) => {
                let key = match self.token_file {
                    Some(_) => format!("{key}.token_file"),
                    None => format!("{key}.token"),
                };
                check_token_length(&key, s.expose())
            }
            None => Ok(None),
        }
    }

    /// The secret (a token, or another server's password), reading `token_file` if set;
    /// `None` when neither is given. `key` names the config section in errors.
    pub fn resolve_secret(&self, key: &str) -> Result<Option<Secret>, ConfigIssue> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(ConfigIssue::new(
                key,
                "give either `token` or `token_file`, not both",
            )),
            (Some(t), None) if t.0.trim().is_empty() => Err(ConfigIssue::new(
                format!("{key}.token"),
                "must not be empty",
            )),
            (Some(t), None) => Ok(Some(Secret(t.0.trim().to_owned()))),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigIssue::new(
                        format!("{key}.token_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(ConfigIssue::new(
                        format!("{key}.token_file"),
                        format!("{} is empty", path.display()),
                    ));
                }
                Ok(Some(Secret(t.to_owned())))
            }
            (None, None) => Ok(None),
        }
    }
}

/// `token` as a [`Secret`] when it is long enough; the error never shows it.
fn check_token_length(key: &str, token: &str) -> Result<Option<Secret>, ConfigIssue> {
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(ConfigIssue::new(
            key,
            format!(
                "the token has {chars} characters; at least {MIN_TOKEN_CHARS} are required (make one with `openssl rand -hex 32`)"
            ),
        ));
    }
    Ok(Some(Secret(token.to_owned())))
}

/// A duration written as `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d`, or a plain
/// number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn from_secs(s: u64) -> Self {
        ConfigDuration(Duration::from_secs(s))
    }
}

impl std::str::FromStr for ConfigDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 30s, 5m, 2h or 7d"))?;
        let secs = match unit.trim() {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86_400.0,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?}; use ms, s, m, h or d"
                ));
            }
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("{s:?} is not a valid duration"));
        }
        Ok(ConfigDuration(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            m if m % 86_400_000 == 0 && m > 0 => write!(f, "{}d", m / 86_400_000),
            m if m % 3_600_000 == 0 && m > 0 => write!(f, "{}h", m / 3_600_000),
            m if m % 60_000 == 0 && m > 0 => write!(f, "{}m", m / 60_000),
            m if m % 1000 == 0 => write!(f, "{}s", m / 1000),
            m => write!(f, "{m}ms"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_f64()
                .filter(|s| *s >= 0.0)
                .map(|s| ConfigDuration(Duration::from_secs_f64(s)))
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a valid duration"))),
            Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected a duration like 30s, 5m, 2h or 7d, got {other}"
            ))),
        }
    }
}

impl serde::Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A size in bytes written as a number or `<number><unit>` with unit `B`, `KiB`, `MiB`, `GiB`
/// (or `KB`, `MB`, `GB`, also powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size like 512MiB or 1GiB"))?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1u64,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?}; use B, KiB, MiB, GiB or TiB"
                ));
            }
        };
        if !n.is_finite() || n < 0.0 {
            return Err(format!("{s:?} is not a valid size"));
        }
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        match b {
            b if b >= 1 << 30 && b % (1 << 30) == 0 => write!(f, "{}GiB", b >> 30),
            b if b >= 1 << 20 && b % (1 << 20) == 0 => write!(f, "{}MiB", b >> 20),
            b if b >= 1 << 10 && b % (1 << 10) == 0 => write!(f, "{}KiB", b >> 10),
            b => write!(f, "{b}B"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(ByteSize)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a valid size"))),
            Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected a size like 512MiB or 1GiB, got {other}"
            ))),
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        store: Store,
        #[serde(default)]
        sources: Vec<Source>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Store {
        path: String,
        #[serde(default)]
        cache: Option<ByteSize>,
        #[serde(default)]
        timeout: Option<ConfigDuration>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Source {
        dir: String,
        #[serde(default)]
        enabled: bool,
    }
    impl Validate for Conf {
        fn validate(&self) -> Vec<ConfigIssue> {
            if self.store.path.is_empty() {
                vec![ConfigIssue::new("store.path", "must not be empty")]
            } else {
                vec![]
            }
        }
    }

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const YAML: &str =
        "store:\n  path: ./data/bars.db\n  cache: 64MiB\nsources:\n  - dir: a\n  - dir: b\n";

    #[test]
    fn loads_yaml_with_env_overrides() {
        let c: Conf = load_str(
            Path::new("x.yaml"),
            YAML,
            env(&[
                ("DMS_STORE__PATH", "/var/lib/dms/bars.db"),
                ("DMS_STORE__TIMEOUT", "2m"),
                ("DMS_SOURCES__1__ENABLED", "true"),
                ("DMS_CONFIG", "ignored.yaml"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.store.path, "/var/lib/dms/bars.db");
        assert_eq!(c.store.cache, Some(ByteSize(64 << 20)));
        assert_eq!(c.store.timeout, Some(ConfigDuration::from_secs(120)));
        assert!(!c.sources[0].enabled && c.sources[1].enabled);
        assert_eq!(c.sources[1].dir, "b");
    }

    #[test]
    fn unknown_key_is_named_with_file() {
        let err = load_str::<Conf, _>(
            Path::new("conf/dms.yaml"),
            "store:\n  path: x\n  pathh: y\n",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("conf/dms.yaml: store"), "{err}");
        assert!(err.contains("pathh"), "{err}");
    }

    #[test]
    fn bad_value_names_key_and_env_var() {
        let err = load_str::<Conf, _>(
            Path::new("c.yaml"),
            YAML,
            env(&[("DMS_STORE__CACHE", "lots")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("store.cache"), "{err}");
        assert!(err.contains("\"lots\""), "{err}");
        assert!(err.contains("DMS_STORE__CACHE"), "{err}");
        let err = load_str::<Conf, _>(Path::new("c.yaml"), "store:\n  path: ''\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "c.yaml: store.path: must not be empty");
        let err = load_str::<Conf, _>(
            Path::new("c.yaml"),
            YAML,
            env(&[("DMS_SOURCES__5__DIR", "z")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("DMS_SOURCES__5__DIR") && err.contains("out of range"),
            "{err}"
        );
    }

    #[test]
    fn malformed_yaml_is_reported() {
        let err = load_str::<Conf, _>(Path::new("c.yaml"), "store: [\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.yaml: not valid YAML"), "{err}");
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(
            "7d".parse::<ConfigDuration>().unwrap().0,
            Duration::from_secs(604_800)
        );
        assert_eq!(
            "250ms".parse::<ConfigDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert!("5 fortnights".parse::<ConfigDuration>().is_err());
        assert_eq!("1GiB".parse::<ByteSize>().unwrap(), ByteSize(1 << 30));
        assert_eq!("512".parse::<ByteSize>().unwrap(), ByteSize(512));
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ConfigDuration::from_secs(3600).to_string(), "1h");
    }
}
