//! Configuration values shared by the subcommands: durations, keys, and the TOML file
//! of `tidings serve`.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tidings_hub::auth::{KeyConfig, SigningKey};

/// Splits a value such as `15s` or `64MiB` into its leading number and the unit after it
/// (trimmed); `what` and `expected` make the error.
fn number_and_unit<'a>(
    text: &'a str,
    what: &str,
    expected: &str,
) -> Result<(u64, &'a str), String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("invalid {what} {text:?}: expected {expected}"));
    }
    let n = number
        .parse()
        .map_err(|_| format!("invalid {what} {text:?}: number too large"))?;
    Ok((n, unit.trim()))
}

/// What a duration looks like, for the end of every message about one.
const DURATION_GRAMMAR: &str =
    "a duration is a number and a unit (ms, s, m, h or d), as in 90s, 1.5h or 2m30s";

/// The one duration grammar of every flag and TOML key: one or more numbers, each with a
/// unit (`ms`, `s`, `m` or `min`, `h`, `d`), added up: `90s`, `1.5h`, `500ms`, `2m30s`,
/// `1h 30m`. A bare number is seconds (`15`, `0.5`). A number may have decimals, and the
/// sum is exact to the nanosecond (no floating point). The error says why, not what was
/// given: clap and [`duration_setting`] add the flag and the value.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let text = text.trim();
    let mut rest = text;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(format!("empty; {DURATION_GRAMMAR}"));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty()
            || fraction.contains('.')
            || number.ends_with('.')
        {
            return Err(format!("not a duration; {DURATION_GRAMMAR}"));
        }
        if fraction.len() > 18 {
            return Err(format!("too many decimals in {number}; {DURATION_GRAMMAR}"));
        }
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            // A bare number is seconds, but only alone: `1h30` is a mistake, not 1h 30s.
            "" if text == number => NANOS_PER_SEC,
            "" => return Err(format!("{number} has no unit; {DURATION_GRAMMAR}")),
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" | "min" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            "d" => 86_400 * NANOS_PER_SEC,
            other => return Err(format!("unknown unit {other:?}; {DURATION_GRAMMAR}")),
        };
        let too_long = || "too long".to_owned();
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        // Both fit: the fraction is below 10^18 and a unit at most 8.64 * 10^13 ns.
        let fraction_nanos = if fraction.is_empty() {
            0
        } else {
            let value: u128 = fraction.parse().map_err(|_| too_long())?;
            value * unit_nanos / 10u128.pow(fraction.len() as u32)
        };
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(total))
            .ok_or_else(too_long)?;
        rest = after.trim_start();
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| "too long".to_owned())?;
    // Below 10^9: fits.
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

/// A duration setting of `tidings serve` (flag, variable or TOML key), its error naming
/// the flag and the value: `invalid --heartbeat "soon": not a duration; ...`.
pub(crate) fn duration_setting(text: &str, flag: &str) -> anyhow::Result<Duration> {
    parse_duration(text).map_err(|reason| anyhow::anyhow!("invalid {flag} {text:?}: {reason}"))
}

/// A duration key of the TOML file: text for [`parse_duration`] or a number of seconds
/// (`heartbeat = 5`), kept as text and parsed with the flag's name when it is used.
fn duration_key<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Seconds(u64),
        Fraction(f64),
        Text(String),
    }
    Ok(
        Option::<Value>::deserialize(deserializer)?.map(|value| match value {
            Value::Seconds(n) => n.to_string(),
            Value::Fraction(x) => x.to_string(),
            Value::Text(text) => text,
        }),
    )
}

/// Parses the address `tidings serve` listens on: `IP:PORT`, `[IPv6]:PORT`, `:PORT` for
/// every IPv4 interface (`0.0.0.0:PORT`, as Go reads it), `localhost:PORT` for
/// `127.0.0.1:PORT`, or `HOST:PORT` with a name resolved once, here (its first address).
pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    const FORMS: &str = "expected IP:PORT, HOST:PORT, [IPv6]:PORT or :PORT";
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if text.parse::<u16>().is_ok() {
        return Err(format!(
            "a port alone is ambiguous: give :{text} (every interface) or 127.0.0.1:{text} \
             (this machine only)"
        ));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("no port; {FORMS}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port {port:?}; {FORMS}"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if host.contains(':') {
        return Err(format!(
            "an IPv6 address needs brackets, as in [{}]:{port}",
            host.trim_start_matches('[').trim_end_matches(']')
        ));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {host:?}: {err}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// Parses a size such as `64MiB`, `1GB`, `500k` or a bare number of bytes. Suffixes
/// with `i` are powers of 1024, the others of 1000 (`k`/`KB`, `M`/`MB`, `G`/`GB`,
/// `T`/`TB`; `B` alone is bytes); case does not matter.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (n, unit) = number_and_unit(
        text,
        "size",
        "a number of bytes, or a number and a unit as in 64MiB",
    )?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
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

/// The shortest HMAC secret accepted without `--allow-weak-key`: 32 bytes (256 bits), the
/// size of the HS256 hash, below which the secret is easier to guess than the hash is to
/// break (RFC 7518, section 3.2).
pub(crate) const MIN_SECRET_LEN: usize = 32;

/// The rule by which a key value is read, for the `--help` of every option that takes a
/// key (a macro, so that `concat!` can append it to each option's own text).
macro_rules! key_rule {
    () => {
        "A value is read from a file when it is `@PATH` or `file:PATH`, when it names an \
         existing file, or when it looks like a path: it starts with `/`, `./`, `../` or `~/`, \
         or it contains a `/` and no whitespace (`secrets/key`); a PEM key (`-----BEGIN`), a \
         JWK set (`{`) and a base64 text of 43 characters or more (as `openssl rand -base64 \
         32` prints) that does not start like a path are never paths. A file that cannot be read is an error, never a \
         secret. Any other value is the key itself. An HMAC secret must be at least 32 bytes \
         (256 bits) unless --allow-weak-key is given. To pass a secret that would look like \
         a path, put it in a file and give `@FILE`."
    };
}
pub(crate) use key_rule;

/// Where a key value says its key is.
#[derive(Debug, PartialEq, Eq)]
enum KeySource<'a> {
    /// The value is the key.
    Inline(&'a str),
    /// The key is the contents of this file.
    File(&'a str),
}

/// Applies the rule of [`key_rule`].
fn key_source(value: &str) -> KeySource<'_> {
    if let Some(path) = value
        .strip_prefix('@')
        .or_else(|| value.strip_prefix("file:"))
    {
        return KeySource::File(path);
    }
    if looks_like_pem(value) || is_jwks(value) {
        return KeySource::Inline(value);
    }
    if looks_like_path(value) || Path::new(value).is_file() {
        return KeySource::File(value);
    }
    KeySource::Inline(value)
}

fn looks_like_pem(value: &str) -> bool {
    value.trim_start().starts_with("-----BEGIN")
}

/// Whether a value that is not a PEM key nor a JWK set reads as a path.
fn looks_like_path(value: &str) -> bool {
    // A value that starts like a path is one, always: a missing secrets file must be an
    // error, never a secret made of its path, however the path is spelt.
    let prefixed = ["/", "./", "../", "~/"]
        .iter()
        .any(|prefix| value.starts_with(prefix));
    let bare = value.contains('/') && !value.chars().any(char::is_whitespace);
    prefixed || (bare && !looks_like_base64_secret(value))
}

/// A standard-alphabet base64 text long enough to hold 32 bytes: a secret made by
/// `openssl rand -base64 32` (which holds a `/` half of the time), not a path.
fn looks_like_base64_secret(value: &str) -> bool {
    let body = value.trim_end_matches('=');
    value.len() - body.len() <= 2
        && body.len() >= 43
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The text of a key given on the command line: the contents of the file it names (its
/// trailing line breaks dropped), or else the value itself (an inline PEM key, JWK set or
/// HMAC secret). A file that cannot be read is an error naming the path and the
/// operating system's reason: the path itself never becomes a secret.
fn key_text(value: &str, what: &str) -> anyhow::Result<String> {
    let path = match key_source(value) {
        KeySource::Inline(text) => return Ok(text.to_owned()),
        KeySource::File(path) => path,
    };
    let full = match path.strip_prefix("~/") {
        Some(rest) => {
            let home = std::env::var_os("HOME").with_context(|| {
                format!("{what}: cannot read the key file {path}: HOME is not set")
            })?;
            Path::new(&home).join(rest)
        }
        None => PathBuf::from(path),
    };
    let text = std::fs::read_to_string(&full)
        .with_context(|| format!("{what}: cannot read the key file {path}"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// A key that verifies tokens: a PEM public key (RS*, ES*, EdDSA), a JWK set or an HMAC
/// secret, inline or in a file (see [`key_rule`]). `what` names the option in
/// errors; `allow_weak` accepts HMAC secrets shorter than [`MIN_SECRET_LEN`].
pub(crate) fn verifying_key(
    value: &str,
    what: &str,
    allow_weak: bool,
) -> anyhow::Result<KeyConfig> {
    let value = &key_text(value, what)?;
    if is_jwks(value) {
        let key = KeyConfig::from_jwks(value.as_bytes())
            .with_context(|| format!("{what}: invalid JWK set"))?;
        check_jwks_secrets(value, what, allow_weak)?;
        return Ok(key);
    }
    if !looks_like_pem(value) {
        check_secret(value.len(), what, allow_weak)?;
    }
    KeyConfig::from_secret_or_pem(value).with_context(|| format!("{what}: invalid PEM key"))
}

/// A key that signs tokens: a PEM private key or an HMAC secret, inline or in a file
/// (see [`key_rule`]).
pub(crate) fn signing_key(value: &str, what: &str, allow_weak: bool) -> anyhow::Result<SigningKey> {
    let value = &key_text(value, what)?;
    if is_jwks(value) {
        bail!("{what}: a JWK set verifies tokens but cannot sign them; give the private key");
    }
    if !looks_like_pem(value) {
        check_secret(value.len(), what, allow_weak)?;
    }
    SigningKey::from_secret_or_pem(value).with_context(|| format!("{what}: invalid PEM key"))
}

fn is_jwks(value: &str) -> bool {
    value.trim_start().starts_with('{')
}

/// Refuses an empty secret always, and one shorter than [`MIN_SECRET_LEN`] unless
/// `allow_weak`.
fn check_secret(len: usize, what: &str, allow_weak: bool) -> anyhow::Result<()> {
    if len == 0 {
        bail!("{what}: the secret is empty");
    }
    if len < MIN_SECRET_LEN && !allow_weak {
        let unit = if len == 1 { "byte" } else { "bytes" };
        bail!(
            "{what}: HMAC secret too short: {len} {unit}; at least {MIN_SECRET_LEN} bytes \
             ({} bits) are needed; pass --allow-weak-key to accept it anyway",
            MIN_SECRET_LEN * 8
        );
    }
    Ok(())
}

/// Applies [`check_secret`] to the `oct` (HMAC) keys of a JWK set the hub accepted.
fn check_jwks_secrets(jwks: &str, what: &str, allow_weak: bool) -> anyhow::Result<()> {
    let Ok(set) = serde_json::from_str::<serde_json::Value>(jwks) else {
        return Ok(());
    };
    let keys = set.get("keys").and_then(|k| k.as_array());
    for key in keys.into_iter().flatten() {
        if key.get("kty").and_then(|v| v.as_str()) != Some("oct") {
            continue;
        }
        let Some(k) = key.get("k").and_then(|v| v.as_str()) else {
            continue;
        };
        // Unpadded base64url: every 4 characters hold 3 bytes.
        let len = k.trim_end_matches('=').len() * 3 / 4;
        let kid = key
            .get("kid")
            .and_then(|v| v.as_str())
            .unwrap_or("without kid");
        check_secret(len, &format!("{what}: JWK set key {kid}"), allow_weak)?;
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
    pub(crate) allow_weak_key: Option<bool>,
    pub(crate) db: Option<PathBuf>,
    pub(crate) no_history: Option<bool>,
    pub(crate) redis: Option<String>,
    pub(crate) redis_stream: Option<String>,
    pub(crate) history_size: Option<u64>,
    #[serde(default, deserialize_with = "duration_key")]
    pub(crate) history_max_age: Option<String>,
    pub(crate) history_max_bytes: Option<ByteSize>,
    pub(crate) no_anonymous: Option<bool>,
    pub(crate) cors_origins: Option<Vec<String>>,
    pub(crate) publish_origins: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration_key")]
    pub(crate) heartbeat: Option<String>,
    pub(crate) no_subscriptions: Option<bool>,
    pub(crate) queue_size: Option<usize>,
    pub(crate) queue_bytes: Option<ByteSize>,
    pub(crate) max_body_size: Option<ByteSize>,
    pub(crate) max_topics: Option<usize>,
    pub(crate) max_subscribers: Option<usize>,
    pub(crate) max_live_templates: Option<usize>,
    pub(crate) max_selector_length: Option<usize>,
    pub(crate) max_template_prefix: Option<u16>,
    pub(crate) max_template_bytes: Option<usize>,
    pub(crate) max_subscription_template_bytes: Option<usize>,
    pub(crate) template_cache_size: Option<usize>,
    pub(crate) no_demo: Option<bool>,
    #[serde(default, deserialize_with = "duration_key")]
    pub(crate) header_timeout: Option<String>,
    #[serde(default, deserialize_with = "duration_key")]
    pub(crate) write_timeout: Option<String>,
    #[serde(default, deserialize_with = "duration_key")]
    pub(crate) keep_alive_timeout: Option<String>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) max_requests_per_ip: Option<usize>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
    pub(crate) h2_max_streams: Option<u32>,
    #[serde(default, deserialize_with = "duration_key")]
    pub(crate) shutdown_grace: Option<String>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) tls_self_signed: Option<bool>,
    pub(crate) tls_no_http2: Option<bool>,
    #[serde(default, deserialize_with = "duration_key")]
    pub(crate) tls_reload_interval: Option<String>,
    /// `text` or `json` (read before the rest, to set up logging).
    pub(crate) log_format: Option<LogFormat>,
    pub(crate) metrics_addr: Option<String>,
}

/// How `tidings serve` writes its log lines on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// One human-readable line per event, with the span's fields before it.
    #[default]
    Text,
    /// One JSON object per line (for log shippers): timestamp, level, target, the
    /// event's fields and the request span's.
    Json,
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
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("15s", Duration::from_secs(15)),
            ("15", Duration::from_secs(15)),
            (" 15 s ", Duration::from_secs(15)),
            ("0.5", ms(500)),
            ("500ms", ms(500)),
            ("90s", Duration::from_secs(90)),
            ("1.5s", ms(1500)),
            ("1.5h", Duration::from_secs(5400)),
            ("2m30s", Duration::from_secs(150)),
            ("1h 30m", Duration::from_secs(5400)),
            ("10min", Duration::from_secs(600)),
            ("1d", Duration::from_secs(86_400)),
            ("0.25ms", Duration::from_micros(250)),
            ("0.000000001s", Duration::from_nanos(1)),
            (".5s", ms(500)),
            ("0", Duration::ZERO),
            (
                "213503982334601d",
                Duration::from_secs(213_503_982_334_601 * 86_400),
            ),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
        let grammar = DURATION_GRAMMAR;
        for (text, reason) in [
            ("", format!("empty; {grammar}")),
            ("s", format!("not a duration; {grammar}")),
            ("soon", format!("not a duration; {grammar}")),
            ("-5s", format!("not a duration; {grammar}")),
            ("5.s", format!("not a duration; {grammar}")),
            ("1.2.3s", format!("not a duration; {grammar}")),
            ("5 weeks", format!("unknown unit \"weeks\"; {grammar}")),
            ("1.5x", format!("unknown unit \"x\"; {grammar}")),
            ("1e400s", format!("unknown unit \"e\"; {grammar}")),
            ("1h30", format!("30 has no unit; {grammar}")),
            ("99999999999999999999999d", "too long".to_owned()),
            ("213503982334602d", "too long".to_owned()),
        ] {
            assert_eq!(parse_duration(text), Err(reason), "{text:?}");
        }
        assert_eq!(
            duration_setting("soon", "--heartbeat")
                .unwrap_err()
                .to_string(),
            format!("invalid --heartbeat \"soon\": not a duration; {grammar}")
        );
        let file: FileConfig = toml::from_str("heartbeat = 5\nshutdown_grace = \"1.5s\"").unwrap();
        assert_eq!(file.heartbeat.as_deref(), Some("5"));
        assert_eq!(file.shutdown_grace.as_deref(), Some("1.5s"));
        assert!(file.write_timeout.is_none());
    }

    #[test]
    fn listen_addresses() {
        let addr = |text: &str| parse_addr(text).map(|a| a.to_string());
        assert_eq!(addr("127.0.0.1:3000").as_deref(), Ok("127.0.0.1:3000"));
        assert_eq!(addr(":3000").as_deref(), Ok("0.0.0.0:3000"));
        assert_eq!(addr("localhost:3000").as_deref(), Ok("127.0.0.1:3000"));
        assert_eq!(addr("LOCALHOST:0").as_deref(), Ok("127.0.0.1:0"));
        assert_eq!(addr("[::1]:3000").as_deref(), Ok("[::1]:3000"));
        assert_eq!(addr("[::]:80").as_deref(), Ok("[::]:80"));
        assert_eq!(
            addr("3000"),
            Err(
                "a port alone is ambiguous: give :3000 (every interface) or \
                 127.0.0.1:3000 (this machine only)"
                    .to_owned()
            )
        );
        let forms = "expected IP:PORT, HOST:PORT, [IPv6]:PORT or :PORT";
        assert_eq!(addr("localhost"), Err(format!("no port; {forms}")));
        assert_eq!(
            addr("localhost:http"),
            Err(format!("invalid port \"http\"; {forms}"))
        );
        assert_eq!(
            addr(":70000"),
            Err(format!("invalid port \"70000\"; {forms}"))
        );
        assert_eq!(
            addr("::1:3000"),
            Err("an IPv6 address needs brackets, as in [::1]:3000".to_owned())
        );
    }

    #[test]
    fn key_values_that_name_files() {
        use KeySource::{File, Inline};
        for (value, source) in [
            ("@/run/secrets/k", File("/run/secrets/k")),
            ("@relative", File("relative")),
            ("file:/run/secrets/k", File("/run/secrets/k")),
            ("/run/secrets/k", File("/run/secrets/k")),
            ("/dir with space/k", File("/dir with space/k")),
            ("./k", File("./k")),
            ("../k", File("../k")),
            ("~/k", File("~/k")),
            ("secrets/k", File("secrets/k")),
            (
                "a pass/phrase with spaces",
                Inline("a pass/phrase with spaces"),
            ),
            ("no-slash-secret", Inline("no-slash-secret")),
            (
                "-----BEGIN PUBLIC KEY-----\n/x\n",
                Inline("-----BEGIN PUBLIC KEY-----\n/x\n"),
            ),
            ("{\"keys\": [\"/\"]}", Inline("{\"keys\": [\"/\"]}")),
            // What `openssl rand -base64 32` prints: a secret, slashes or not.
            (
                "q2Jd/8sK+3kZpW0vXr7yTn5mLc1hBf9gAe4uIo6jQs8=",
                Inline("q2Jd/8sK+3kZpW0vXr7yTn5mLc1hBf9gAe4uIo6jQs8="),
            ),
            // One that starts like a path is read as one (put such a secret in a file).
            (
                "/2Jd/8sK+3kZpW0vXr7yTn5mLc1hBf9gAe4uIo6jQs8",
                File("/2Jd/8sK+3kZpW0vXr7yTn5mLc1hBf9gAe4uIo6jQs8"),
            ),
            // A long secrets path made of base64 characters is a path, never a secret.
            (
                "/run/secrets/tidingsPublisherJwtKeyProduction",
                File("/run/secrets/tidingsPublisherJwtKeyProduction"),
            ),
        ] {
            assert_eq!(key_source(value), source, "{value:?}");
        }
        // A short base64-looking path is still a path.
        assert_eq!(
            key_source("/var/lib/tidings/key"),
            File("/var/lib/tidings/key")
        );
    }

    #[test]
    fn short_secrets_need_allow_weak_key() {
        let err = signing_key("x", "--jwt-key", false).err().unwrap();
        assert_eq!(
            err.to_string(),
            "--jwt-key: HMAC secret too short: 1 byte; at least 32 bytes (256 bits) are \
             needed; pass --allow-weak-key to accept it anyway"
        );
        let err = verifying_key(&"k".repeat(31), "--jwt-key", false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("too short: 31 bytes;"), "{err}");
        assert!(verifying_key(&"k".repeat(32), "--jwt-key", false).is_ok());
        assert!(signing_key("x", "--jwt-key", true).is_ok());
        // Empty is never a key, weak or not.
        assert!(signing_key("", "--jwt-key", true).is_err());
    }

    #[test]
    fn the_generated_dev_key_is_long_enough() {
        for _ in 0..16 {
            let secret = tidings_hub::auth::generate_secret();
            assert!(secret.len() >= MIN_SECRET_LEN, "{secret}");
            assert!(signing_key(&secret, "dev key", false).is_ok());
        }
    }

    #[test]
    fn short_hmac_keys_of_a_jwk_set_are_refused() {
        // "c2VjcmV0" is base64url for the 6 bytes "secret".
        let weak = r#"{"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]}"#;
        let err = verifying_key(weak, "--jwt-key", false).err().unwrap();
        assert!(
            err.to_string()
                .starts_with("--jwt-key: JWK set key k1: HMAC secret too short: 6 bytes;"),
            "{err}"
        );
        assert!(verifying_key(weak, "--jwt-key", true).is_ok());
        let k = "A".repeat(43); // 32 bytes
        let strong = format!(r#"{{"keys": [{{"kty": "oct", "k": "{k}"}}]}}"#);
        assert!(verifying_key(&strong, "--jwt-key", false).is_ok());
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
    fn log_format_and_metrics_addr_keys() {
        let file: FileConfig =
            toml::from_str("log_format = \"json\"\nmetrics_addr = \"127.0.0.1:9100\"").unwrap();
        assert_eq!(file.log_format, Some(LogFormat::Json));
        assert_eq!(file.metrics_addr.as_deref(), Some("127.0.0.1:9100"));
        let file: FileConfig = toml::from_str("log_format = \"text\"").unwrap();
        assert_eq!(file.log_format, Some(LogFormat::Text));
        let err = toml::from_str::<FileConfig>("log_format = \"xml\"").unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");
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
