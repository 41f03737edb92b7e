//! `tidings token`: mint a JWT for publishers and subscribers.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use tidings_hub::auth::{MercureClaims, mint};

use crate::config::{key_rule, parse_duration, signing_key};

/// Options of `tidings token`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The signing key: an HS256 secret or a PEM private key (RS*, ES*, EdDSA), inline
    /// or as the path of a file holding it.
    #[arg(
        long,
        env = "TIDINGS_JWT_KEY",
        hide_env_values = true,
        long_help = concat!(
            "The signing key: an HS256 secret or a PEM private key (RS*, ES*, EdDSA), \
             inline or in a file.\n\n",
            key_rule!()
        )
    )]
    jwt_key: String,
    /// Accept an HMAC secret shorter than 32 bytes (256 bits), which can be guessed.
    #[arg(long, env = "TIDINGS_ALLOW_WEAK_KEY", value_parser = BoolishValueParser::new())]
    allow_weak_key: bool,
    /// A topic selector the token may publish to (repeatable; `*` for all).
    #[arg(long = "publish", value_name = "SELECTOR")]
    publish: Vec<String>,
    /// A topic selector of private updates the token may receive (repeatable).
    #[arg(long = "subscribe", value_name = "SELECTOR")]
    subscribe: Vec<String>,
    /// Free JSON shown in subscription events (`mercure.payload`).
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// How long the token is valid, e.g. `1h`, `1.5h`, `90s` or `2m30s`; without it, it
    /// never expires.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = signing_key(&args.jwt_key, "--jwt-key", args.allow_weak_key)?;
    let payload = args
        .payload
        .map(|text| serde_json::from_str(&text).context("--payload is not valid JSON"))
        .transpose()?;
    let claims = MercureClaims {
        publish: (!args.publish.is_empty()).then_some(args.publish),
        subscribe: (!args.subscribe.is_empty()).then_some(args.subscribe),
        payload,
    };
    let token = mint(&key, &claims, args.ttl).context("cannot sign the token")?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
