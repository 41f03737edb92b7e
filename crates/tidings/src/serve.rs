//! `tidings serve`: run the hub.
//!
//! Every setting is a flag, a `TIDINGS_*` environment variable and a key of the TOML
//! file given with `--config`, in that order of precedence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use tidings_hub::auth::{KeyConfig, generate_secret};
use tidings_hub::log::Retention;
use tidings_hub::tls::{SelfSigned, TlsConfig, TlsError, TlsHandle};
use tidings_hub::topic::{DEFAULT_TEMPLATE_CACHE_BYTES, SelectorLimits};
use tidings_hub::{
    AddrRange, DEFAULT_HEARTBEAT, DEFAULT_MAX_BODY, DEFAULT_MAX_LIVE_TEMPLATES,
    DEFAULT_MAX_SUBSCRIBERS, DEFAULT_MAX_TOPICS, DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_CAPACITY, Hub,
    HubBuilder, ServerLimits,
};

use crate::config::{
    ByteSize, FileConfig, LogFormat, duration_setting, key_rule, parse_addr, verifying_key,
};

mod getting_started;

use getting_started::GettingStarted;

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_DB: &str = "./tidings.db";
const DEFAULT_REDIS_STREAM: &str = "tidings";

/// Options of `tidings serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A TOML file with any of these settings (keys named like the flags, `_` for `-`).
    #[arg(long, env = "TIDINGS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to listen on: `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (`localhost` is
    /// 127.0.0.1), or `:PORT` for every IPv4 interface (0.0.0.0:PORT) [default:
    /// 127.0.0.1:3000].
    #[arg(long, env = "TIDINGS_ADDR", value_name = "ADDR")]
    addr: Option<String>,
    /// The key of both publisher and subscriber tokens: an HMAC secret, or a PEM public
    /// key or JWK set (inline or a file's path). Without any key, one is generated and
    /// printed, with a token written next to the history.
    #[arg(
        long,
        env = "TIDINGS_JWT_KEY",
        hide_env_values = true,
        long_help = concat!(
            "The key of both publisher and subscriber tokens: an HMAC secret, or a PEM \
             public key or JWK set, inline or in a file. Without any key, one is generated \
             and printed, with a token that may do everything, also written next to the \
             history (./tidings.token; removed when the hub stops).\n\n",
            key_rule!()
        )
    )]
    jwt_key: Option<String>,
    /// The key of publisher tokens (instead of --jwt-key; read the same way).
    #[arg(long, env = "TIDINGS_PUBLISHER_JWT_KEY", hide_env_values = true)]
    publisher_jwt_key: Option<String>,
    /// The key of subscriber tokens (instead of --jwt-key; read the same way).
    #[arg(long, env = "TIDINGS_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    subscriber_jwt_key: Option<String>,
    /// Accept an HMAC secret shorter than 32 bytes (256 bits), which can be guessed.
    #[arg(long, env = "TIDINGS_ALLOW_WEAK_KEY", value_parser = BoolishValueParser::new())]
    allow_weak_key: bool,
    /// The history file [default: ./tidings.db].
    #[arg(long, env = "TIDINGS_DB", value_name = "PATH")]
    db: Option<PathBuf>,
    /// Keep history in memory only (lost on restart).
    #[arg(long, env = "TIDINGS_NO_HISTORY", value_parser = BoolishValueParser::new())]
    no_history: bool,
    /// Cluster mode: keep history in a Redis Stream shared by every node given the same
    /// URL and stream, `redis://[user:pass@]HOST:PORT[/DB]` (`rediss://` for TLS).
    /// Replaces --db. See docs/OPERATIONS.md, "Cluster".
    #[arg(
        long,
        env = "TIDINGS_REDIS",
        value_name = "URL",
        hide_env_values = true
    )]
    redis: Option<String>,
    /// The Redis Stream of the cluster (its keys start with it), to share one Redis
    /// between hubs [default: tidings].
    #[arg(long, env = "TIDINGS_REDIS_STREAM", value_name = "NAME")]
    redis_stream: Option<String>,
    /// The most updates kept in history; 0 for no limit [default: 100000].
    #[arg(long, env = "TIDINGS_HISTORY_SIZE", value_name = "N")]
    history_size: Option<u64>,
    /// How long updates stay in history, e.g. `24h`; 0 for no limit [default: 24h].
    #[arg(long, env = "TIDINGS_HISTORY_MAX_AGE", value_name = "DURATION")]
    history_max_age: Option<String>,
    /// The most bytes of updates kept in history, e.g. `64MiB`, `1GB` or a number of
    /// bytes; 0 for no limit [default: 64MiB].
    #[arg(long, env = "TIDINGS_HISTORY_MAX_BYTES", value_name = "SIZE")]
    history_max_bytes: Option<String>,
    /// Refuse subscribers without a token (401) instead of giving them public updates.
    #[arg(long, env = "TIDINGS_NO_ANONYMOUS", value_parser = BoolishValueParser::new())]
    no_anonymous: bool,
    /// An origin allowed to use the hub from a browser, with credentials (repeatable).
    #[arg(
        long = "cors-origin",
        env = "TIDINGS_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    cors_origins: Vec<String>,
    /// An origin allowed to publish with the mercureAuthorization cookie (repeatable).
    #[arg(
        long = "publish-origin",
        env = "TIDINGS_PUBLISH_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    publish_origins: Vec<String>,
    /// The interval of heartbeat comments on idle streams; 0 for none [default: 15s].
    #[arg(long, env = "TIDINGS_HEARTBEAT", value_name = "DURATION")]
    heartbeat: Option<String>,
    /// Do not publish subscription events nor serve the subscriptions API.
    #[arg(long, env = "TIDINGS_NO_SUBSCRIPTIONS", value_parser = BoolishValueParser::new())]
    no_subscriptions: bool,
    /// How many updates may wait for one subscriber before it is disconnected
    /// [default: 1024].
    #[arg(long, env = "TIDINGS_QUEUE_SIZE", value_name = "N")]
    queue_size: Option<usize>,
    /// How many bytes of updates may wait for one subscriber before it is disconnected,
    /// e.g. `64MiB` or a number of bytes (whichever of this and `--queue-size` comes
    /// first) [default: 64MiB].
    #[arg(long, env = "TIDINGS_QUEUE_BYTES", value_name = "SIZE")]
    queue_bytes: Option<String>,
    /// The largest publish request body, e.g. `1MiB` or a number of bytes (larger: 413)
    /// [default: 1MiB].
    #[arg(long, env = "TIDINGS_MAX_BODY_SIZE", value_name = "SIZE")]
    max_body_size: Option<String>,
    /// The most topics in one update or one subscription (more: 400) [default: 100].
    #[arg(long, env = "TIDINGS_MAX_TOPICS", value_name = "N")]
    max_topics: Option<usize>,
    /// The most subscribers (event streams) at once (more: 503) [default: 65536].
    #[arg(long, env = "TIDINGS_MAX_SUBSCRIBERS", value_name = "N")]
    max_subscribers: Option<usize>,
    /// The most distinct URI templates live subscribers may use at once (a subscription
    /// adding one more: 503) [default: 4096].
    #[arg(long, env = "TIDINGS_MAX_LIVE_TEMPLATES", value_name = "N")]
    max_live_templates: Option<usize>,
    /// The longest topic selector a subscriber may send, in bytes [default: 1024].
    #[arg(long, env = "TIDINGS_MAX_SELECTOR_LENGTH", value_name = "BYTES")]
    max_selector_length: Option<usize>,
    /// The largest prefix modifier (`{v:N}`) in a subscriber's template [default: 64].
    #[arg(long, env = "TIDINGS_MAX_TEMPLATE_PREFIX", value_name = "N")]
    max_template_prefix: Option<u16>,
    /// The most memory one compiled template of a subscriber may take [default: 131072].
    #[arg(long, env = "TIDINGS_MAX_TEMPLATE_BYTES", value_name = "BYTES")]
    max_template_bytes: Option<usize>,
    /// The most memory the templates of one subscription may take [default: 1048576].
    #[arg(
        long,
        env = "TIDINGS_MAX_SUBSCRIPTION_TEMPLATE_BYTES",
        value_name = "BYTES"
    )]
    max_subscription_template_bytes: Option<usize>,
    /// The most memory of compiled templates kept cached [default: 33554432].
    #[arg(long, env = "TIDINGS_TEMPLATE_CACHE_SIZE", value_name = "BYTES")]
    template_cache_size: Option<usize>,
    /// Do not run the demo publisher (pings and messages on /demo/ping for the Ping page).
    #[arg(long, env = "TIDINGS_NO_DEMO", value_parser = BoolishValueParser::new())]
    no_demo: bool,
    // Boxed: keeps the subcommands' argument types of like size.
    #[command(flatten)]
    server: Box<ServerFlags>,
    #[command(flatten)]
    tls: Box<TlsFlags>,
    #[command(flatten)]
    observability: ObservabilityFlags,
    /// Check the configuration and exit without starting.
    #[arg(long)]
    check: bool,
}

/// Logs and metrics.
#[derive(Debug, clap::Args)]
struct ObservabilityFlags {
    /// How log lines are written on stderr: `text`, or `json` (one object per line, for
    /// log shippers) [default: text]. RUST_LOG filters them as usual (default `info`).
    #[arg(long, env = "TIDINGS_LOG_FORMAT", value_name = "FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Serve /metrics, /healthz and /readyz on this separate (private) address; the
    /// public address then serves no /metrics (its /healthz and /readyz stay). Same forms
    /// as --addr.
    #[arg(long, env = "TIDINGS_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<String>,
}

impl Args {
    /// The log format: the flag (or variable), else the configuration file's key, else
    /// text. Read before logging is set up; a file that cannot be read counts as none
    /// here, and `run` then reports it.
    pub(crate) fn log_format(&self) -> LogFormat {
        if let Some(format) = self.observability.log_format {
            return format;
        }
        self.config
            .as_deref()
            .and_then(|path| FileConfig::load(path).ok())
            .and_then(|file| file.log_format)
            .unwrap_or_default()
    }
}

/// The server loop's limits: timeouts, connection caps, trusted proxies, shutdown.
#[derive(Debug, clap::Args)]
struct ServerFlags {
    /// How long a client has to send a whole request head; 0 for no limit [default: 10s].
    #[arg(long, env = "TIDINGS_HEADER_TIMEOUT", value_name = "DURATION")]
    header_timeout: Option<String>,
    /// How long a socket may take no bytes before its connection is closed (a subscriber
    /// that stopped reading); 0 for no limit [default: 30s].
    #[arg(long, env = "TIDINGS_WRITE_TIMEOUT", value_name = "DURATION")]
    write_timeout: Option<String>,
    /// How long a connection may stay without a request before it is closed; 0 for no
    /// limit [default: 60s].
    #[arg(long, env = "TIDINGS_KEEP_ALIVE_TIMEOUT", value_name = "DURATION")]
    keep_alive_timeout: Option<String>,
    /// The most TCP connections open at once; 0 for no limit [default: the open-file
    /// limit less 256].
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// The most TCP connections open at once from one peer address (a trusted proxy's
    /// are not counted); 0 for no limit [default: 256].
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// The most requests in flight (open event streams included) from one client
    /// address, over all its connections (HTTP/2 carries many on one); through a trusted
    /// proxy, per forwarded address; 0 for no limit [default: 256].
    #[arg(long, env = "TIDINGS_MAX_REQUESTS_PER_IP", value_name = "N")]
    max_requests_per_ip: Option<usize>,
    /// A proxy (address or CIDR range) whose X-Forwarded-For is believed (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "TIDINGS_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    trusted_proxies: Vec<String>,
    /// The most concurrent HTTP/2 streams on one connection [default: 100].
    #[arg(long, env = "TIDINGS_H2_MAX_STREAMS", value_name = "N")]
    h2_max_streams: Option<u32>,
    /// On shutdown, how long connections have to finish before they are dropped
    /// [default: 10s].
    #[arg(long, env = "TIDINGS_SHUTDOWN_GRACE", value_name = "DURATION")]
    shutdown_grace: Option<String>,
}

/// TLS: a certificate and key from files, or one generated for development.
#[derive(Debug, clap::Args)]
struct TlsFlags {
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key. HTTP/2
    /// is chosen by ALPN, HTTP/1.1 beside it. Reloaded on SIGHUP and when the files change.
    #[arg(long, env = "TIDINGS_TLS_CERT", value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1; may be the same file).
    #[arg(long, env = "TIDINGS_TLS_KEY", value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// For development: serve HTTPS with a certificate generated at start for localhost,
    /// 127.0.0.1, ::1 and the --addr host; its fingerprint is printed and the certificate
    /// written beside the history (./tidings.cert.pem), for curl --cacert or a browser.
    #[arg(long, env = "TIDINGS_TLS_SELF_SIGNED", value_parser = BoolishValueParser::new())]
    tls_self_signed: bool,
    /// Offer only HTTP/1.1 by ALPN over TLS (not HTTP/2).
    #[arg(long, env = "TIDINGS_TLS_NO_HTTP2", value_parser = BoolishValueParser::new())]
    tls_no_http2: bool,
    /// How often --tls-cert and --tls-key are read to see whether they changed; 0 for
    /// never (SIGHUP still reloads) [default: 5s].
    #[arg(long, env = "TIDINGS_TLS_RELOAD_INTERVAL", value_name = "DURATION")]
    tls_reload_interval: Option<String>,
}

/// Where the certificate comes from, once flags, environment and file are merged.
enum TlsSetup {
    /// Files, loaded and checked already.
    Files(TlsConfig),
    /// Generated at start, for the hosts named.
    SelfSigned {
        generated: SelfSigned,
        hosts: Vec<String>,
        config: TlsConfig,
    },
}

impl TlsSetup {
    fn config(&self) -> &TlsConfig {
        match self {
            Self::Files(config) | Self::SelfSigned { config, .. } => config,
        }
    }
}

impl TlsFlags {
    /// The TLS set-up from flags (and environment), else the file; `None` for none.
    /// `host` is the `--addr` host, for the self-signed certificate.
    fn resolve(self, file: &FileConfig, host: Option<String>) -> anyhow::Result<Option<TlsSetup>> {
        let cert = self.tls_cert.or_else(|| file.tls_cert.clone());
        let key = self.tls_key.or_else(|| file.tls_key.clone());
        let self_signed = self.tls_self_signed || file.tls_self_signed.unwrap_or(false);
        let http2 = !(self.tls_no_http2 || file.tls_no_http2.unwrap_or(false));
        let interval_text = self
            .tls_reload_interval
            .or_else(|| file.tls_reload_interval.clone());
        if cert.is_none() && key.is_none() && !self_signed {
            // Settings of a TLS that is not there are a mistake, not a no-op.
            if interval_text.is_some() {
                anyhow::bail!("--tls-reload-interval needs --tls-cert and --tls-key");
            }
            if !http2 {
                anyhow::bail!(
                    "--tls-no-http2 needs TLS (--tls-cert and --tls-key, or --tls-self-signed)"
                );
            }
        }
        let interval = match interval_text {
            Some(text) => Some(duration_setting(&text, "--tls-reload-interval")?),
            None => Some(tidings_hub::tls::DEFAULT_POLL_INTERVAL),
        };
        let setup = match (cert, key, self_signed) {
            (None, None, false) => return Ok(None),
            (Some(_), _, true) | (_, Some(_), true) => {
                anyhow::bail!(
                    "--tls-self-signed generates its own certificate: give it without --tls-cert and --tls-key"
                )
            }
            (Some(_), None, false) => {
                anyhow::bail!("--tls-cert needs --tls-key (the certificate's private key)")
            }
            (None, Some(_), false) => {
                anyhow::bail!("--tls-key needs --tls-cert (the certificate chain)")
            }
            (Some(cert), Some(key), false) => TlsSetup::Files(
                TlsConfig::from_pem_files(cert, key)
                    .context("--tls-cert/--tls-key")?
                    .poll_interval(interval)
                    .http2(http2),
            ),
            (None, None, true) => {
                let mut hosts: Vec<String> =
                    ["localhost", "127.0.0.1", "::1"].map(String::from).into();
                if let Some(host) = host
                    && !hosts.contains(&host)
                {
                    hosts.push(host);
                }
                let generated = SelfSigned::generate(&hosts).context("--tls-self-signed")?;
                let config = generated
                    .config()
                    .context("--tls-self-signed")?
                    .http2(http2);
                TlsSetup::SelfSigned {
                    generated,
                    hosts,
                    config,
                }
            }
        };
        Ok(Some(setup))
    }
}

impl ServerFlags {
    /// The limits from flags (and environment), else the file, else the defaults.
    fn resolve(self, file: &FileConfig) -> anyhow::Result<ServerLimits> {
        let duration = |flag: Option<String>, key: &Option<String>, name: &str| {
            flag.or_else(|| key.clone())
                .map(|text| duration_setting(&text, &format!("--{name}")))
                .transpose()
        };
        let mut limits = ServerLimits::default();
        if let Some(d) = duration(self.header_timeout, &file.header_timeout, "header-timeout")? {
            limits.header_read_timeout = d;
        }
        if let Some(d) = duration(self.write_timeout, &file.write_timeout, "write-timeout")? {
            limits.write_timeout = d;
        }
        if let Some(d) = duration(
            self.keep_alive_timeout,
            &file.keep_alive_timeout,
            "keep-alive-timeout",
        )? {
            limits.keep_alive_idle_timeout = d;
        }
        if let Some(d) = duration(self.shutdown_grace, &file.shutdown_grace, "shutdown-grace")? {
            limits.shutdown_grace = d;
        }
        if let Some(n) = self.max_connections.or(file.max_connections) {
            limits.max_connections = n;
        }
        if let Some(n) = self.max_connections_per_ip.or(file.max_connections_per_ip) {
            limits.max_connections_per_ip = n;
        }
        if let Some(n) = self.max_requests_per_ip.or(file.max_requests_per_ip) {
            limits.max_requests_per_ip = n;
        }
        if let Some(n) = self.h2_max_streams.or(file.h2_max_streams) {
            if n == 0 {
                anyhow::bail!("--h2-max-streams must be at least 1");
            }
            limits.h2_max_concurrent_streams = n;
        }
        let proxies = if self.trusted_proxies.is_empty() {
            file.trusted_proxies.clone().unwrap_or_default()
        } else {
            self.trusted_proxies
        };
        limits.trusted_proxies = proxies
            .iter()
            .map(|text| text.parse::<AddrRange>().context("--trusted-proxy"))
            .collect::<anyhow::Result<_>>()?;
        Ok(limits)
    }
}

/// The configuration once flags, environment and file are merged and checked.
struct Settings {
    addr: SocketAddr,
    publisher_key: Option<KeyConfig>,
    subscriber_key: Option<KeyConfig>,
    db: Option<PathBuf>,
    /// Cluster mode: the Redis URL and stream.
    redis: Option<(String, String)>,
    retention: Retention,
    anonymous: bool,
    cors_origins: Vec<String>,
    publish_origins: Vec<String>,
    heartbeat: Option<Duration>,
    subscriptions: bool,
    queue_size: usize,
    queue_bytes: usize,
    max_body_size: usize,
    max_topics: usize,
    max_subscribers: usize,
    max_live_templates: usize,
    selector_limits: SelectorLimits,
    template_cache_size: usize,
    /// Whether to run the demo publisher for the Ping page.
    demo: bool,
    server: ServerLimits,
    tls: Option<TlsSetup>,
    /// Where `/metrics` and the health checks are served apart (`--metrics-addr`).
    metrics_addr: Option<SocketAddr>,
}

impl Settings {
    fn resolve(args: Args) -> anyhow::Result<(Self, bool)> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let server = args.server.resolve(&file)?;
        // Before `file.addr` moves: the self-signed certificate names the --addr host.
        let tls_host = args
            .addr
            .clone()
            .or_else(|| file.addr.clone())
            .and_then(|text| certificate_host(&text, parse_addr(&text).ok()?));
        let tls = args.tls.resolve(&file, tls_host)?;
        let metrics_addr =
            match args
                .observability
                .metrics_addr
                .or(file.metrics_addr.clone())
            {
                Some(text) => Some(parse_addr(&text).map_err(|reason| {
                    anyhow::anyhow!("invalid --metrics-addr {text:?}: {reason}")
                })?),
                None => None,
            };
        let addr_text = args
            .addr
            .or(file.addr)
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = parse_addr(&addr_text)
            .map_err(|reason| anyhow::anyhow!("invalid --addr {addr_text:?}: {reason}"))?;
        // Each key is read and parsed once, here, and handed to the hub as parsed; errors
        // name the option (also for the TOML key of the same name).
        let allow_weak = args.allow_weak_key || file.allow_weak_key.unwrap_or(false);
        let key = |value: Option<String>, what: &str| {
            value
                .map(|value| verifying_key(&value, what, allow_weak))
                .transpose()
        };
        let publisher_key = key(
            args.publisher_jwt_key.or(file.publisher_jwt_key),
            "--publisher-jwt-key",
        )?;
        let subscriber_key = key(
            args.subscriber_jwt_key.or(file.subscriber_jwt_key),
            "--subscriber-jwt-key",
        )?;
        let (publisher_key, subscriber_key) = match (publisher_key, subscriber_key) {
            (Some(p), Some(s)) => (Some(p), Some(s)),
            (p, s) => match key(args.jwt_key.or(file.jwt_key), "--jwt-key")? {
                Some(shared) => (p.or_else(|| Some(shared.clone())), s.or(Some(shared))),
                None => (p, s),
            },
        };
        let redis = args.redis.or(file.redis).filter(|url| !url.is_empty());
        let redis_stream = args
            .redis_stream
            .or(file.redis_stream)
            .unwrap_or_else(|| DEFAULT_REDIS_STREAM.to_owned());
        if let Some(url) = &redis
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            anyhow::bail!(
                "invalid --redis {}: expected redis://[user:pass@]HOST:PORT[/DB] or rediss://...",
                tidings_hub::log::redact_redis_url(url)
            );
        }
        if redis_stream.is_empty() {
            anyhow::bail!("invalid --redis-stream: the stream name must not be empty");
        }
        let redis = redis.map(|url| (url, redis_stream));
        let no_history = args.no_history || file.no_history.unwrap_or(false) || redis.is_some();
        let db = (!no_history).then(|| args.db.or(file.db).unwrap_or_else(|| DEFAULT_DB.into()));
        if let Some(db) = &db {
            let parent = db.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(parent) = parent
                && !parent.is_dir()
            {
                anyhow::bail!(
                    "invalid --db {}: the directory {} does not exist",
                    db.display(),
                    parent.display()
                );
            }
        }
        let defaults = Retention::default();
        let max_updates = match args.history_size.or(file.history_size) {
            Some(0) => None,
            Some(n) => Some(n),
            None => defaults.max_updates,
        };
        let max_age = match args.history_max_age.or(file.history_max_age) {
            Some(text) => {
                let age = duration_setting(&text, "--history-max-age")?;
                (!age.is_zero()).then_some(age)
            }
            None => defaults.max_age,
        };
        let max_bytes = match args
            .history_max_bytes
            .map(ByteSize::Text)
            .or(file.history_max_bytes)
        {
            Some(size) => {
                let bytes = size
                    .bytes()
                    .map_err(anyhow::Error::msg)
                    .context("--history-max-bytes")?;
                (bytes != 0).then_some(bytes)
            }
            None => defaults.max_bytes,
        };
        let heartbeat = match args.heartbeat.or(file.heartbeat) {
            Some(text) => {
                let every = duration_setting(&text, "--heartbeat")?;
                (!every.is_zero()).then_some(every)
            }
            None => Some(DEFAULT_HEARTBEAT),
        };
        let pick = |flag: Vec<String>, file: Option<Vec<String>>| {
            if flag.is_empty() {
                file.unwrap_or_default()
            } else {
                flag
            }
        };
        let cors_origins = pick(args.cors_origins, file.cors_origins);
        let publish_origins = pick(args.publish_origins, file.publish_origins);
        let queue_size = args
            .queue_size
            .or(file.queue_size)
            .unwrap_or(DEFAULT_QUEUE_CAPACITY);
        if queue_size == 0 {
            anyhow::bail!("--queue-size must be at least 1");
        }
        let queue_bytes = match args.queue_bytes.map(ByteSize::Text).or(file.queue_bytes) {
            Some(size) => {
                let bytes = size
                    .bytes()
                    .map_err(anyhow::Error::msg)
                    .context("--queue-bytes")?;
                usize::try_from(bytes)
                    .ok()
                    .filter(|&n| n > 0)
                    .context("--queue-bytes must be at least 1 byte")?
            }
            None => DEFAULT_QUEUE_BYTES,
        };
        let max_body_size = match args
            .max_body_size
            .map(ByteSize::Text)
            .or(file.max_body_size)
        {
            Some(size) => {
                let bytes = size
                    .bytes()
                    .map_err(anyhow::Error::msg)
                    .context("--max-body-size")?;
                usize::try_from(bytes)
                    .ok()
                    .filter(|&n| n > 0)
                    .context("--max-body-size must be at least 1 byte")?
            }
            None => DEFAULT_MAX_BODY,
        };
        let max_topics = args
            .max_topics
            .or(file.max_topics)
            .unwrap_or(DEFAULT_MAX_TOPICS);
        if max_topics == 0 {
            anyhow::bail!("--max-topics must be at least 1");
        }
        let max_subscribers = args
            .max_subscribers
            .or(file.max_subscribers)
            .unwrap_or(DEFAULT_MAX_SUBSCRIBERS);
        if max_subscribers == 0 {
            anyhow::bail!("--max-subscribers must be at least 1");
        }
        let max_live_templates = args
            .max_live_templates
            .or(file.max_live_templates)
            .unwrap_or(DEFAULT_MAX_LIVE_TEMPLATES);
        let mut selector_limits = SelectorLimits::default();
        let at_least_one = |value: Option<usize>, flag: &str| match value {
            Some(0) => anyhow::bail!("{flag} must be at least 1"),
            other => Ok(other),
        };
        if let Some(n) = at_least_one(
            args.max_selector_length.or(file.max_selector_length),
            "--max-selector-length",
        )? {
            selector_limits.max_length = n;
        }
        match args.max_template_prefix.or(file.max_template_prefix) {
            Some(n @ 1..=9999) => selector_limits.max_prefix = n,
            Some(_) => anyhow::bail!("--max-template-prefix must be from 1 to 9999"),
            None => {}
        }
        if let Some(n) = at_least_one(
            args.max_template_bytes.or(file.max_template_bytes),
            "--max-template-bytes",
        )? {
            selector_limits.max_template_bytes = n;
        }
        if let Some(n) = at_least_one(
            args.max_subscription_template_bytes
                .or(file.max_subscription_template_bytes),
            "--max-subscription-template-bytes",
        )? {
            selector_limits.max_subscription_bytes = n;
        }
        let template_cache_size = args
            .template_cache_size
            .or(file.template_cache_size)
            .unwrap_or(DEFAULT_TEMPLATE_CACHE_BYTES);
        Ok((
            Self {
                addr,
                publisher_key,
                subscriber_key,
                db,
                redis,
                retention: Retention::UNLIMITED
                    .with_max_updates(max_updates)
                    .with_max_bytes(max_bytes)
                    .with_max_age(max_age),
                anonymous: !(args.no_anonymous || file.no_anonymous.unwrap_or(false)),
                cors_origins,
                publish_origins,
                heartbeat,
                subscriptions: !(args.no_subscriptions || file.no_subscriptions.unwrap_or(false)),
                queue_size,
                queue_bytes,
                max_body_size,
                max_topics,
                max_subscribers,
                max_live_templates,
                selector_limits,
                template_cache_size,
                demo: !(args.no_demo || file.no_demo.unwrap_or(false)),
                server,
                tls,
                metrics_addr,
            },
            args.check,
        ))
    }

    fn builder(&self) -> anyhow::Result<HubBuilder> {
        let mut builder = Hub::builder()
            .retention(self.retention)
            .anonymous(self.anonymous)
            .cors_origins(self.cors_origins.clone())
            .publish_origins(self.publish_origins.clone())
            .heartbeat(self.heartbeat)
            .subscriptions(self.subscriptions)
            .pages(true)
            .queue_capacity(self.queue_size)
            .queue_bytes(self.queue_bytes)
            .max_body_size(self.max_body_size)
            .max_topics(self.max_topics)
            .max_subscribers(self.max_subscribers)
            .max_live_templates(self.max_live_templates)
            .server_limits(self.server.clone())
            .selector_limits(self.selector_limits.clone())
            .public_metrics(self.metrics_addr.is_none());
        if let Some(tls) = &self.tls {
            builder = builder.tls(tls.config().clone());
        }
        if let Some(db) = &self.db {
            builder = builder.history_file(db);
        }
        if let Some((url, stream)) = &self.redis {
            builder = builder.redis(url, stream);
        }
        if let Some(key) = &self.publisher_key {
            builder = builder.publisher_key(key.clone());
        }
        if let Some(key) = &self.subscriber_key {
            builder = builder.subscriber_key(key.clone());
        }
        Ok(builder)
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut settings, check) = Settings::resolve(args)?;
    if check {
        println!(
            "configuration OK: listen on {}{}, history {}, anonymous subscribers {}, at most {} connections ({} per client address)",
            settings.addr,
            match &settings.tls {
                Some(TlsSetup::Files(config)) => format!(
                    " (TLS, certificate SHA-256 {})",
                    config.handle().fingerprint()
                ),
                Some(TlsSetup::SelfSigned { .. }) => " (TLS, self-signed)".to_owned(),
                None => String::new(),
            },
            match (&settings.redis, &settings.db) {
                (Some((url, stream)), _) => format!(
                    "in the Redis stream {stream} at {}",
                    tidings_hub::log::redact_redis_url(url)
                ),
                (None, Some(p)) => p.display().to_string(),
                (None, None) => "in memory".to_owned(),
            },
            if settings.anonymous {
                "allowed"
            } else {
                "refused"
            },
            settings.server.max_connections,
            settings.server.max_connections_per_ip,
        );
        return Ok(ExitCode::SUCCESS);
    }
    let generated = if settings.publisher_key.is_none() && settings.subscriber_key.is_none() {
        let secret = generate_secret();
        settings.publisher_key = Some(KeyConfig::hmac(&secret));
        settings.subscriber_key = Some(KeyConfig::hmac(&secret));
        Some(secret)
    } else {
        None
    };
    // Process-wide, like the cache it bounds.
    tidings_hub::topic::set_template_cache_capacity(settings.template_cache_size);
    let hub = settings
        .builder()?
        .build()
        .await
        .context("cannot start the hub")?;
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.addr))?;
    let addr = listener.local_addr()?;
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}{}", tidings_hub::HUB_PATH);
    let curl = match &settings.tls {
        Some(setup) => announce_tls(setup, settings.db.as_deref()),
        None => "curl".to_owned(),
    };
    let _reload_on_hangup = settings
        .tls
        .as_ref()
        .map(|setup| reload_on_hangup(setup.config().handle()));
    // Bound before the hub says it listens, so that a wrong address stops the start.
    let ops = match settings.metrics_addr {
        Some(metrics_addr) => {
            let ops_listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("cannot listen on --metrics-addr {metrics_addr}"))?;
            let ops_addr = ops_listener.local_addr()?;
            println!("tidings: metrics and health checks on http://{ops_addr}/metrics");
            // Ends when the hub shuts down (the public server's end cancels it).
            let ops_hub = hub.clone();
            Some(tokio::spawn(async move {
                ops_hub
                    .serve_ops(ops_listener, std::future::pending())
                    .await
            }))
        }
        None => None,
    };
    // The token file exists before the hub says it listens; it goes when `run` ends.
    let getting_started = generated
        .map(|secret| GettingStarted::new(secret, settings.db.as_deref()))
        .transpose()?;
    println!("tidings: hub listening on {url}");
    println!("tidings: demo and live console at {scheme}://{addr}/");
    if let Some(getting_started) = &getting_started {
        getting_started.print(&url, &curl);
    }
    tracing::info!(%addr, history = ?settings.db, metrics_addr = ?settings.metrics_addr, "hub started");
    if let Some((url, stream)) = &settings.redis {
        tracing::info!(redis = %tidings_hub::log::redact_redis_url(url), %stream, "cluster mode: history in Redis");
    }
    let demo = settings.demo.then(|| tidings_hub::web::spawn_demo(&hub));
    hub.clone()
        .serve(listener, shutdown_signal())
        .await
        .context("the server failed")?;
    if let Some(demo) = demo {
        demo.abort();
    }
    // Every acknowledged publish is durable already; this lets the ones still in
    // flight finish and closes the history cleanly (it then opens at once).
    hub.close().await;
    if let Some(ops) = ops {
        match ops.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!(cause = %err, "the metrics server failed"),
            Err(err) => tracing::error!(cause = %err, "the metrics server panicked"),
        }
    }
    tracing::info!("hub stopped");
    Ok(ExitCode::SUCCESS)
}

/// The host of `--addr` for the self-signed certificate, when it names one beyond the
/// defaults: a host name as given, or an IP address other than "every interface".
fn certificate_host(text: &str, addr: SocketAddr) -> Option<String> {
    let host = text.trim().rsplit_once(':').map_or("", |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !host.is_empty() && host.parse::<std::net::IpAddr>().is_err() {
        return Some(host.to_ascii_lowercase());
    }
    (!addr.ip().is_unspecified()).then(|| addr.ip().to_string())
}

/// Prints what a client needs to trust the hub's certificate and returns the `curl`
/// that does: the certificate file of a self-signed one, written beside the history.
fn announce_tls(setup: &TlsSetup, db: Option<&std::path::Path>) -> String {
    let alpn = if setup.config().is_http2() {
        "HTTP/2 and HTTP/1.1 by ALPN"
    } else {
        "HTTP/1.1 only"
    };
    match setup {
        TlsSetup::Files(config) => {
            println!(
                "tidings: TLS on ({alpn}); certificate SHA-256 fingerprint {}",
                config.handle().fingerprint()
            );
            "curl".to_owned()
        }
        TlsSetup::SelfSigned {
            generated, hosts, ..
        } => {
            println!(
                "tidings: TLS on ({alpn}) with a self-signed certificate for {}, made for this run",
                hosts.join(", ")
            );
            println!(
                "tidings: certificate SHA-256 fingerprint {}",
                generated.fingerprint()
            );
            println!(
                "tidings: Chromium can trust it with --ignore-certificate-errors-spki-list={}",
                generated.spki_sha256_base64()
            );
            let path = certificate_path(db);
            match std::fs::write(&path, generated.certificate_pem()) {
                Ok(()) => {
                    println!("tidings: certificate written to {}", path.display());
                    format!("curl --cacert {}", path.display())
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), cause = %err, "cannot write the certificate file");
                    "curl --insecure".to_owned()
                }
            }
        }
    }
}

/// `x.db` gives `x.cert.pem` beside it; no history gives `./tidings.cert.pem`.
fn certificate_path(db: Option<&std::path::Path>) -> PathBuf {
    match db {
        Some(db) => db.with_extension("cert.pem"),
        None => PathBuf::from("./tidings.cert.pem"),
    }
}

/// Reloads the certificate on SIGHUP (Unix), until dropped. The reload logs and counts
/// its own outcome.
fn reload_on_hangup(handle: TlsHandle) -> Option<AbortOnDrop> {
    #[cfg(unix)]
    {
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::error!(cause = %err, "cannot listen for SIGHUP: certificates reload only when their files change");
                return None;
            }
        };
        Some(AbortOnDrop(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the TLS certificate");
                if let Err(TlsError::NoFiles) = handle.reload() {
                    tracing::warn!("SIGHUP: the self-signed certificate has no files to reload");
                }
            }
        })))
    }
    #[cfg(not(unix))]
    {
        let _ = handle;
        None
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(cause = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(cause = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
