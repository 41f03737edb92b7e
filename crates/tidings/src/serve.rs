//! `tidings serve`: run the hub.
//!
//! Every setting is a flag, a `TIDINGS_*` environment variable and a key of the TOML
//! file given with `--config`, in that order of precedence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tidings_hub::auth::{KeyConfig, MercureClaims, SigningKey, generate_secret, mint};
use tidings_hub::log::Retention;
use tidings_hub::{DEFAULT_HEARTBEAT, DEFAULT_QUEUE_CAPACITY, Hub, HubBuilder};

use crate::config::{ByteSize, FileConfig, parse_duration, verifying_key};

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_DB: &str = "./tidings.db";

/// Options of `tidings serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A TOML file with any of these settings (keys named like the flags, `_` for `-`).
    #[arg(long, env = "TIDINGS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to listen on [default: 127.0.0.1:3000].
    #[arg(long, env = "TIDINGS_ADDR")]
    addr: Option<String>,
    /// The key of both publisher and subscriber tokens: an HMAC secret, or a PEM public
    /// key or JWK set (inline or a file's path). Without any key, one is generated and
    /// printed.
    #[arg(long, env = "TIDINGS_JWT_KEY", hide_env_values = true)]
    jwt_key: Option<String>,
    /// The key of publisher tokens (instead of --jwt-key).
    #[arg(long, env = "TIDINGS_PUBLISHER_JWT_KEY", hide_env_values = true)]
    publisher_jwt_key: Option<String>,
    /// The key of subscriber tokens (instead of --jwt-key).
    #[arg(long, env = "TIDINGS_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    subscriber_jwt_key: Option<String>,
    /// The history file [default: ./tidings.db].
    #[arg(long, env = "TIDINGS_DB", value_name = "PATH")]
    db: Option<PathBuf>,
    /// Keep history in memory only (lost on restart).
    #[arg(long, env = "TIDINGS_NO_HISTORY")]
    no_history: bool,
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
    #[arg(long, env = "TIDINGS_NO_ANONYMOUS")]
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
    #[arg(long, env = "TIDINGS_NO_SUBSCRIPTIONS")]
    no_subscriptions: bool,
    /// How many updates may wait for one subscriber before it is disconnected
    /// [default: 1024].
    #[arg(long, env = "TIDINGS_QUEUE_SIZE", value_name = "N")]
    queue_size: Option<usize>,
    /// Do not run the demo publisher (pings and messages on /demo/ping for the Ping page).
    #[arg(long, env = "TIDINGS_NO_DEMO")]
    no_demo: bool,
    /// Check the configuration and exit without starting.
    #[arg(long)]
    check: bool,
}

/// The configuration once flags, environment and file are merged and checked.
struct Settings {
    addr: SocketAddr,
    publisher_key: Option<KeyConfig>,
    subscriber_key: Option<KeyConfig>,
    db: Option<PathBuf>,
    retention: Retention,
    anonymous: bool,
    cors_origins: Vec<String>,
    publish_origins: Vec<String>,
    heartbeat: Option<Duration>,
    subscriptions: bool,
    queue_size: usize,
    /// Whether to run the demo publisher for the Ping page.
    demo: bool,
}

impl Settings {
    fn resolve(args: Args) -> anyhow::Result<(Self, bool)> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let addr_text = args
            .addr
            .or(file.addr)
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr: SocketAddr = addr_text
            .parse()
            .with_context(|| format!("invalid --addr {addr_text:?}: expected IP:PORT"))?;
        // Each key is read and parsed once, here, and handed to the hub as parsed.
        let jwt_key = args.jwt_key.or(file.jwt_key);
        let publisher_key = args
            .publisher_jwt_key
            .or(file.publisher_jwt_key)
            .or(jwt_key.clone())
            .map(|key| verifying_key(&key, "publisher key"))
            .transpose()?;
        let subscriber_key = args
            .subscriber_jwt_key
            .or(file.subscriber_jwt_key)
            .or(jwt_key)
            .map(|key| verifying_key(&key, "subscriber key"))
            .transpose()?;
        let no_history = args.no_history || file.no_history.unwrap_or(false);
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
                let age = parse_duration(&text)
                    .map_err(anyhow::Error::msg)
                    .context("--history-max-age")?;
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
                let every = parse_duration(&text)
                    .map_err(anyhow::Error::msg)
                    .context("--heartbeat")?;
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
        Ok((
            Self {
                addr,
                publisher_key,
                subscriber_key,
                db,
                retention: Retention {
                    max_updates,
                    max_bytes,
                    max_age,
                },
                anonymous: !(args.no_anonymous || file.no_anonymous.unwrap_or(false)),
                cors_origins,
                publish_origins,
                heartbeat,
                subscriptions: !(args.no_subscriptions || file.no_subscriptions.unwrap_or(false)),
                queue_size,
                demo: !(args.no_demo || file.no_demo.unwrap_or(false)),
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
            .queue_capacity(self.queue_size);
        if let Some(db) = &self.db {
            builder = builder.history_file(db);
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
            "configuration OK: listen on {}, history {}, anonymous subscribers {}",
            settings.addr,
            settings
                .db
                .as_ref()
                .map_or("in memory".to_owned(), |p| p.display().to_string()),
            if settings.anonymous {
                "allowed"
            } else {
                "refused"
            },
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
    let hub = settings
        .builder()?
        .build()
        .await
        .context("cannot start the hub")?;
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.addr))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}{}", tidings_hub::HUB_PATH);
    println!("tidings: hub listening on {url}");
    println!("tidings: demo and live console at http://{addr}/");
    if let Some(secret) = generated {
        print_getting_started(&secret, &url)?;
    }
    tracing::info!(%addr, history = ?settings.db, "hub started");
    let demo = settings.demo.then(|| tidings_hub::web::spawn_demo(&hub));
    hub.serve(listener, shutdown_signal())
        .await
        .context("the server failed")?;
    if let Some(demo) = demo {
        demo.abort();
    }
    tracing::info!("hub stopped");
    Ok(ExitCode::SUCCESS)
}

/// What a new user needs to try the hub at once: the key, a token, a curl line.
fn print_getting_started(secret: &str, url: &str) -> anyhow::Result<()> {
    let claims = MercureClaims {
        publish: Some(vec!["*".into()]),
        subscribe: Some(vec!["*".into()]),
        payload: None,
    };
    let token = mint(&SigningKey::hmac(secret), &claims, None)?;
    println!();
    println!("No JWT key was given, so this one was generated for this run (HS256):");
    println!("  TIDINGS_JWT_KEY={secret}");
    println!("A token that may publish and subscribe to every topic:");
    println!("  {token}");
    println!("Subscribe:");
    println!("  curl -N '{url}?topic=https://example.com/books/1'");
    println!("Publish:");
    println!(
        "  curl -H 'Authorization: Bearer {token}' -d 'topic=https://example.com/books/1' -d 'data={{\"title\":\"Dune\"}}' {url}"
    );
    println!();
    Ok(())
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
