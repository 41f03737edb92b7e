//! TLS for [`Hub::serve`](crate::Hub::serve): rustls (the `ring` provider, no OpenSSL),
//! HTTP/2 chosen by ALPN beside HTTP/1.1, and certificates replaced while the hub runs.
//!
//! A [`TlsConfig`] given to [`HubBuilder::tls`](crate::HubBuilder::tls) makes every
//! connection of [`Hub::serve`](crate::Hub::serve) a TLS one. Its [`TlsHandle`] replaces
//! the certificate: connections accepted afterwards get the new one, connections already
//! open (and their event streams) go on with the one they shook hands with. A
//! certificate read from files is also reloaded when the files change (their bytes are
//! read every [`DEFAULT_POLL_INTERVAL`] and compared).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tidings_hub::Hub;
//! use tidings_hub::tls::{SelfSigned, TlsConfig};
//!
//! // In production: `TlsConfig::from_pem_files("/etc/tidings/cert.pem", "/etc/tidings/key.pem")?`.
//! let generated = SelfSigned::generate(&["localhost", "127.0.0.1"])?;
//! let tls = TlsConfig::from_pem(
//!     generated.certificate_pem().as_bytes(),
//!     generated.private_key_pem().as_bytes(),
//! )?;
//! let handle = tls.handle();
//! let hub = Hub::builder().tls(tls).build().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = tokio::spawn(hub.clone().serve(listener, std::future::pending()));
//!
//! // Later: a new certificate for the connections to come.
//! let renewed = SelfSigned::generate(&["localhost"])?;
//! handle.replace_pem(
//!     renewed.certificate_pem().as_bytes(),
//!     renewed.private_key_pem().as_bytes(),
//! )?;
//! assert_eq!(handle.fingerprint(), renewed.fingerprint());
//! hub.shutdown();
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! The handshake is part of a connection's request-head deadline
//! ([`ServerLimits::header_read_timeout`](crate::ServerLimits::header_read_timeout),
//! counted from the accept): a peer that never finishes it is closed and counted in
//! `tidings_timeouts_total{kind="tls_handshake"}`. Failed handshakes are counted in
//! `tidings_tls_handshake_failures_total` and logged at DEBUG only (scanners make many);
//! reloads in `tidings_tls_reloads_total{result}`, a failed one also logged as an error.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use metrics::Counter;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::Metrics;

/// How often the files of [`TlsConfig::from_pem_files`] are looked at for a change, by
/// default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The largest certificate or key file read: far above any real chain.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// The ALPN protocol names, in the server's order of preference.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate PEM holds no certificate, or one that cannot be read.
    #[error("{what}: {reason}")]
    Certificate {
        /// The file, or "the certificate PEM".
        what: String,
        /// Why.
        reason: String,
    },
    /// The key PEM holds no private key, or one that rustls cannot use.
    #[error("{what}: {reason}")]
    PrivateKey {
        /// The file, or "the private key PEM".
        what: String,
        /// Why.
        reason: String,
    },
    /// The private key is not the one of the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// A reload was asked of a configuration made from PEM in memory: there are no
    /// files to read again.
    #[error("this TLS configuration was not read from files: nothing to reload")]
    NoFiles,
    /// A self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

/// The TLS settings of [`Hub::serve`](crate::Hub::serve): a certificate chain and its
/// key (replaceable through [`TlsConfig::handle`]), and the protocols offered by ALPN.
#[derive(Clone)]
pub struct TlsConfig {
    state: Arc<State>,
    http2: bool,
    poll_interval: Option<Duration>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TlsConfig")
            .field("source", &self.state.source)
            .field("fingerprint", &self.state.current().fingerprint)
            .field("http2", &self.http2)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl TlsConfig {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1
    /// or SEC1) from two files, which may be the same file. The files are looked at every
    /// [`DEFAULT_POLL_INTERVAL`] and the certificate reloaded when they change (see
    /// [`poll_interval`](Self::poll_interval)).
    pub fn from_pem_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        let files = Files {
            cert: cert.into(),
            key: key.into(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bytes = files.read()?;
        let loaded = files.load(&bytes, &provider)?;
        let stamp = stamp(&bytes);
        Ok(Self {
            state: Arc::new(State::new(
                Source::Files(files),
                provider,
                loaded,
                Some(stamp),
            )),
            http2: true,
            poll_interval: Some(DEFAULT_POLL_INTERVAL),
        })
    }

    /// Takes a PEM certificate chain (leaf first) and a PEM private key from memory.
    /// Nothing is polled; [`TlsHandle::replace_pem`] replaces them.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = Loaded::from_pem(
            cert,
            key,
            "the certificate PEM",
            "the private key PEM",
            &provider,
        )?;
        Ok(Self {
            state: Arc::new(State::new(Source::Memory, provider, loaded, None)),
            http2: true,
            poll_interval: None,
        })
    }

    /// Whether ALPN offers HTTP/2 (`h2`, preferred) beside HTTP/1.1; default on. Off,
    /// clients speak HTTP/1.1 (browsers then open at most six connections per host).
    #[must_use]
    pub fn http2(mut self, enabled: bool) -> Self {
        self.http2 = enabled;
        self
    }

    /// How often the files are read to see whether they changed;
    /// `None` or zero: never, reload with [`TlsHandle::reload`] (on SIGHUP, say).
    /// Ignored for a configuration made from PEM in memory.
    #[must_use]
    pub fn poll_interval(mut self, every: Option<Duration>) -> Self {
        self.poll_interval = every.filter(|d| !d.is_zero());
        self
    }

    /// Whether ALPN offers HTTP/2 (see [`http2`](Self::http2)).
    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// The handle that replaces the certificate while the hub runs.
    pub fn handle(&self) -> TlsHandle {
        TlsHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// The rustls configuration of the server's connections: one for the hub's life,
    /// whose certificate resolver reads the current certificate at each handshake.
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::clone(&self.state.provider))
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Resolver(Arc::clone(&self.state))));
        config.alpn_protocols = if self.http2 {
            vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]
        } else {
            vec![ALPN_HTTP1.to_vec()]
        };
        Arc::new(config)
    }

    /// Counts this configuration's reloads in `metrics` too.
    pub(crate) fn count_reloads_in(&self, metrics: &Metrics) {
        self.state
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((
                metrics.tls_reloads_ok.clone(),
                metrics.tls_reloads_failed.clone(),
            ));
    }

    /// Looks at the files every poll interval and reloads them when they change, until
    /// `stop` is cancelled. `None` when there is nothing to watch.
    pub(crate) fn watch(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.poll_interval?;
        if !matches!(self.state.source, Source::Files(_)) {
            return None;
        }
        let state = Arc::clone(&self.state);
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let state = Arc::clone(&state);
                // File system calls: off the runtime's threads.
                let _ = tokio::task::spawn_blocking(move || state.reload_if_changed()).await;
            }
        }))
    }
}

/// Replaces the certificate of a [`TlsConfig`] while the hub runs: connections accepted
/// afterwards get the new one; open connections keep theirs. A replacement that fails
/// leaves the current certificate in place. Cheap to clone.
#[derive(Clone)]
pub struct TlsHandle {
    state: Arc<State>,
}

impl std::fmt::Debug for TlsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHandle")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl TlsHandle {
    /// Reads the certificate and key files again and, if they make a valid pair, serves
    /// them from now on. On an error (unreadable files, bad PEM, a key that is not the
    /// certificate's) the current certificate stays, the error is logged and counted,
    /// and returned. A configuration made from memory has no files: [`TlsError::NoFiles`].
    pub fn reload(&self) -> Result<(), TlsError> {
        self.state.reload()
    }

    /// Serves this PEM certificate chain and key from now on, if they make a valid pair;
    /// else keeps the current ones, and logs, counts and returns the error.
    pub fn replace_pem(&self, cert: &[u8], key: &[u8]) -> Result<(), TlsError> {
        let loaded = Loaded::from_pem(
            cert,
            key,
            "the certificate PEM",
            "the private key PEM",
            &self.state.provider,
        );
        self.state.install(loaded)
    }

    /// The SHA-256 fingerprint of the current leaf certificate, as colon-separated
    /// uppercase hex (as browsers and `openssl x509 -fingerprint -sha256` show it).
    pub fn fingerprint(&self) -> String {
        self.state.current().fingerprint.clone()
    }

    /// The DER bytes of the current leaf certificate.
    pub fn certificate_der(&self) -> Vec<u8> {
        self.state.current().key.cert[0].to_vec()
    }
}

/// A certificate and key generated for development (`tidings serve --tls-self-signed`):
/// self-signed, an ECDSA P-256 key, valid for the names and addresses given.
pub struct SelfSigned {
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SelfSigned {
    /// A new key and a certificate for `hosts`: DNS names, or IP addresses (which become
    /// IP subject alternative names).
    pub fn generate<S: AsRef<str>>(hosts: &[S]) -> Result<Self, TlsError> {
        let names: Vec<String> = hosts.iter().map(|h| h.as_ref().to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|err| TlsError::Generate(err.to_string()))?;
        let spki_der = rcgen::PublicKeyData::subject_public_key_info(&generated.signing_key);
        Ok(Self {
            cert_pem: generated.cert.pem(),
            key_pem: generated.signing_key.serialize_pem(),
            cert_der: generated.cert.der().to_vec(),
            spki_der,
        })
    }

    /// The certificate, PEM: what a client is told to trust.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PKCS#8 PEM.
    pub fn private_key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The SHA-256 fingerprint of the certificate, colon-separated uppercase hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// The base64 SHA-256 of the certificate's public key (SubjectPublicKeyInfo): what
    /// Chromium's `--ignore-certificate-errors-spki-list` takes, and HPKP pins were.
    pub fn spki_sha256_base64(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.spki_der);
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    }

    /// A [`TlsConfig`] serving this certificate.
    pub fn config(&self) -> Result<TlsConfig, TlsError> {
        TlsConfig::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
    }
}

/// The SHA-256 fingerprint of a DER certificate, as colon-separated uppercase hex
/// (`AB:CD:…`, as browsers and `openssl x509 -fingerprint -sha256` show it).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut text = String::with_capacity(digest.as_ref().len() * 3);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        let _ = write!(text, "{byte:02X}");
    }
    text
}

/// Where the certificate comes from.
#[derive(Debug)]
enum Source {
    Files(Files),
    Memory,
}

#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

/// What tells that the files changed: the SHA-256 of their bytes (modification times
/// can be too coarse to see two writes in a row, and a renewed certificate can have the
/// length of the old one).
type Stamp = [u8; 32];

impl Files {
    /// The bytes of both files.
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        Ok((read_bounded(&self.cert)?, read_bounded(&self.key)?))
    }

    fn load(
        &self,
        (cert, key): &(Vec<u8>, Vec<u8>),
        provider: &CryptoProvider,
    ) -> Result<Loaded, TlsError> {
        Loaded::from_pem(
            cert,
            key,
            &self.cert.display().to_string(),
            &self.key.display().to_string(),
            provider,
        )
    }
}

fn stamp((cert, key): &(Vec<u8>, Vec<u8>)) -> Stamp {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&(cert.len() as u64).to_be_bytes());
    context.update(cert);
    context.update(key);
    let mut out = [0; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |path: &Path| -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_PEM_FILE + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_PEM_FILE {
            return Err(std::io::Error::other(format!(
                "larger than {MAX_PEM_FILE} bytes: not a certificate or key file"
            )));
        }
        Ok(bytes)
    };
    read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A certificate chain with its key, checked to belong together.
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

impl Loaded {
    fn from_pem(
        cert: &[u8],
        key: &[u8],
        cert_what: &str,
        key_what: &str,
        provider: &CryptoProvider,
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| TlsError::Certificate {
                what: cert_what.to_owned(),
                reason: format!("invalid PEM: {err}"),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Certificate {
                what: cert_what.to_owned(),
                reason: "no CERTIFICATE block in it".to_owned(),
            });
        }
        let private = PrivateKeyDer::from_pem_slice(key).map_err(|err| TlsError::PrivateKey {
            what: key_what.to_owned(),
            reason: match err {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "no PRIVATE KEY block in it".to_owned()
                }
                other => format!("invalid PEM: {other}"),
            },
        })?;
        let fingerprint = fingerprint(&chain[0]);
        let signing = provider
            .key_provider
            .load_private_key(private)
            .map_err(|err| TlsError::PrivateKey {
                what: key_what.to_owned(),
                reason: format!("unusable private key: {err}"),
            })?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => return Err(TlsError::KeyMismatch),
            Err(other) => {
                return Err(TlsError::Certificate {
                    what: cert_what.to_owned(),
                    reason: format!("unusable certificate: {other}"),
                });
            }
        }
        Ok(Self {
            key: Arc::new(certified),
            fingerprint,
        })
    }
}

/// What a [`TlsConfig`], its handles and the server's resolver share.
struct State {
    source: Source,
    provider: Arc<CryptoProvider>,
    /// A std lock: held to swap or clone an `Arc`, never across an await.
    current: RwLock<Arc<Loaded>>,
    /// The files' stamp at the last load attempt, so that a poll reloads only changes.
    stamp: Mutex<Option<Stamp>>,
    /// The reload counters (successes, failures) of every hub serving this config.
    counters: Mutex<Vec<(Counter, Counter)>>,
}

impl State {
    fn new(
        source: Source,
        provider: Arc<CryptoProvider>,
        loaded: Loaded,
        stamp: Option<Stamp>,
    ) -> Self {
        Self {
            source,
            provider,
            current: RwLock::new(Arc::new(loaded)),
            stamp: Mutex::new(stamp),
            counters: Mutex::new(Vec::new()),
        }
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn reload(&self) -> Result<(), TlsError> {
        let Source::Files(files) = &self.source else {
            return Err(TlsError::NoFiles);
        };
        let loaded = files.read().and_then(|bytes| {
            *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) = Some(stamp(&bytes));
            files.load(&bytes, &self.provider)
        });
        self.install(loaded)
    }

    /// Reloads if the files' bytes changed since the last attempt. A failed attempt is
    /// not repeated until the files change again (a half-written pair is retried when
    /// its second file lands); files that cannot be read (being replaced, say) are
    /// looked at again at the next poll.
    fn reload_if_changed(&self) {
        let Source::Files(files) = &self.source else {
            return;
        };
        let bytes = match files.read() {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::debug!(cause = %err, "TLS certificate files not readable now");
                return;
            }
        };
        let new = stamp(&bytes);
        let changed = {
            let mut last = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
            let changed = *last != Some(new);
            *last = Some(new);
            changed
        };
        if changed {
            tracing::info!(cert = %files.cert.display(), "TLS certificate files changed: reloading");
            let _ = self.install(files.load(&bytes, &self.provider));
        }
    }

    fn install(&self, loaded: Result<Loaded, TlsError>) -> Result<(), TlsError> {
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match loaded {
            Ok(loaded) => {
                tracing::info!(fingerprint = %loaded.fingerprint, "TLS certificate loaded");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
                counters.iter().for_each(|(ok, _)| ok.increment(1));
                Ok(())
            }
            Err(err) => {
                tracing::error!(cause = %err, "TLS certificate reload failed; keeping the current certificate");
                counters.iter().for_each(|(_, failed)| failed.increment(1));
                Err(err)
            }
        }
    }
}

/// Gives each handshake the certificate current at that moment.
struct Resolver(Arc<State>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> SelfSigned {
        SelfSigned::generate(&["localhost", "127.0.0.1", "::1"]).unwrap()
    }

    #[test]
    fn a_generated_pair_loads_and_its_fingerprints_agree() {
        let generated = pair();
        let config = generated.config().unwrap();
        let handle = config.handle();
        assert_eq!(handle.fingerprint(), generated.fingerprint());
        assert_eq!(handle.fingerprint().len(), 32 * 3 - 1);
        assert_eq!(generated.spki_sha256_base64().len(), 44);
        let server = config.server_config();
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let http1 = config.clone().http2(false).server_config();
        assert_eq!(http1.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn bad_pem_and_mismatched_keys_are_refused_with_reasons() {
        let a = pair();
        let b = pair();
        let refused = |cert: &str, key: &str| {
            TlsConfig::from_pem(cert.as_bytes(), key.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused(a.certificate_pem(), b.private_key_pem()),
            "the private key does not match the certificate"
        );
        assert_eq!(
            refused("", a.private_key_pem()),
            "the certificate PEM: no CERTIFICATE block in it"
        );
        assert_eq!(
            refused(a.certificate_pem(), a.certificate_pem()),
            "the private key PEM: no PRIVATE KEY block in it"
        );
        let broken = a.certificate_pem().replace('M', "*");
        assert!(
            refused(&broken, a.private_key_pem()).starts_with("the certificate PEM: "),
            "{}",
            refused(&broken, a.private_key_pem())
        );
    }

    #[test]
    fn a_failed_replacement_keeps_the_current_certificate() {
        let a = pair();
        let b = pair();
        let config = a.config().unwrap();
        let metrics = Metrics::new();
        config.count_reloads_in(&metrics);
        let handle = config.handle();
        let err = handle
            .replace_pem(
                b.certificate_pem().as_bytes(),
                a.private_key_pem().as_bytes(),
            )
            .unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch));
        assert_eq!(handle.fingerprint(), a.fingerprint());
        handle
            .replace_pem(
                b.certificate_pem().as_bytes(),
                b.private_key_pem().as_bytes(),
            )
            .unwrap();
        assert_eq!(handle.fingerprint(), b.fingerprint());
        assert!(matches!(handle.reload(), Err(TlsError::NoFiles)));
        let text = metrics.render();
        assert!(
            text.contains("tidings_tls_reloads_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tidings_tls_reloads_total{result=\"error\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn files_are_reloaded_when_they_change_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let a = pair();
        std::fs::write(&cert, a.certificate_pem()).unwrap();
        std::fs::write(&key, a.private_key_pem()).unwrap();
        let config = TlsConfig::from_pem_files(&cert, &key).unwrap();
        let metrics = Metrics::new();
        config.count_reloads_in(&metrics);
        let handle = config.handle();
        config.state.reload_if_changed();
        assert!(
            !metrics.render().contains("result=\"ok\"} 1"),
            "unchanged files reloaded"
        );

        // Half a renewal: the new certificate, the old key. Refused, and not retried
        // until a file changes again.
        let b = pair();
        std::fs::write(&cert, b.certificate_pem()).unwrap();
        config.state.reload_if_changed();
        config.state.reload_if_changed();
        assert_eq!(handle.fingerprint(), a.fingerprint());
        let text = metrics.render();
        assert!(
            text.contains("tidings_tls_reloads_total{result=\"error\"} 1"),
            "{text}"
        );
        // The key lands: the pair is complete.
        std::fs::write(&key, b.private_key_pem()).unwrap();
        config.state.reload_if_changed();
        assert_eq!(handle.fingerprint(), b.fingerprint());

        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(handle.reload().is_err());
        assert_eq!(handle.fingerprint(), b.fingerprint());
        std::fs::remove_file(&key).unwrap();
        let err = handle.reload().unwrap_err().to_string();
        assert!(err.starts_with("cannot read "), "{err}");
    }
}
