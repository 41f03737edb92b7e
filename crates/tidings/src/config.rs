//! Configuration values shared by the subcommands: durations, keys, and the TOML file
//! of `tidings serve`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tidings_hub::auth::{KeyConfig, SigningKey};

/// Parses a duration such as `15s`, `500ms`, `10m`, `24h`, `7d`; a bare number is seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: expected a number and a unit (ms, s, m, h, d), as in 15s"
        ));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("invalid duration {text:?}: too long"))
    };
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => seconds(1),
        "m" | "min" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        other => Err(format!(
            "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
        )),
    }
}

/// Parses a size such as `64MiB`, `1GB`, `500k` or a bare number of bytes. Suffixes
/// with `i` are powers of 1024, the others of 1000 (`k`/`KB`, `M`/`MB`, `G`/`GB`,
/// `T`/`TB`; `B` alone is bytes); case does not matter.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "invalid size {text:?}: expected a number of bytes, or a number and a unit as in 64MiB"
        ));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: number too large"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000 * 1000,
        "g" | "gb" => 1000 * 1000 * 1000,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// A size in the TOML file: a number of bytes, or text for [`parse_size`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum ByteSize {
    /// A plain number of bytes.
    Bytes(u64),
    /// A number with a unit, such as `64MiB`.
    Text(String),
}

impl ByteSize {
    pub(crate) fn bytes(&self) -> Result<u64, String> {
        match self {
            ByteSize::Bytes(n) => Ok(*n),
            ByteSize::Text(text) => parse_size(text),
        }
    }
}

/// The text of a key given on the command line: the contents of the file it names, or
/// else the value itself (an inline PEM key, JWK set or HMAC secret). A file's contents
/// are used whatever they hold, a raw secret included (one trailing line break
/// dropped): the path itself never becomes a secret.
fn key_text(value: &str, what: &str) -> anyhow::Result<String> {
    let path = Path::new(value);
    if !path.is_file() {
        return Ok(value.to_owned());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what}: cannot read the key file {value}"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// A key that verifies tokens: a PEM public key (RS*, ES*, EdDSA) or a JWK set, inline
/// or as the path of a file, or an HMAC secret (inline or in a file).
pub(crate) fn verifying_key(value: &str, what: &str) -> anyhow::Result<KeyConfig> {
    let value = &key_text(value, what)?;
    if is_jwks(value) {
        return KeyConfig::from_jwks(value.as_bytes())
            .with_context(|| format!("{what}: invalid JWK set"));
    }
    check_secret(value, what)?;
    KeyConfig::from_secret_or_pem(value).with_context(|| format!("{what}: invalid PEM key"))
}

/// A key that signs tokens: a PEM private key or an HMAC secret, inline or in a file.
pub(crate) fn signing_key(value: &str, what: &str) -> anyhow::Result<SigningKey> {
    let value = &key_text(value, what)?;
    if is_jwks(value) {
        bail!("{what}: a JWK set verifies tokens but cannot sign them; give the private key");
    }
    check_secret(value, what)?;
    SigningKey::from_secret_or_pem(value).with_context(|| format!("{what}: invalid PEM key"))
}

fn is_jwks(value: &str) -> bool {
    value.trim_start().starts_with('{')
}

fn check_secret(value: &str, what: &str) -> anyhow::Result<()> {
    if value.is_empty() {
        bail!("{what}: the secret is empty");
    }
    Ok(())
}

/// The TOML file of `tidings serve --config`: the same settings as the flags, named
/// like them with `_` for `-`. Unknown keys are refused, so a typo is not ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) addr: Option<String>,
    pub(crate) jwt_key: Option<String>,
    pub(crate) publisher_jwt_key: Option<String>,
    pub(crate) subscriber_jwt_key: Option<String>,
    pub(crate) db: Option<PathBuf>,
    pub(crate) no_history: Option<bool>,
    pub(crate) history_size: Option<u64>,
    pub(crate) history_max_age: Option<String>,
    pub(crate) history_max_bytes: Option<ByteSize>,
    pub(crate) no_anonymous: Option<bool>,
    pub(crate) cors_origins: Option<Vec<String>>,
    pub(crate) publish_origins: Option<Vec<String>>,
    pub(crate) heartbeat: Option<String>,
    pub(crate) no_subscriptions: Option<bool>,
    pub(crate) queue_size: Option<usize>,
    pub(crate) no_demo: Option<bool>,
}

impl FileConfig {
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        toml::from_str(&text).map_err(|err| {
            // toml's own Display draws the offending line over several lines; say it in one.
            let line = err
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1);
            let at = line.map_or(String::new(), |n| format!(" (line {n})"));
            anyhow::anyhow!(
                "invalid configuration file {}{at}: {}",
                path.display(),
                err.message().trim()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("64MiB"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_size("64mib"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("500k"), Ok(500_000));
        assert_eq!(parse_size("2 KiB"), Ok(2048));
        assert_eq!(parse_size("12B"), Ok(12));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5GB").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        let file: FileConfig = toml::from_str("history_max_bytes = 4096").unwrap();
        assert_eq!(file.history_max_bytes.unwrap().bytes(), Ok(4096));
        let file: FileConfig = toml::from_str("history_max_bytes = \"1MiB\"").unwrap();
        assert_eq!(file.history_max_bytes.unwrap().bytes(), Ok(1 << 20));
    }

    #[test]
    fn file_refuses_unknown_keys() {
        let err = toml::from_str::<FileConfig>("adress = \"x\"").unwrap_err();
        assert!(err.to_string().contains("adress"));
        let ok: FileConfig =
            toml::from_str("addr = \"0.0.0.0:80\"\ncors_origins = [\"https://a\"]").unwrap();
        assert_eq!(ok.addr.as_deref(), Some("0.0.0.0:80"));
    }
}
