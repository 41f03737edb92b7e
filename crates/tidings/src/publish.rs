//! `tidings publish`: send one update to a hub and print its id.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tidings_hub::auth::{MercureClaims, mint};

use crate::config::{key_rule, signing_key};

/// Options of `tidings publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The hub's URL (its `/.well-known/mercure` path is added when missing).
    #[arg(long, env = "TIDINGS_HUB", default_value = "http://127.0.0.1:3000")]
    hub: String,
    /// A topic of the update (repeatable: the first is canonical, the others alternates).
    #[arg(long = "topic", required = true, value_name = "TOPIC")]
    topics: Vec<String>,
    /// The update's data.
    #[arg(long, default_value = "")]
    data: String,
    /// The event type (the SSE `event` field).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// The update's id (the hub generates one when absent).
    #[arg(long)]
    id: Option<String>,
    /// The client reconnection time to send, in milliseconds.
    #[arg(long, value_name = "MS")]
    retry: Option<u64>,
    /// Send the update only to subscribers authorised for one of its topics.
    #[arg(long)]
    private: bool,
    /// A publisher JWT.
    #[arg(
        long,
        env = "TIDINGS_TOKEN",
        hide_env_values = true,
        conflicts_with = "jwt_key"
    )]
    token: Option<String>,
    /// The hub's key, to sign a short-lived token for exactly these topics.
    #[arg(
        long,
        env = "TIDINGS_JWT_KEY",
        hide_env_values = true,
        long_help = concat!(
            "The hub's key (an HS256 secret or a PEM private key, inline or in a file), \
             to sign a short-lived token for exactly these topics.\n\n",
            key_rule!()
        )
    )]
    jwt_key: Option<String>,
    /// Accept an HMAC secret shorter than 32 bytes (256 bits), which can be guessed.
    #[arg(long, env = "TIDINGS_ALLOW_WEAK_KEY")]
    allow_weak_key: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let token = match (&args.token, &args.jwt_key) {
        (Some(token), _) => token.clone(),
        (None, Some(key)) => {
            let key = signing_key(key, "--jwt-key", args.allow_weak_key)?;
            let claims = MercureClaims {
                publish: Some(args.topics.clone()),
                ..MercureClaims::default()
            };
            mint(&key, &claims, Some(Duration::from_secs(60))).context("cannot sign a token")?
        }
        (None, None) => bail!("publishing needs a token: give --token or --jwt-key"),
    };
    let url = hub_url(&args.hub);
    let mut form: Vec<(&str, &str)> = args.topics.iter().map(|t| ("topic", t.as_str())).collect();
    form.push(("data", &args.data));
    if let Some(event_type) = &args.event_type {
        form.push(("type", event_type));
    }
    if let Some(id) = &args.id {
        form.push(("id", id));
    }
    let retry = args.retry.map(|r| r.to_string());
    if let Some(retry) = &retry {
        form.push(("retry", retry));
    }
    if args.private {
        form.push(("private", "on"));
    }
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .form(&form)
        .send()
        .await
        .with_context(|| format!("cannot reach the hub at {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("the hub refused the update ({status}): {}", body.trim());
    }
    println!("{}", body.trim());
    Ok(ExitCode::SUCCESS)
}

fn hub_url(hub: &str) -> String {
    let hub = hub.trim_end_matches('/');
    if hub.ends_with(tidings_hub::HUB_PATH) {
        hub.to_owned()
    } else {
        format!("{hub}{}", tidings_hub::HUB_PATH)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hub_path_added_once() {
        assert_eq!(
            super::hub_url("http://h:1/"),
            "http://h:1/.well-known/mercure"
        );
        assert_eq!(
            super::hub_url("http://h:1/.well-known/mercure"),
            "http://h:1/.well-known/mercure"
        );
    }
}
