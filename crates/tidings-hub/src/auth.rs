//! Authorization: JWTs, the Mercure claims, and where a request carries its token.
//!
//! A Mercure client proves what it may do with a JWT (a JWS in compact form)
//! whose `mercure` claim lists topic selectors:
//!
//! ```json
//! {"mercure": {"publish": ["https://example.com/books/{id}"],
//!              "subscribe": ["https://example.com/users/42/{+any}"],
//!              "payload": {"user": 42}},
//!  "exp": 1767225600}
//! ```
//!
//! [`extract_token`] finds the token in a request, an [`Authorizer`] checks
//! its signature and times with the configured [`KeyConfig`] and returns its
//! [`Claims`]; [`mint`] makes tokens (for `tidings token` and for tests).
//!
//! ```
//! use std::time::Duration;
//! use tidings_hub::auth::{mint, Authorizer, KeyConfig, MercureClaims, SigningKey};
//!
//! let secret = "!ChangeThisMercureHubJWTSecretKey!";
//! let token = mint(
//!     &SigningKey::hmac(secret),
//!     &MercureClaims {
//!         publish: Some(vec!["https://example.com/books/{id}".into()]),
//!         ..MercureClaims::default()
//!     },
//!     Some(Duration::from_secs(3600)),
//! )?;
//!
//! let key = KeyConfig::hmac(secret);
//! let authorizer = Authorizer::new(Some(key.clone()), Some(key));
//! let claims = authorizer.verify_publisher(&token)?;
//! assert!(claims.can_publish_all(["https://example.com/books/1"]));
//! assert!(!claims.can_publish_all(["https://example.com/books/1", "https://example.com/users/1"]));
//! assert!(claims.expires_at.is_some());
//! # Ok::<(), tidings_hub::auth::AuthError>(())
//! ```
//!
//! # Decisions
//!
//! - Only the algorithms of the configured key's family are accepted (HMAC
//!   keys: HS256/384/512; RSA: RS256/384/512 and PS256/384/512; EC P-256:
//!   ES256; EC P-384: ES384; Ed25519: EdDSA; a JWK set: those of its keys,
//!   each key checked only against its own), so `none` and algorithm
//!   confusion (an HMAC token "signed" with a public RSA key) are refused.
//! - `exp` is checked when present; a token without `exp` never expires, as in
//!   Mercure. `nbf` is checked when present. Both allow a leeway of
//!   [`DEFAULT_LEEWAY`] (5 s) for clock skew between the minting machine and
//!   the hub ([`Authorizer::with_leeway`] changes it). Fractional NumericDates
//!   are honoured; a non-numeric `exp` or `nbf` is an error, never ignored.
//! - `aud`, `iss`, `sub` and `iat` are not checked (Mercure does not either).
//! - Error messages say why a token was refused in one line, without echoing
//!   the token or the key.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::topic::{Selector, SelectorSet};

/// Clock-skew allowance when checking `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The cookie a browser carries its token in (Mercure's default name).
pub const COOKIE_NAME: &str = "mercureAuthorization";

/// The query parameter a token may be passed in (for clients that cannot set
/// headers, such as the browser `EventSource`).
pub const QUERY_PARAMETER: &str = "authorization";

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// Algorithms and keys

/// A JWS signature algorithm that Tidings accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

const HMAC_ALGORITHMS: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const P256_ALGORITHMS: &[Algorithm] = &[Algorithm::ES256];
const P384_ALGORITHMS: &[Algorithm] = &[Algorithm::ES384];
const ED25519_ALGORITHMS: &[Algorithm] = &[Algorithm::EdDSA];

impl Algorithm {
    /// The `alg` header value, e.g. `"HS256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Algorithm::HS256 => J::HS256,
            Algorithm::HS384 => J::HS384,
            Algorithm::HS512 => J::HS512,
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
        }
    }

    const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    /// Parses an `alg` name, case-sensitively as JOSE requires.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| KeyError::UnknownAlgorithm(printable(s)))
    }
}

/// What kind of key a PEM block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Family {
    fn algorithms(self) -> &'static [Algorithm] {
        match self {
            Family::Hmac => HMAC_ALGORITHMS,
            Family::Rsa => RSA_ALGORITHMS,
            Family::P256 => P256_ALGORITHMS,
            Family::P384 => P384_ALGORITHMS,
            Family::Ed25519 => ED25519_ALGORITHMS,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::Hmac => "HMAC secret",
            Family::Rsa => "RSA key",
            Family::P256 => "EC P-256 key",
            Family::P384 => "EC P-384 key",
            Family::Ed25519 => "Ed25519 key",
        }
    }
}

/// Why a key could not be loaded or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a PEM document.
    #[error("not a PEM key: {0}")]
    NotPem(String),
    /// The PEM block is of a kind Tidings does not read.
    #[error(
        "unsupported PEM block `{0}`: expected `PUBLIC KEY`, `RSA PUBLIC KEY`, `PRIVATE KEY` or `RSA PRIVATE KEY`"
    )]
    UnsupportedPemLabel(String),
    /// A private key was given where the public key is needed.
    #[error(
        "this PEM holds a private key; verifying tokens needs the public key (`openssl pkey -in key.pem -pubout`)"
    )]
    PrivateKeyGiven,
    /// A public key was given where the private key is needed.
    #[error("this PEM holds a public key; signing tokens needs the private key")]
    PublicKeyGiven,
    /// The key's algorithm or curve is not supported.
    #[error("unsupported key type: {0}")]
    UnsupportedKeyType(&'static str),
    /// The key material could not be parsed.
    #[error("invalid {0}")]
    InvalidKey(&'static str),
    /// The algorithm does not belong to the key's family.
    #[error("algorithm {algorithm} cannot be used with the {family}")]
    AlgorithmMismatch {
        /// The requested algorithm.
        algorithm: Algorithm,
        /// The kind of key, e.g. `RSA key`.
        family: &'static str,
    },
    /// An empty list of algorithms was given.
    #[error("no algorithm to accept: give at least one")]
    NoAlgorithm,
    /// A JSON Web Key Set could not be used.
    #[error("invalid JWK set: {0}")]
    InvalidJwks(&'static str),
    /// The algorithm name is not one Tidings knows.
    #[error(
        "unknown JWT algorithm `{0}` (expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
    )]
    UnknownAlgorithm(String),
}

/// DER encodings of the object identifiers that tell key types apart.
mod oid {
    pub(super) const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
    ];
    pub(super) const RSASSA_PSS: &[u8] = &[
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A,
    ];
    pub(super) const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    pub(super) const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    pub(super) const P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
    pub(super) const ED25519: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
    pub(super) const ED448: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x71];
    pub(super) const DSA: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x38, 0x04, 0x01];
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Tells the key type of a PKCS#8 / SubjectPublicKeyInfo structure from the
/// algorithm identifier near its start. The identifiers come before the key
/// material, so looking in the first bytes cannot be fooled by key bits.
fn classify_der(der: &[u8]) -> Result<Family, KeyError> {
    let head = &der[..der.len().min(40)];
    if contains(head, oid::RSA_ENCRYPTION) {
        Ok(Family::Rsa)
    } else if contains(head, oid::EC_PUBLIC_KEY) {
        if contains(head, oid::P256) {
            Ok(Family::P256)
        } else if contains(head, oid::P384) {
            Ok(Family::P384)
        } else {
            Err(KeyError::UnsupportedKeyType(
                "EC key on a curve other than P-256 (ES256) or P-384 (ES384)",
            ))
        }
    } else if contains(head, oid::ED25519) {
        Ok(Family::Ed25519)
    } else if contains(head, oid::ED448) {
        Err(KeyError::UnsupportedKeyType(
            "Ed448 (only Ed25519 is supported for EdDSA)",
        ))
    } else if contains(head, oid::RSASSA_PSS) {
        Err(KeyError::UnsupportedKeyType(
            "RSASSA-PSS-only RSA key (use a plain `rsaEncryption` RSA key; PS256/384/512 work with it)",
        ))
    } else if contains(head, oid::DSA) {
        Err(KeyError::UnsupportedKeyType("DSA"))
    } else {
        Err(KeyError::UnsupportedKeyType("unknown algorithm identifier"))
    }
}

enum PemKind {
    Public(Family),
    Private(Family),
}

fn classify_pem(pem_bytes: &[u8]) -> Result<PemKind, KeyError> {
    let block = pem::parse(pem_bytes).map_err(|e| KeyError::NotPem(e.to_string()))?;
    match block.tag() {
        "PUBLIC KEY" => Ok(PemKind::Public(classify_der(block.contents())?)),
        "RSA PUBLIC KEY" => Ok(PemKind::Public(Family::Rsa)),
        "PRIVATE KEY" => Ok(PemKind::Private(classify_der(block.contents())?)),
        "RSA PRIVATE KEY" => Ok(PemKind::Private(Family::Rsa)),
        "EC PRIVATE KEY" => Err(KeyError::UnsupportedKeyType(
            "SEC1 `EC PRIVATE KEY` (convert it to PKCS#8: `openssl pkcs8 -topk8 -nocrypt -in key.pem`)",
        )),
        "ENCRYPTED PRIVATE KEY" => Err(KeyError::UnsupportedKeyType(
            "encrypted private key (decrypt it: `openssl pkey -in key.pem`)",
        )),
        "CERTIFICATE" => Err(KeyError::UnsupportedKeyType(
            "certificate (extract its public key: `openssl x509 -in cert.pem -pubkey -noout`)",
        )),
        other => Err(KeyError::UnsupportedPemLabel(printable(other))),
    }
}

/// The key (or, from a JWK set, keys) that verifies tokens, with the
/// algorithms it accepts.
///
/// ```
/// use tidings_hub::auth::{Algorithm, KeyConfig};
///
/// let key = KeyConfig::hmac("a long random secret");
/// assert_eq!(key.algorithms(), [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
///
/// let err = KeyConfig::from_pem(b"not a key").unwrap_err();
/// assert!(err.to_string().starts_with("not a PEM key"));
/// ```
#[derive(Clone)]
pub struct KeyConfig {
    /// Never empty.
    keys: Vec<VerifyingKey>,
    /// The union of the keys' algorithms, in [`Algorithm::ALL`] order.
    algorithms: Vec<Algorithm>,
    /// What to call the configuration in messages ("RSA key", "JWK set").
    kind: &'static str,
}

#[derive(Clone)]
struct VerifyingKey {
    id: Option<String>,
    key: DecodingKey,
    family: Family,
    algorithms: Vec<Algorithm>,
}

impl KeyConfig {
    fn single(key: DecodingKey, family: Family) -> KeyConfig {
        KeyConfig {
            keys: vec![VerifyingKey {
                id: None,
                key,
                family,
                algorithms: family.algorithms().to_vec(),
            }],
            algorithms: family.algorithms().to_vec(),
            kind: family.name(),
        }
    }

    fn union_of_algorithms(keys: &[VerifyingKey]) -> Vec<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(|a| keys.iter().any(|k| k.algorithms.contains(a)))
            .collect()
    }

    /// A shared HMAC secret (the bytes as given, not base64-decoded); accepts
    /// HS256, HS384 and HS512 tokens. Use a long random secret: anyone who
    /// knows it can mint tokens (see [`generate_secret`]).
    pub fn hmac(secret: impl AsRef<[u8]>) -> KeyConfig {
        KeyConfig::single(DecodingKey::from_secret(secret.as_ref()), Family::Hmac)
    }

    /// A public key in PEM: `PUBLIC KEY` (SubjectPublicKeyInfo: RSA, EC P-256,
    /// EC P-384 or Ed25519) or `RSA PUBLIC KEY` (PKCS#1). RSA keys accept
    /// RS256/384/512 and PS256/384/512, P-256 keys ES256, P-384 keys ES384 and
    /// Ed25519 keys EdDSA. RSA keys below 2048 bits load but every token
    /// checked with them is refused (the crypto library will not verify with them).
    pub fn from_pem(pem: &[u8]) -> Result<KeyConfig, KeyError> {
        let family = match classify_pem(pem)? {
            PemKind::Public(family) => family,
            PemKind::Private(_) => return Err(KeyError::PrivateKeyGiven),
        };
        let key = match family {
            Family::Rsa => DecodingKey::from_rsa_pem(pem),
            Family::P256 | Family::P384 => DecodingKey::from_ec_pem(pem),
            Family::Ed25519 => DecodingKey::from_ed_pem(pem),
            Family::Hmac => unreachable!("PEM blocks never classify as HMAC secrets"),
        }
        .map_err(|_| KeyError::InvalidKey(family.name()))?;
        Ok(KeyConfig::single(key, family))
    }

    /// The signing keys of a JSON Web Key Set (RFC 7517), as an identity
    /// provider publishes at its `jwks_uri`: RSA, EC P-256/P-384, Ed25519 and
    /// `oct` (HMAC) keys. A key's `alg`, when given, is the only algorithm it
    /// accepts. Keys for encryption (`"use": "enc"` or an encryption `alg`)
    /// and of unsupported types (P-521, X25519, Ed448...) are skipped. A token
    /// whose header has a `kid` is checked against the keys with that `kid`
    /// (and those without one); otherwise against every key of its algorithm.
    ///
    /// ```
    /// use tidings_hub::auth::{Algorithm, KeyConfig};
    ///
    /// let jwks = br#"{"keys": [{"kty": "oct", "kid": "k1", "alg": "HS512", "k": "c2VjcmV0"}]}"#;
    /// assert_eq!(KeyConfig::from_jwks(jwks)?.algorithms(), [Algorithm::HS512]);
    /// assert!(KeyConfig::from_jwks(br#"{"keys": []}"#).is_err());
    /// # Ok::<(), tidings_hub::auth::KeyError>(())
    /// ```
    pub fn from_jwks(jwks: &[u8]) -> Result<KeyConfig, KeyError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        let set: RawSet = serde_json::from_slice(jwks)
            .map_err(|_| KeyError::InvalidJwks("not a JSON object with a `keys` array"))?;
        // Keys are read one by one so that one key of a kind we do not know
        // does not make the whole set unusable.
        let keys: Vec<VerifyingKey> = set
            .keys
            .into_iter()
            .filter_map(|raw| serde_json::from_value::<Jwk>(raw).ok())
            .filter_map(|jwk| verifying_key_of(&jwk))
            .collect();
        if keys.is_empty() {
            return Err(KeyError::InvalidJwks("no usable signature key in the set"));
        }
        Ok(KeyConfig {
            algorithms: KeyConfig::union_of_algorithms(&keys),
            keys,
            kind: "JWK set",
        })
    }

    /// A PEM public key when `key` looks like one (starts with `-----BEGIN`,
    /// after whitespace), else an HMAC secret: what a `--jwt-key` option takes.
    ///
    /// ```
    /// use tidings_hub::auth::{Algorithm, KeyConfig};
    ///
    /// let key = KeyConfig::from_secret_or_pem(b"my secret")?;
    /// assert_eq!(key.algorithms()[0], Algorithm::HS256);
    /// assert!(KeyConfig::from_secret_or_pem(b"-----BEGIN PUBLIC KEY-----\n").is_err());
    /// # Ok::<(), tidings_hub::auth::KeyError>(())
    /// ```
    pub fn from_secret_or_pem(key: impl AsRef<[u8]>) -> Result<KeyConfig, KeyError> {
        let key = key.as_ref();
        if looks_like_pem(key) {
            KeyConfig::from_pem(key)
        } else {
            Ok(KeyConfig::hmac(key))
        }
    }

    /// Accepts only `algorithms` from now on (like Mercure's `jwt_algorithm`
    /// setting); each must be one the key accepts now.
    ///
    /// ```
    /// use tidings_hub::auth::{Algorithm, KeyConfig};
    ///
    /// let key = KeyConfig::hmac("secret").restrict_to(&[Algorithm::HS512])?;
    /// assert_eq!(key.algorithms(), [Algorithm::HS512]);
    /// assert!(KeyConfig::hmac("secret").restrict_to(&[Algorithm::RS256]).is_err());
    /// assert!(KeyConfig::hmac("secret").restrict_to(&[]).is_err());
    /// # Ok::<(), tidings_hub::auth::KeyError>(())
    /// ```
    pub fn restrict_to(mut self, algorithms: &[Algorithm]) -> Result<KeyConfig, KeyError> {
        if algorithms.is_empty() {
            return Err(KeyError::NoAlgorithm);
        }
        if let Some(&algorithm) = algorithms.iter().find(|a| !self.algorithms.contains(a)) {
            return Err(KeyError::AlgorithmMismatch {
                algorithm,
                family: self.kind,
            });
        }
        for key in &mut self.keys {
            key.algorithms.retain(|a| algorithms.contains(a));
        }
        self.algorithms = KeyConfig::union_of_algorithms(&self.keys);
        Ok(self)
    }

    /// The algorithms a token signed for this key may use.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }
}

/// The verifying key of one JWK, if it is a signature key Tidings supports.
fn verifying_key_of(jwk: &Jwk) -> Option<VerifyingKey> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm, PublicKeyUse};
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Family::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Family::P256,
            EllipticCurve::P384 => Family::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Family::Ed25519,
            _ => return None,
        },
        AlgorithmParameters::OctetKey(_) => Family::Hmac,
    };
    let mut algorithms = family.algorithms().to_vec();
    if let Some(alg) = jwk.common.key_algorithm {
        let only = match alg {
            KeyAlgorithm::HS256 => Algorithm::HS256,
            KeyAlgorithm::HS384 => Algorithm::HS384,
            KeyAlgorithm::HS512 => Algorithm::HS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            // Encryption algorithms: not a signature key.
            _ => return None,
        };
        if !algorithms.contains(&only) {
            return None;
        }
        algorithms = vec![only];
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey {
        id: jwk.common.key_id.clone(),
        key,
        family,
        algorithms,
    })
}

fn looks_like_pem(key: &[u8]) -> bool {
    key.trim_ascii_start().starts_with(b"-----BEGIN")
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("KeyConfig")
            .field("kind", &self.kind)
            .field("keys", &self.keys.len())
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// A key that signs tokens ([`mint`]), with the algorithm it signs with.
///
/// ```
/// use tidings_hub::auth::{Algorithm, SigningKey};
///
/// let key = SigningKey::hmac("secret").with_algorithm(Algorithm::HS512)?;
/// assert_eq!(key.algorithm(), Algorithm::HS512);
/// assert!(SigningKey::hmac("secret").with_algorithm(Algorithm::RS256).is_err());
/// # Ok::<(), tidings_hub::auth::KeyError>(())
/// ```
#[derive(Clone)]
pub struct SigningKey {
    key: EncodingKey,
    family: Family,
    algorithm: Algorithm,
    key_id: Option<String>,
}

impl SigningKey {
    /// A shared HMAC secret, signing with HS256.
    pub fn hmac(secret: impl AsRef<[u8]>) -> SigningKey {
        SigningKey {
            key: EncodingKey::from_secret(secret.as_ref()),
            family: Family::Hmac,
            algorithm: Algorithm::HS256,
            key_id: None,
        }
    }

    /// A private key in PEM: `PRIVATE KEY` (PKCS#8: RSA, EC P-256, EC P-384 or
    /// Ed25519) or `RSA PRIVATE KEY` (PKCS#1). Signs with RS256, ES256, ES384
    /// or EdDSA; see [`SigningKey::with_algorithm`] for the others.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
        let family = match classify_pem(pem)? {
            PemKind::Private(family) => family,
            PemKind::Public(_) => return Err(KeyError::PublicKeyGiven),
        };
        let (key, algorithm) = match family {
            Family::Rsa => (EncodingKey::from_rsa_pem(pem), Algorithm::RS256),
            Family::P256 => (EncodingKey::from_ec_pem(pem), Algorithm::ES256),
            Family::P384 => (EncodingKey::from_ec_pem(pem), Algorithm::ES384),
            Family::Ed25519 => (EncodingKey::from_ed_pem(pem), Algorithm::EdDSA),
            Family::Hmac => unreachable!("PEM blocks never classify as HMAC secrets"),
        };
        let key = key.map_err(|_| KeyError::InvalidKey(family.name()))?;
        Ok(SigningKey {
            key,
            family,
            algorithm,
            key_id: None,
        })
    }

    /// A PEM private key when `key` looks like one (starts with `-----BEGIN`,
    /// after whitespace), else an HMAC secret (signing with HS256).
    pub fn from_secret_or_pem(key: impl AsRef<[u8]>) -> Result<SigningKey, KeyError> {
        let key = key.as_ref();
        if looks_like_pem(key) {
            SigningKey::from_pem(key)
        } else {
            Ok(SigningKey::hmac(key))
        }
    }

    /// Signs with `algorithm` instead, if it belongs to the key's family.
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Result<SigningKey, KeyError> {
        if !self.family.algorithms().contains(&algorithm) {
            return Err(KeyError::AlgorithmMismatch {
                algorithm,
                family: self.family.name(),
            });
        }
        self.algorithm = algorithm;
        Ok(self)
    }

    /// Names the key in the tokens' header (`kid`), for verifiers that hold
    /// a key set ([`KeyConfig::from_jwks`]).
    #[must_use]
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> SigningKey {
        self.key_id = Some(key_id.into());
        self
    }

    /// The algorithm tokens are signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kind", &self.family.name())
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A new random HMAC secret: 256 bits from the operating system's CSPRNG (via
/// `rand`'s thread generator), as 43 characters of unpadded base64url.
///
/// ```
/// let secret = tidings_hub::auth::generate_secret();
/// assert_eq!(secret.len(), 43);
/// assert_ne!(secret, tidings_hub::auth::generate_secret());
/// ```
pub fn generate_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------
// Errors

/// Who presents a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A client posting updates (`mercure.publish`).
    Publisher,
    /// A client subscribing (`mercure.subscribe`).
    Subscriber,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Publisher => "publishers",
            Role::Subscriber => "subscribers",
        })
    }
}

/// Why a request's token was refused. Every message is one line and never
/// contains the token or a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token where one is required.
    #[error(
        "no token: send `Authorization: Bearer <JWT>`, the `authorization` query parameter or the `mercureAuthorization` cookie"
    )]
    MissingToken,
    /// The `Authorization` header is present but unusable.
    #[error("invalid Authorization header: {0}")]
    InvalidAuthorizationHeader(&'static str),
    /// The `authorization` query parameter is present but unusable.
    #[error("invalid `authorization` query parameter: {0}")]
    InvalidAuthorizationQuery(&'static str),
    /// The token is not a well-formed JWS.
    #[error("malformed token: {0}")]
    MalformedToken(&'static str),
    /// The token is signed correctly but its claims have the wrong shape.
    #[error("invalid claims: {0}")]
    InvalidClaims(&'static str),
    /// The signature does not verify with the configured key.
    #[error("bad signature: the token was not signed with the key this hub is configured with")]
    BadSignature,
    /// `exp` is past.
    #[error("token expired {}s ago", .ago.as_secs())]
    Expired {
        /// How long ago (without the leeway).
        ago: Duration,
    },
    /// `nbf` is in the future.
    #[error("token not valid yet: its nbf is {}s in the future", .remaining.as_secs())]
    NotYetValid {
        /// How long until it becomes valid (without the leeway).
        remaining: Duration,
    },
    /// The `alg` header names an algorithm the configured key does not accept.
    #[error("algorithm `{alg}` is not accepted with the configured {key} (accepted: {accepted})")]
    AlgorithmNotAllowed {
        /// The token's `alg`, cut to printable ASCII.
        alg: String,
        /// The configured key's kind.
        key: &'static str,
        /// The accepted algorithms, comma-separated.
        accepted: String,
    },
    /// The hub has no key for this role, so it cannot accept tokens from it.
    #[error("no JWT key is configured for {0}")]
    NoKey(Role),
    /// The token names a key (`kid`) that is not configured.
    #[error("no configured key has the token's `kid`")]
    UnknownKeyId,
    /// The configured key could not be used by the crypto library.
    #[error("the configured {0} was rejected by the crypto library")]
    KeyRejected(&'static str),
    /// Signing failed ([`mint`]).
    #[error("cannot sign the token: {0}")]
    Signing(&'static str),
}

/// Keeps attacker-chosen text short and printable for an error message.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(32)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > 32 {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------
// Claims

/// What a verified token allows.
///
/// ```
/// use tidings_hub::auth::Claims;
/// use tidings_hub::topic::SelectorSet;
///
/// let claims = Claims {
///     publish: Some(SelectorSet::new(["https://example.com/books/{id}"])),
///     subscribe: Some(SelectorSet::new(["https://example.com/users/7"])),
///     ..Claims::default()
/// };
/// assert!(claims.can_publish_all(["https://example.com/books/1", "https://example.com/books/2"]));
/// assert!(!claims.can_publish_all(["https://example.com/books/1", "urn:other"]));
/// assert!(claims.can_subscribe_any(["urn:other", "https://example.com/users/7"]));
/// assert!(!Claims::default().can_publish_all(["https://example.com/books/1"]));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claims {
    /// `mercure.publish`: the topics its holder may publish to (absent: none).
    pub publish: Option<SelectorSet>,
    /// `mercure.subscribe`: the private updates its holder may receive (absent: none).
    pub subscribe: Option<SelectorSet>,
    /// `mercure.payload`: free JSON shown in subscription events.
    pub payload: Option<Value>,
    /// `exp`: when the token expires (a subscriber's connection is closed then).
    pub expires_at: Option<SystemTime>,
}

impl Claims {
    /// Whether every one of `topics` matches a `mercure.publish` selector.
    /// False when the claim is absent, and for an empty list of topics (an
    /// update always has one).
    pub fn can_publish_all<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> bool {
        let Some(publish) = &self.publish else {
            return false;
        };
        let mut any = false;
        for topic in topics {
            if !publish.matches(topic) {
                return false;
            }
            any = true;
        }
        any
    }

    /// Whether at least one of `topics` (an update's topics) matches a
    /// `mercure.subscribe` selector: a private update is delivered only then.
    /// False when the claim is absent.
    pub fn can_subscribe_any<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> bool {
        self.subscribe
            .as_ref()
            .is_some_and(|s| s.matches_any_topic(topics))
    }
}

/// The `mercure` claim of a token to [`mint`].
///
/// ```
/// use tidings_hub::auth::MercureClaims;
///
/// let claims = MercureClaims { subscribe: Some(vec!["*".into()]), ..Default::default() };
/// assert_eq!(serde_json::to_string(&claims)?, r#"{"subscribe":["*"]}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MercureClaims {
    /// Selectors of the topics the holder may publish to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Selectors of the private updates the holder may receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
    /// Free JSON shown in subscription events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    mercure: &'a MercureClaims,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

/// Signs a token carrying `claims`, expiring `ttl` from now when given (no
/// `exp` otherwise: the token never expires).
///
/// ```
/// use std::time::Duration;
/// use tidings_hub::auth::{mint, MercureClaims, SigningKey};
///
/// let token = mint(&SigningKey::hmac("secret"), &MercureClaims::default(), Some(Duration::from_secs(60)))?;
/// assert_eq!(token.split('.').count(), 3);
/// # Ok::<(), tidings_hub::auth::AuthError>(())
/// ```
pub fn mint(
    key: &SigningKey,
    claims: &MercureClaims,
    ttl: Option<Duration>,
) -> Result<String, AuthError> {
    mint_at(key, claims, ttl, SystemTime::now())
}

fn mint_at(
    key: &SigningKey,
    claims: &MercureClaims,
    ttl: Option<Duration>,
    now: SystemTime,
) -> Result<String, AuthError> {
    let exp = ttl.map(|ttl| {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        now.as_secs().saturating_add(ttl.as_secs())
    });
    let body = MintedClaims {
        mercure: claims,
        exp,
    };
    let mut header = Header::new(key.algorithm.to_jwt());
    header.kid.clone_from(&key.key_id);
    jsonwebtoken::encode(&header, &body, &key.key).map_err(|e| match e.kind() {
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            AuthError::KeyRejected(key.family.name())
        }
        ErrorKind::RsaFailedSigning => AuthError::Signing("RSA signing failed"),
        ErrorKind::Json(_) => AuthError::Signing("the claims cannot be serialized"),
        _ => AuthError::Signing("the JWT library refused the key or claims"),
    })
}

// ---------------------------------------------------------------------------
// Verification

/// Checks tokens of publishers and subscribers against their keys.
///
/// ```
/// use tidings_hub::auth::{AuthError, Authorizer, KeyConfig, Role};
///
/// let authorizer = Authorizer::new(Some(KeyConfig::hmac("publisher secret")), None);
/// assert_eq!(authorizer.verify_subscriber("a.b.c"), Err(AuthError::NoKey(Role::Subscriber)));
/// assert!(matches!(authorizer.verify_publisher("not a jwt"), Err(AuthError::MalformedToken(_))));
/// ```
#[derive(Clone, Debug)]
pub struct Authorizer {
    publisher: Option<KeyConfig>,
    subscriber: Option<KeyConfig>,
    leeway: Duration,
}

impl Authorizer {
    /// Uses `publisher` to verify publishers' tokens and `subscriber` for
    /// subscribers'; a role without a key has every token refused
    /// ([`AuthError::NoKey`]).
    pub fn new(publisher: Option<KeyConfig>, subscriber: Option<KeyConfig>) -> Authorizer {
        Authorizer {
            publisher,
            subscriber,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// Allows `leeway` of clock skew on `exp` and `nbf` instead of [`DEFAULT_LEEWAY`].
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Authorizer {
        self.leeway = leeway;
        self
    }

    /// Whether a key is configured for `role`.
    pub fn has_key(&self, role: Role) -> bool {
        self.key(role).is_some()
    }

    fn key(&self, role: Role) -> Option<&KeyConfig> {
        match role {
            Role::Publisher => self.publisher.as_ref(),
            Role::Subscriber => self.subscriber.as_ref(),
        }
    }

    /// Finds a request's token ([`extract_token`]) and verifies it for `role`
    /// now. `Ok(None)`: the request is anonymous.
    ///
    /// ```
    /// use axum::http::{HeaderMap, HeaderValue, header};
    /// use tidings_hub::auth::{mint, Authorizer, KeyConfig, MercureClaims, Role, SigningKey, TokenSource};
    ///
    /// let token = mint(&SigningKey::hmac("secret"), &MercureClaims::default(), None)?;
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    ///
    /// let authorizer = Authorizer::new(None, Some(KeyConfig::hmac("secret")));
    /// let (claims, source) = authorizer.authenticate(Role::Subscriber, &headers, None)?.unwrap();
    /// assert_eq!(source, TokenSource::Header);
    /// assert!(claims.subscribe.is_none());
    /// assert!(authorizer.authenticate(Role::Subscriber, &HeaderMap::new(), Some("topic=x"))?.is_none());
    /// # Ok::<(), tidings_hub::auth::AuthError>(())
    /// ```
    pub fn authenticate(
        &self,
        role: Role,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<(Claims, TokenSource)>, AuthError> {
        let Some((token, source)) = extract_token(headers, query)? else {
            return Ok(None);
        };
        let claims = self.verify(role, &token, SystemTime::now())?;
        Ok(Some((claims, source)))
    }

    /// Verifies a publisher's token now.
    pub fn verify_publisher(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(Role::Publisher, token, SystemTime::now())
    }

    /// Verifies a subscriber's token now.
    pub fn verify_subscriber(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(Role::Subscriber, token, SystemTime::now())
    }

    /// Verifies `token` for `role` as of `now`: the signature with the role's
    /// key, then `exp` and `nbf`, then the shape of the `mercure` claim.
    pub fn verify(&self, role: Role, token: &str, now: SystemTime) -> Result<Claims, AuthError> {
        let config = self.key(role).ok_or(AuthError::NoKey(role))?;
        let (algorithm, key_id) = check_header(token, config)?;

        let mut validation = Validation::new(algorithm.to_jwt());
        // Times are checked below, with fractional dates and our own errors;
        // audience, issuer and subject are not part of Mercure's model.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let mut candidates = config.keys.iter().filter(|k| {
            k.algorithms.contains(&algorithm)
                && (key_id.is_none() || k.id.is_none() || k.id == key_id)
        });
        let Some(first) = candidates.next() else {
            return Err(AuthError::UnknownKeyId);
        };
        // With a key set, a token without `kid` may have been signed by any
        // key of its algorithm: the first whose signature verifies wins.
        for key in std::iter::once(first).chain(candidates) {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return claims_from_json(data.claims, now, self.leeway),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(map_decode_error(&e, key)),
            }
        }
        Err(AuthError::BadSignature)
    }
}

/// Checks the token's shape and its header's `alg` before any cryptography,
/// so that the refusal says precisely what is wrong.
fn check_header(token: &str, key: &KeyConfig) -> Result<(Algorithm, Option<String>), AuthError> {
    if token.is_empty() {
        return Err(AuthError::MalformedToken("the token is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::MalformedToken("the token is longer than 64 KiB"));
    }
    let parts = token.split('.').count();
    if parts == 5 {
        return Err(AuthError::MalformedToken(
            "encrypted tokens (JWE) are not supported",
        ));
    }
    if parts != 3 {
        return Err(AuthError::MalformedToken(
            "a JWT has three base64url parts separated by `.`",
        ));
    }
    let header = token.split('.').next().unwrap_or_default();
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::MalformedToken("the header is not base64url"))?;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|_| AuthError::MalformedToken("the header is not a JSON object"))?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        _ => return Err(AuthError::MalformedToken("the header has no `alg` string")),
    };
    let not_allowed = || AuthError::AlgorithmNotAllowed {
        alg: printable(alg),
        key: key.kind,
        accepted: key
            .algorithms()
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let algorithm = Algorithm::from_str(alg).map_err(|_| not_allowed())?;
    if !key.algorithms().contains(&algorithm) {
        return Err(not_allowed());
    }
    // RFC 7515 §4.1.11: extensions marked critical must be understood; we
    // understand none.
    if header.contains_key("crit") {
        return Err(AuthError::MalformedToken(
            "the header lists critical extensions (`crit`), which are not supported",
        ));
    }
    let key_id = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => {
            return Err(AuthError::MalformedToken(
                "the header's `kid` is not a string",
            ));
        }
    };
    Ok((algorithm, key_id))
}

fn map_decode_error(error: &jsonwebtoken::errors::Error, key: &VerifyingKey) -> AuthError {
    match error.kind() {
        ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => AuthError::BadSignature,
        ErrorKind::InvalidToken => {
            AuthError::MalformedToken("a JWT has three base64url parts separated by `.`")
        }
        ErrorKind::Base64(_) => {
            AuthError::MalformedToken("the claims or the signature are not base64url")
        }
        ErrorKind::Json(_) => AuthError::MalformedToken("the claims are not a JSON object"),
        ErrorKind::Utf8(_) => AuthError::MalformedToken("the claims are not UTF-8"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => {
            AuthError::MalformedToken("the header's `alg` does not fit the key")
        }
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            AuthError::KeyRejected(key.family.name())
        }
        _ => AuthError::MalformedToken("refused by the JWT library"),
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional.
fn numeric_date(claims: &serde_json::Map<String, Value>, name: &str) -> Result<Option<f64>, ()> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()).map(Some).ok_or(()),
        Some(_) => Err(()),
    }
}

fn seconds_since_epoch(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn selectors(
    mercure: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<SelectorSet>, ()> {
    match mercure.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(Selector::new).ok_or(()))
            .collect::<Result<SelectorSet, ()>>()
            .map(Some),
        Some(_) => Err(()),
    }
}

fn claims_from_json(claims: Value, now: SystemTime, leeway: Duration) -> Result<Claims, AuthError> {
    let Value::Object(claims) = claims else {
        return Err(AuthError::MalformedToken(
            "the claims are not a JSON object",
        ));
    };
    let now_secs = seconds_since_epoch(now);
    let leeway = leeway.as_secs_f64();

    let exp = numeric_date(&claims, "exp")
        .map_err(|()| AuthError::InvalidClaims("`exp` is not a number of seconds"))?;
    if let Some(exp) = exp
        && now_secs >= exp + leeway
    {
        return Err(AuthError::Expired {
            ago: Duration::try_from_secs_f64(now_secs - exp).unwrap_or(Duration::MAX),
        });
    }
    let nbf = numeric_date(&claims, "nbf")
        .map_err(|()| AuthError::InvalidClaims("`nbf` is not a number of seconds"))?;
    if let Some(nbf) = nbf
        && now_secs + leeway < nbf
    {
        return Err(AuthError::NotYetValid {
            remaining: Duration::try_from_secs_f64(nbf - now_secs).unwrap_or(Duration::MAX),
        });
    }
    // An `exp` too far in the future for SystemTime is, in practice, never.
    let expires_at = exp.and_then(|exp| {
        let since_epoch = Duration::try_from_secs_f64(exp).ok()?;
        UNIX_EPOCH.checked_add(since_epoch)
    });

    let mercure = match claims.get("mercure") {
        None | Some(Value::Null) => {
            return Ok(Claims {
                expires_at,
                ..Claims::default()
            });
        }
        Some(Value::Object(mercure)) => mercure,
        Some(_) => return Err(AuthError::InvalidClaims("`mercure` is not a JSON object")),
    };
    let publish = selectors(mercure, "publish")
        .map_err(|()| AuthError::InvalidClaims("`mercure.publish` is not an array of strings"))?;
    let subscribe = selectors(mercure, "subscribe")
        .map_err(|()| AuthError::InvalidClaims("`mercure.subscribe` is not an array of strings"))?;
    let payload = match mercure.get("payload") {
        None | Some(Value::Null) => None,
        Some(payload) => Some(payload.clone()),
    };
    Ok(Claims {
        publish,
        subscribe,
        payload,
        expires_at,
    })
}

// ---------------------------------------------------------------------------
// Where the token is

/// Where a request carried its token. Cookie authentication needs CSRF
/// checks (`Origin`/`Referer`); query authentication needs
/// `Cache-Control: private` on the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// The `authorization` query parameter.
    Query,
    /// The `mercureAuthorization` cookie.
    Cookie,
}

/// Finds a request's token, in Mercure's precedence: the `Authorization:
/// Bearer` header, else the `authorization` query parameter, else the
/// `mercureAuthorization` cookie. `query` is the raw query string (without
/// `?`). `Ok(None)` means an anonymous request.
///
/// A present but unusable header or query parameter (another scheme than
/// Bearer, several of them, empty) is an error rather than a reason to look
/// further, so a client never gets a different identity than it sent. An
/// empty cookie counts as no cookie (what a browser keeps after a logout).
///
/// ```
/// use axum::http::{HeaderMap, HeaderValue, header};
/// use tidings_hub::auth::{extract_token, TokenSource};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::COOKIE, HeaderValue::from_static("theme=dark; mercureAuthorization=c.o.ok"));
/// assert_eq!(
///     extract_token(&headers, Some("topic=x&authorization=q.u.ery"))?,
///     Some(("q.u.ery".to_string(), TokenSource::Query)),
/// );
/// assert_eq!(extract_token(&headers, None)?, Some(("c.o.ok".to_string(), TokenSource::Cookie)));
///
/// headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer h.e.ader"));
/// assert_eq!(
///     extract_token(&headers, Some("authorization=q.u.ery"))?,
///     Some(("h.e.ader".to_string(), TokenSource::Header)),
/// );
/// assert_eq!(extract_token(&HeaderMap::new(), None)?, None);
/// # Ok::<(), tidings_hub::auth::AuthError>(())
/// ```
pub fn extract_token(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<(String, TokenSource)>, AuthError> {
    extract_token_with_cookie(headers, query, COOKIE_NAME)
}

/// [`extract_token`] with another cookie name than `mercureAuthorization`.
pub fn extract_token_with_cookie(
    headers: &HeaderMap,
    query: Option<&str>,
    cookie_name: &str,
) -> Result<Option<(String, TokenSource)>, AuthError> {
    if let Some(token) = bearer_token(headers)? {
        return Ok(Some((token, TokenSource::Header)));
    }
    if let Some(token) = query_token(query)? {
        return Ok(Some((token, TokenSource::Query)));
    }
    Ok(cookie_value(headers, cookie_name).map(|token| (token, TokenSource::Cookie)))
}

fn bearer_token(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidAuthorizationHeader(
            "several Authorization headers",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::InvalidAuthorizationHeader("the value is not visible ASCII"))?;
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    // Auth schemes are case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::InvalidAuthorizationHeader(
            "the scheme is not Bearer",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::InvalidAuthorizationHeader(
            "the Bearer token is empty",
        ));
    }
    Ok(Some(token.to_owned()))
}

fn query_token(query: Option<&str>) -> Result<Option<String>, AuthError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| AuthError::InvalidAuthorizationQuery("the query string cannot be decoded"))?;
    let mut tokens = pairs
        .into_iter()
        .filter(|(name, _)| name == QUERY_PARAMETER)
        .map(|(_, value)| value);
    let Some(token) = tokens.next() else {
        return Ok(None);
    };
    if tokens.next().is_some() {
        return Err(AuthError::InvalidAuthorizationQuery("given several times"));
    }
    if token.is_empty() {
        return Err(AuthError::InvalidAuthorizationQuery("empty"));
    }
    Ok(Some(token))
}

/// The first non-empty cookie named `name` over every `Cookie` header
/// (HTTP/2 may split cookies over several), per RFC 6265 §5.4 syntax:
/// `name=value` pairs separated by `;`, values optionally in double quotes.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            if pair[..eq].trim_ascii() != name.as_bytes() {
                return None;
            }
            let mut value = pair[eq + 1..].trim_ascii();
            if value.len() >= 2 && value.starts_with(b"\"") && value.ends_with(b"\"") {
                value = &value[1..value.len() - 1];
            }
            let value = std::str::from_utf8(value).ok()?;
            (!value.is_empty()).then(|| value.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";

    macro_rules! key {
        ($file:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/", $file)).as_slice()
        };
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn all_claims() -> MercureClaims {
        MercureClaims {
            publish: Some(vec!["https://example.com/books/{id}".into()]),
            subscribe: Some(vec!["https://example.com/users/1/{+any}".into()]),
            payload: Some(serde_json::json!({"user": 1})),
        }
    }

    /// A token with exactly the given header and claims JSON, HS256-signed with `secret`.
    fn raw_token(secret: &str, header: &str, claims: &str) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{signature}")
    }

    fn hmac_authorizer() -> Authorizer {
        let key = KeyConfig::hmac(SECRET);
        Authorizer::new(Some(key.clone()), Some(key))
    }

    fn verify_raw(claims: &str) -> Result<Claims, AuthError> {
        let token = raw_token(SECRET, r#"{"alg":"HS256","typ":"JWT"}"#, claims);
        hmac_authorizer().verify(Role::Subscriber, &token, now())
    }

    #[track_caller]
    fn roundtrip(signing: SigningKey, verifying: KeyConfig) {
        let algorithm = signing.algorithm();
        let token = mint_at(
            &signing,
            &all_claims(),
            Some(Duration::from_secs(60)),
            now(),
        )
        .unwrap();
        let authorizer = Authorizer::new(Some(verifying.clone()), Some(verifying));
        let claims = authorizer
            .verify(Role::Publisher, &token, now())
            .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
        assert!(
            claims.can_publish_all(["https://example.com/books/1"]),
            "{algorithm}"
        );
        assert!(claims.can_subscribe_any(["https://example.com/users/1/a/b"]));
        assert_eq!(claims.payload, Some(serde_json::json!({"user": 1})));
        assert_eq!(claims.expires_at, Some(now() + Duration::from_secs(60)));
        // One flipped signature character breaks it.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            authorizer.verify(Role::Publisher, &tampered, now()),
            Err(AuthError::BadSignature),
            "{algorithm}"
        );
    }

    #[test]
    fn every_algorithm_family_signs_and_verifies() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            roundtrip(
                SigningKey::hmac(SECRET).with_algorithm(alg).unwrap(),
                KeyConfig::hmac(SECRET),
            );
        }
        let rsa = SigningKey::from_pem(key!("rsa-private.pem")).unwrap();
        assert_eq!(rsa.algorithm(), Algorithm::RS256);
        for alg in RSA_ALGORITHMS {
            roundtrip(
                rsa.clone().with_algorithm(*alg).unwrap(),
                KeyConfig::from_pem(key!("rsa-public.pem")).unwrap(),
            );
        }
        roundtrip(
            SigningKey::from_pem(key!("rsa-private-pkcs1.pem")).unwrap(),
            KeyConfig::from_pem(key!("rsa-public-pkcs1.pem")).unwrap(),
        );
        let p256 = SigningKey::from_pem(key!("p256-private.pem")).unwrap();
        assert_eq!(p256.algorithm(), Algorithm::ES256);
        roundtrip(p256, KeyConfig::from_pem(key!("p256-public.pem")).unwrap());
        let p384 = SigningKey::from_pem(key!("p384-private.pem")).unwrap();
        assert_eq!(p384.algorithm(), Algorithm::ES384);
        roundtrip(p384, KeyConfig::from_pem(key!("p384-public.pem")).unwrap());
        let ed = SigningKey::from_pem(key!("ed25519-private.pem")).unwrap();
        assert_eq!(ed.algorithm(), Algorithm::EdDSA);
        roundtrip(ed, KeyConfig::from_pem(key!("ed25519-public.pem")).unwrap());
    }

    #[test]
    fn keys_accept_only_their_family() {
        let accepted = |pem: &[u8]| KeyConfig::from_pem(pem).unwrap().algorithms().to_vec();
        assert_eq!(accepted(key!("rsa-public.pem")), RSA_ALGORITHMS);
        assert_eq!(accepted(key!("rsa-public-pkcs1.pem")), RSA_ALGORITHMS);
        assert_eq!(accepted(key!("p256-public.pem")), [Algorithm::ES256]);
        assert_eq!(accepted(key!("p384-public.pem")), [Algorithm::ES384]);
        assert_eq!(accepted(key!("ed25519-public.pem")), [Algorithm::EdDSA]);

        // Algorithm confusion: an HS256 token whose "secret" is the RSA public key.
        let rsa_public = KeyConfig::from_pem(key!("rsa-public.pem")).unwrap();
        let forged = mint_at(
            &SigningKey::hmac(key!("rsa-public.pem")),
            &all_claims(),
            None,
            now(),
        )
        .unwrap();
        let authorizer = Authorizer::new(Some(rsa_public), None);
        assert_eq!(
            authorizer.verify(Role::Publisher, &forged, now()),
            Err(AuthError::AlgorithmNotAllowed {
                alg: "HS256".into(),
                key: "RSA key",
                accepted: "RS256, RS384, RS512, PS256, PS384, PS512".into(),
            })
        );

        // An ES384 token offered to a P-256 key.
        let es384 = mint_at(
            &SigningKey::from_pem(key!("p384-private.pem")).unwrap(),
            &all_claims(),
            None,
            now(),
        )
        .unwrap();
        let p256 = Authorizer::new(
            Some(KeyConfig::from_pem(key!("p256-public.pem")).unwrap()),
            None,
        );
        assert!(matches!(
            p256.verify(Role::Publisher, &es384, now()),
            Err(AuthError::AlgorithmNotAllowed { ref alg, .. }) if alg == "ES384"
        ));

        // RS256 token against an HMAC key.
        let rs256 = mint_at(
            &SigningKey::from_pem(key!("rsa-private.pem")).unwrap(),
            &all_claims(),
            None,
            now(),
        )
        .unwrap();
        assert!(matches!(
            hmac_authorizer().verify(Role::Publisher, &rs256, now()),
            Err(AuthError::AlgorithmNotAllowed { .. })
        ));

        // `alg: none`, unsigned, and an unknown algorithm name.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"mercure":{"publish":["*"]}}"#)
        );
        let err = hmac_authorizer()
            .verify(Role::Publisher, &none, now())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "algorithm `none` is not accepted with the configured HMAC secret (accepted: HS256, HS384, HS512)"
        );
        let weird = raw_token(
            SECRET,
            r#"{"alg":"HS256\n<script>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#,
            "{}",
        );
        let err = hmac_authorizer()
            .verify(Role::Publisher, &weird, now())
            .unwrap_err();
        let message = err.to_string();
        assert!(
            !message.contains('\n') && message.contains("HS256?<script>") && message.contains('…'),
            "{message}"
        );
    }

    #[test]
    fn key_loading_errors_are_precise() {
        assert_eq!(
            KeyConfig::from_pem(key!("rsa-private.pem")).unwrap_err(),
            KeyError::PrivateKeyGiven
        );
        assert_eq!(
            KeyConfig::from_pem(key!("rsa-private-pkcs1.pem")).unwrap_err(),
            KeyError::PrivateKeyGiven
        );
        assert_eq!(
            SigningKey::from_pem(key!("p256-public.pem")).unwrap_err(),
            KeyError::PublicKeyGiven
        );
        for (pem, fragment) in [
            (key!("p521-public.pem"), "curve other than P-256"),
            (key!("ed448-public.pem"), "Ed448"),
            (key!("p256-private-sec1.pem"), "openssl pkcs8 -topk8"),
            (key!("p256-cert.pem"), "openssl x509"),
        ] {
            let err = KeyConfig::from_pem(pem)
                .map(|_| ())
                .or_else(|_| SigningKey::from_pem(pem).map(|_| ()))
                .unwrap_err();
            assert!(matches!(err, KeyError::UnsupportedKeyType(_)), "{err}");
            assert!(err.to_string().contains(fragment), "{err}");
        }
        assert!(matches!(
            KeyConfig::from_pem(b"garbage"),
            Err(KeyError::NotPem(_))
        ));
        assert!(matches!(KeyConfig::from_pem(b""), Err(KeyError::NotPem(_))));
        let other =
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        assert_eq!(
            KeyConfig::from_pem(other).unwrap_err(),
            KeyError::UnsupportedPemLabel("OPENSSH PRIVATE KEY".into())
        );
        // A PUBLIC KEY block whose content is not a key.
        let bogus = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            KeyConfig::from_pem(bogus),
            Err(KeyError::UnsupportedKeyType(_))
        ));
        // An RSA PUBLIC KEY block with garbage inside.
        let broken = b"-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n";
        assert_eq!(
            KeyConfig::from_pem(broken).unwrap_err(),
            KeyError::InvalidKey("RSA key")
        );
        assert_eq!(
            SigningKey::hmac("s")
                .with_algorithm(Algorithm::ES256)
                .unwrap_err()
                .to_string(),
            "algorithm ES256 cannot be used with the HMAC secret"
        );
        assert!(
            SigningKey::from_pem(key!("p256-private.pem"))
                .unwrap()
                .with_algorithm(Algorithm::ES384)
                .is_err()
        );
    }

    #[test]
    fn restricted_and_detected_keys() {
        let hs256 = mint_at(&SigningKey::hmac(SECRET), &all_claims(), None, now()).unwrap();
        let hs512 = mint_at(
            &SigningKey::hmac(SECRET)
                .with_algorithm(Algorithm::HS512)
                .unwrap(),
            &all_claims(),
            None,
            now(),
        )
        .unwrap();
        let only_512 = KeyConfig::hmac(SECRET)
            .restrict_to(&[Algorithm::HS512])
            .unwrap();
        let authorizer = Authorizer::new(Some(only_512), None);
        assert!(authorizer.verify(Role::Publisher, &hs512, now()).is_ok());
        assert_eq!(
            authorizer
                .verify(Role::Publisher, &hs256, now())
                .unwrap_err()
                .to_string(),
            "algorithm `HS256` is not accepted with the configured HMAC secret (accepted: HS512)"
        );
        assert_eq!(
            KeyConfig::from_pem(key!("rsa-public.pem"))
                .unwrap()
                .restrict_to(&[Algorithm::PS256, Algorithm::ES256])
                .unwrap_err(),
            KeyError::AlgorithmMismatch {
                algorithm: Algorithm::ES256,
                family: "RSA key"
            }
        );
        assert_eq!(
            KeyConfig::hmac(SECRET).restrict_to(&[]).unwrap_err(),
            KeyError::NoAlgorithm
        );

        // PEM or secret, by content.
        let mut indented = b"\n  ".to_vec();
        indented.extend_from_slice(key!("ed25519-public.pem"));
        assert_eq!(
            KeyConfig::from_secret_or_pem(&indented)
                .unwrap()
                .algorithms(),
            [Algorithm::EdDSA]
        );
        assert_eq!(
            KeyConfig::from_secret_or_pem(SECRET).unwrap().algorithms(),
            HMAC_ALGORITHMS
        );
        let signer = SigningKey::from_secret_or_pem(key!("ed25519-private.pem")).unwrap();
        assert_eq!(signer.algorithm(), Algorithm::EdDSA);
        assert_eq!(
            SigningKey::from_secret_or_pem(SECRET).unwrap().algorithm(),
            Algorithm::HS256
        );
        assert_eq!(
            SigningKey::from_secret_or_pem(key!("ed25519-public.pem")).unwrap_err(),
            KeyError::PublicKeyGiven
        );
        // The same secret given to both sides works end to end.
        let token = mint(
            &SigningKey::from_secret_or_pem(SECRET).unwrap(),
            &all_claims(),
            None,
        )
        .unwrap();
        let key = KeyConfig::from_secret_or_pem(SECRET).unwrap();
        assert!(
            Authorizer::new(Some(key), None)
                .verify_publisher(&token)
                .is_ok()
        );
    }

    #[test]
    fn authenticate_extracts_then_verifies() {
        let token = mint(&SigningKey::hmac(SECRET), &all_claims(), None).unwrap();
        let authorizer = hmac_authorizer();
        let query = format!("topic=x&authorization={token}");
        let (claims, source) = authorizer
            .authenticate(Role::Publisher, &HeaderMap::new(), Some(&query))
            .unwrap()
            .unwrap();
        assert_eq!(source, TokenSource::Query);
        assert!(claims.can_publish_all(["https://example.com/books/9"]));
        let cookie = format!("mercureAuthorization={token}");
        let map = headers(&[(header::COOKIE, cookie.as_bytes())]);
        assert_eq!(
            authorizer
                .authenticate(Role::Subscriber, &map, None)
                .unwrap()
                .map(|(_, s)| s),
            Some(TokenSource::Cookie)
        );
        assert_eq!(
            authorizer.authenticate(Role::Subscriber, &HeaderMap::new(), None),
            Ok(None)
        );
        let bad = headers(&[(header::AUTHORIZATION, b"Bearer x.y.z")]);
        assert!(matches!(
            authorizer.authenticate(Role::Subscriber, &bad, Some(&query)),
            Err(AuthError::MalformedToken(_))
        ));
        let other = mint(&SigningKey::hmac("other"), &all_claims(), None).unwrap();
        let cookie = format!("mercureAuthorization={other}");
        let map = headers(&[(header::COOKIE, cookie.as_bytes())]);
        assert_eq!(
            authorizer.authenticate(Role::Subscriber, &map, None),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn json_web_key_sets() {
        let set = KeyConfig::from_jwks(key!("jwks.json")).unwrap();
        let mut expected = RSA_ALGORITHMS.to_vec();
        expected.extend([Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA]);
        expected.sort_by_key(|a| Algorithm::ALL.iter().position(|b| b == a));
        assert_eq!(set.algorithms(), expected);
        let authorizer = Authorizer::new(Some(set.clone()), None);
        let verify = |signing: SigningKey| {
            let token = mint_at(&signing, &all_claims(), None, now()).unwrap();
            authorizer.verify(Role::Publisher, &token, now())
        };
        let rsa = || SigningKey::from_pem(key!("rsa-private.pem")).unwrap();
        let p256 = || SigningKey::from_pem(key!("p256-private.pem")).unwrap();
        let p384 = || SigningKey::from_pem(key!("p384-private.pem")).unwrap();
        let ed = || SigningKey::from_pem(key!("ed25519-private.pem")).unwrap();
        // With and without `kid`.
        assert!(verify(rsa()).is_ok());
        assert!(
            verify(
                rsa()
                    .with_algorithm(Algorithm::PS512)
                    .unwrap()
                    .with_key_id("rsa-1")
            )
            .is_ok()
        );
        assert!(verify(p256().with_key_id("p256-1")).is_ok());
        assert!(verify(p384()).is_ok());
        assert!(verify(ed().with_key_id("ed-1")).is_ok());
        // A `kid` that names another key, or none at all.
        assert_eq!(
            verify(p384().with_key_id("p256-1")),
            Err(AuthError::UnknownKeyId)
        );
        assert_eq!(
            verify(ed().with_key_id("nope")),
            Err(AuthError::UnknownKeyId)
        );
        // An algorithm no key of the set accepts.
        assert!(matches!(
            verify(SigningKey::hmac("x")),
            Err(AuthError::AlgorithmNotAllowed { key: "JWK set", .. })
        ));
        // Restricting a set.
        let only_es256 = set.clone().restrict_to(&[Algorithm::ES256]).unwrap();
        let authorizer = Authorizer::new(Some(only_es256), None);
        let token = mint_at(&rsa(), &all_claims(), None, now()).unwrap();
        assert!(matches!(
            authorizer.verify(Role::Publisher, &token, now()),
            Err(AuthError::AlgorithmNotAllowed { .. })
        ));
        assert_eq!(
            set.restrict_to(&[Algorithm::HS256]).unwrap_err(),
            KeyError::AlgorithmMismatch {
                algorithm: Algorithm::HS256,
                family: "JWK set"
            }
        );

        // Several keys of one algorithm and no `kid`: each is tried.
        let two = format!(
            r#"{{"keys": [{{"kty": "oct", "k": "{}"}}, {{"kty": "oct", "k": "{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode("first"),
            URL_SAFE_NO_PAD.encode("second"),
        );
        let authorizer = Authorizer::new(Some(KeyConfig::from_jwks(two.as_bytes()).unwrap()), None);
        for secret in ["first", "second"] {
            let token = mint(&SigningKey::hmac(secret), &all_claims(), None).unwrap();
            assert!(authorizer.verify_publisher(&token).is_ok(), "{secret}");
        }
        let token = mint(&SigningKey::hmac("third"), &all_claims(), None).unwrap();
        assert_eq!(
            authorizer.verify_publisher(&token),
            Err(AuthError::BadSignature)
        );

        for (jwks, reason) in [
            (&b"[]"[..], "not a JSON object with a `keys` array"),
            (b"{\"keys\": 1}", "not a JSON object with a `keys` array"),
            (b"{\"keys\": []}", "no usable signature key in the set"),
            (
                br#"{"keys": [{"kty": "OKP", "crv": "X25519", "x": "AQ"}, {"kty": "oct", "k": "AQ", "use": "enc"}, {"kty": "what"}]}"#,
                "no usable signature key in the set",
            ),
        ] {
            assert_eq!(KeyConfig::from_jwks(jwks).unwrap_err(), KeyError::InvalidJwks(reason));
        }
        let token = raw_token(SECRET, r#"{"alg":"HS256","kid":7}"#, "{}");
        assert_eq!(
            hmac_authorizer().verify(Role::Publisher, &token, now()),
            Err(AuthError::MalformedToken(
                "the header's `kid` is not a string"
            ))
        );
        // A single key ignores `kid`.
        let token = mint(
            &SigningKey::hmac(SECRET).with_key_id("any"),
            &all_claims(),
            None,
        )
        .unwrap();
        assert!(hmac_authorizer().verify_publisher(&token).is_ok());
    }

    #[test]
    fn algorithm_names() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
            assert_eq!(alg.to_string(), alg.as_str());
        }
        assert!(matches!(
            "hs256".parse::<Algorithm>(),
            Err(KeyError::UnknownAlgorithm(_))
        ));
        assert!("none".parse::<Algorithm>().is_err());
    }

    #[test]
    fn time_claims_with_leeway() {
        let at = |exp: &str| verify_raw(&format!(r#"{{"exp":{exp}}}"#));
        let t = 1_700_000_000u64;
        assert!(at(&format!("{}", t + 100)).is_ok());
        // Within the 5 s leeway.
        assert!(at(&format!("{}", t - 4)).is_ok());
        assert_eq!(
            at(&format!("{}", t - 5)),
            Err(AuthError::Expired {
                ago: Duration::from_secs(5)
            })
        );
        assert_eq!(
            at(&format!("{}", t - 3600)).unwrap_err().to_string(),
            "token expired 3600s ago"
        );
        // Fractional NumericDates are honoured, not ignored.
        assert!(matches!(
            at(&format!("{}.5", t - 10)),
            Err(AuthError::Expired { .. })
        ));
        assert_eq!(
            at(&format!("{}.5", t + 10)).unwrap().expires_at,
            Some(now() + Duration::from_millis(10_500))
        );
        assert!(matches!(at("-1"), Err(AuthError::Expired { .. })));
        assert_eq!(at("1e300").unwrap().expires_at, None);
        assert_eq!(
            at(r#""tomorrow""#),
            Err(AuthError::InvalidClaims("`exp` is not a number of seconds"))
        );
        // No exp: accepted, never expires.
        assert_eq!(verify_raw("{}").unwrap().expires_at, None);
        assert_eq!(at("null").unwrap().expires_at, None);

        let nbf = |nbf: u64| verify_raw(&format!(r#"{{"nbf":{nbf}}}"#));
        assert!(nbf(t).is_ok());
        assert!(nbf(t + 5).is_ok());
        assert_eq!(
            nbf(t + 6),
            Err(AuthError::NotYetValid {
                remaining: Duration::from_secs(6)
            })
        );
        assert_eq!(
            verify_raw(r#"{"nbf":"soon"}"#),
            Err(AuthError::InvalidClaims("`nbf` is not a number of seconds"))
        );

        // Leeway is configurable.
        let strict = hmac_authorizer().with_leeway(Duration::ZERO);
        let token = raw_token(SECRET, r#"{"alg":"HS256"}"#, &format!(r#"{{"exp":{t}}}"#));
        assert!(matches!(
            strict.verify(Role::Publisher, &token, now()),
            Err(AuthError::Expired { .. })
        ));
        assert!(
            strict
                .verify(Role::Publisher, &token, now() - Duration::from_millis(1))
                .is_ok()
        );
    }

    #[test]
    fn tokens_from_other_libraries() {
        // lcobucci/jwt (Symfony, Laravel) writes fractional NumericDates and `iat`.
        let claims = verify_raw(
            r#"{"iat":1699999999.123456,"nbf":1699999999.123456,"exp":1700000100.25,"mercure":{"publish":["*"],"subscribe":["https://example.com/my-private-topic"]}}"#,
        )
        .unwrap();
        assert!(claims.can_publish_all(["https://example.com/anything"]));
        assert_eq!(
            claims.expires_at,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_100_250))
        );
        // A token signed by an independent implementation (Python's `hmac`
        // module) with the secret of Mercure's documentation.
        let independent = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdfX0.a8cjcSRUAcHdnGNMKifA4BK5epRXxQI0UBp2XpNrBdw";
        let claims = hmac_authorizer()
            .verify(Role::Publisher, independent, now())
            .unwrap();
        assert!(claims.can_publish_all(["https://example.com/books/1"]));
        assert_eq!(claims.expires_at, None);
    }

    #[test]
    fn tokens_signed_by_openssl() {
        // Signed with `openssl dgst -sha256 -sign rsa-private.pem` and
        // `openssl pkeyutl -sign -rawin -inkey ed25519-private.pem`.
        let rs256 = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJtZXJjdXJlIjp7InN1YnNjcmliZSI6WyJodHRwczovL2V4YW1wbGUuY29tL3VzZXJzLzEveytyZXN0fSJdfX0.eQvk10tFPYpUYvLQjy8mRFz4mvrPvDVA3ZGGanaeYoMSOzJ6h2EtYDUUsQDfEmS6jIWrUkKD8KtQY6uDujm6kaxLvw8K8rl8Y9pCQRnC8pBdEkxxLHI49pnrS7zq8kKqBRxm2rxB_8CVCWI8Pn3V4i_OcAtiMS96eUquAXtFG65LtC1x_FlXL6v2Tvt59nOYIR7WyDhQrRHAm9bftGNybvy4qVzoZ08ympVKdOw4z_gm4dPF69mJMfvjKzuY_cNAvXrOvAmRKXqzV1OSpIqDIhv0nhMgDam5SWIZNZp-TwCEhfwsNTKBfOhlY57RqqZcsdt8L3JPZKUjjSwehJ5Sgw";
        let eddsa = "eyJhbGciOiJFZERTQSJ9.eyJtZXJjdXJlIjp7InN1YnNjcmliZSI6WyJodHRwczovL2V4YW1wbGUuY29tL3VzZXJzLzEveytyZXN0fSJdfX0.abZg0JBRF_AwAWFLdD2SePybDXFST9O1tvPpmNzmP4CEnooRYlnTv0aDCeDmBrqwFwFdFnvji9JNKVI9lnTyCw";
        for (token, public) in [
            (rs256, key!("rsa-public.pem")),
            (rs256, key!("rsa-public-pkcs1.pem")),
            (eddsa, key!("ed25519-public.pem")),
        ] {
            let authorizer = Authorizer::new(None, Some(KeyConfig::from_pem(public).unwrap()));
            let claims = authorizer.verify(Role::Subscriber, token, now()).unwrap();
            assert!(claims.can_subscribe_any(["https://example.com/users/1/books/2"]));
            assert!(!claims.can_subscribe_any(["https://example.com/users/2/books/2"]));
        }
    }

    #[test]
    fn claim_shapes() {
        let claims = verify_raw(
            r#"{"mercure":{"publish":["a","{b}"],"subscribe":[],"payload":[1,2]},"aud":"x","iss":"y"}"#,
        )
        .unwrap();
        assert_eq!(claims.publish.as_ref().map(SelectorSet::len), Some(2));
        assert_eq!(claims.subscribe.as_ref().map(SelectorSet::len), Some(0));
        assert_eq!(claims.payload, Some(serde_json::json!([1, 2])));
        assert!(!claims.can_subscribe_any(["a"]));

        assert_eq!(verify_raw(r#"{"sub":"x"}"#).unwrap(), Claims::default());
        assert_eq!(
            verify_raw(r#"{"mercure":null}"#).unwrap(),
            Claims::default()
        );
        assert_eq!(
            verify_raw(r#"{"mercure":{"payload":null}}"#).unwrap(),
            Claims::default()
        );
        for (claims, message) in [
            (
                r#"{"mercure":"all"}"#,
                "invalid claims: `mercure` is not a JSON object",
            ),
            (
                r#"{"mercure":{"publish":"*"}}"#,
                "invalid claims: `mercure.publish` is not an array of strings",
            ),
            (
                r#"{"mercure":{"subscribe":["a",1]}}"#,
                "invalid claims: `mercure.subscribe` is not an array of strings",
            ),
            ("[1,2]", "malformed token: the claims are not a JSON object"),
            (
                "not json",
                "malformed token: the claims are not a JSON object",
            ),
        ] {
            assert_eq!(
                verify_raw(claims).unwrap_err().to_string(),
                message,
                "{claims}"
            );
        }
    }

    #[test]
    fn malformed_tokens() {
        let authorizer = hmac_authorizer();
        let check = |token: &str, message: &str| {
            let err = authorizer
                .verify(Role::Publisher, token, now())
                .unwrap_err();
            assert!(
                matches!(err, AuthError::MalformedToken(_)),
                "{token}: {err}"
            );
            assert_eq!(
                err.to_string(),
                format!("malformed token: {message}"),
                "{token}"
            );
        };
        check("", "the token is empty");
        check("abc", "a JWT has three base64url parts separated by `.`");
        check("a.b", "a JWT has three base64url parts separated by `.`");
        check(
            "a.b.c.d",
            "a JWT has three base64url parts separated by `.`",
        );
        check("a.b.c.d.e", "encrypted tokens (JWE) are not supported");
        check("!!!.e30.sig", "the header is not base64url");
        check(
            &format!("{}.e30.sig", URL_SAFE_NO_PAD.encode("[]")),
            "the header is not a JSON object",
        );
        check(
            &format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT"}"#)),
            "the header has no `alg` string",
        );
        check(
            &format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(r#"{"alg":256}"#)),
            "the header has no `alg` string",
        );
        let crit = raw_token(SECRET, r#"{"alg":"HS256","crit":["exp"],"exp":1}"#, "{}");
        check(
            &crit,
            "the header lists critical extensions (`crit`), which are not supported",
        );
        check(
            &"a".repeat(MAX_TOKEN_LEN + 1),
            "the token is longer than 64 KiB",
        );
        // A signature over a payload that is not base64url.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
        let message = format!("{header}.!!!");
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        check(
            &format!("{message}.{signature}"),
            "the claims or the signature are not base64url",
        );
        // A bad signature with a valid shape.
        let token = raw_token("another secret", r#"{"alg":"HS256"}"#, "{}");
        assert_eq!(
            authorizer.verify(Role::Publisher, &token, now()),
            Err(AuthError::BadSignature)
        );
        let token = raw_token(SECRET, r#"{"alg":"HS256"}"#, "{}");
        let (head, _) = token.rsplit_once('.').unwrap();
        assert_eq!(
            authorizer.verify(Role::Publisher, &format!("{head}.!!"), now()),
            // HMAC signatures are compared as text, so this is a mismatch.
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn keys_per_role() {
        let publisher = SigningKey::hmac("publisher secret");
        let subscriber = SigningKey::hmac("subscriber secret");
        let authorizer = Authorizer::new(
            Some(KeyConfig::hmac("publisher secret")),
            Some(KeyConfig::hmac("subscriber secret")),
        );
        let claims = MercureClaims::default();
        let p = mint(&publisher, &claims, None).unwrap();
        let s = mint(&subscriber, &claims, None).unwrap();
        assert!(authorizer.verify_publisher(&p).is_ok());
        assert!(authorizer.verify_subscriber(&s).is_ok());
        assert_eq!(
            authorizer.verify_publisher(&s),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            authorizer.verify_subscriber(&p),
            Err(AuthError::BadSignature)
        );

        let only_publishers = Authorizer::new(Some(KeyConfig::hmac("publisher secret")), None);
        assert!(only_publishers.has_key(Role::Publisher));
        assert!(!only_publishers.has_key(Role::Subscriber));
        assert_eq!(
            only_publishers
                .verify_subscriber(&p)
                .unwrap_err()
                .to_string(),
            "no JWT key is configured for subscribers"
        );
        let nobody = Authorizer::new(None, None);
        assert_eq!(
            nobody.verify_publisher(&p),
            Err(AuthError::NoKey(Role::Publisher))
        );
    }

    #[test]
    fn minting() {
        let key = SigningKey::hmac(SECRET);
        let token = mint(&key, &MercureClaims::default(), None).unwrap();
        let (_, payload, _) = {
            let mut parts = token.split('.');
            (parts.next(), parts.next().unwrap(), parts.next())
        };
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(payload, serde_json::json!({"mercure": {}}));

        let token = mint_at(&key, &all_claims(), Some(Duration::from_secs(90)), now()).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(payload["exp"], serde_json::json!(1_700_000_090u64));
        assert_eq!(
            payload["mercure"]["publish"],
            serde_json::json!(["https://example.com/books/{id}"])
        );
        let header = token.split('.').next().unwrap();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");

        // A token minted with a TTL expires.
        let authorizer = hmac_authorizer();
        assert!(matches!(
            authorizer.verify(Role::Subscriber, &token, now() + Duration::from_secs(95)),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn generated_secrets() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn claims_methods() {
        let claims = Claims {
            publish: Some(SelectorSet::new(["urn:a", "/b/{id}"])),
            subscribe: Some(SelectorSet::new(["/private/{id}"])),
            payload: None,
            expires_at: None,
        };
        assert!(claims.can_publish_all(["urn:a"]));
        assert!(claims.can_publish_all(["urn:a", "/b/1", "/b/2"]));
        assert!(!claims.can_publish_all(["urn:a", "/c/1"]));
        assert!(!claims.can_publish_all([]));
        assert!(claims.can_subscribe_any(["/private/1"]));
        assert!(claims.can_subscribe_any(["urn:x", "/private/1"]));
        assert!(!claims.can_subscribe_any(["urn:x"]));
        assert!(!claims.can_subscribe_any([]));
        let empty = Claims::default();
        assert!(!empty.can_publish_all(["urn:a"]));
        assert!(!empty.can_subscribe_any(["urn:a"]));
        let all = Claims {
            publish: Some(SelectorSet::new(["*"])),
            subscribe: Some(SelectorSet::new(["*"])),
            ..Claims::default()
        };
        assert!(all.can_publish_all(["anything", "else"]));
        assert!(all.can_subscribe_any(["anything"]));
    }

    fn headers(pairs: &[(header::HeaderName, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn token_precedence() {
        let all = headers(&[
            (header::AUTHORIZATION, b"Bearer h.h.h"),
            (header::COOKIE, b"mercureAuthorization=c.c.c"),
        ]);
        let query = Some("topic=%2Fx&authorization=q.q.q");
        assert_eq!(
            extract_token(&all, query).unwrap(),
            Some(("h.h.h".into(), TokenSource::Header))
        );
        let no_header = headers(&[(header::COOKIE, b"mercureAuthorization=c.c.c")]);
        assert_eq!(
            extract_token(&no_header, query).unwrap(),
            Some(("q.q.q".into(), TokenSource::Query))
        );
        assert_eq!(
            extract_token(&no_header, Some("topic=x")).unwrap(),
            Some(("c.c.c".into(), TokenSource::Cookie))
        );
        assert_eq!(
            extract_token(&HeaderMap::new(), Some("topic=x")).unwrap(),
            None
        );
        assert_eq!(extract_token(&HeaderMap::new(), Some("")).unwrap(), None);
        // The query parameter is percent-decoded.
        assert_eq!(
            extract_token(&HeaderMap::new(), Some("authorization=a%2Eb.c")).unwrap(),
            Some(("a.b.c".into(), TokenSource::Query))
        );
        // A broken header is an error even when a query token exists.
        let broken = headers(&[(header::AUTHORIZATION, b"Basic dXNlcjpwYXNz")]);
        assert_eq!(
            extract_token(&broken, query),
            Err(AuthError::InvalidAuthorizationHeader(
                "the scheme is not Bearer"
            ))
        );
    }

    #[test]
    fn authorization_header_errors() {
        let extract = |pairs: &[(header::HeaderName, &[u8])]| extract_token(&headers(pairs), None);
        assert_eq!(
            extract(&[(header::AUTHORIZATION, b"bearer   t.o.k  ")]).unwrap(),
            Some(("t.o.k".into(), TokenSource::Header))
        );
        for (value, reason) in [
            (b"Bearer".as_slice(), "the Bearer token is empty"),
            (b"Bearer   ", "the Bearer token is empty"),
            (b"Token t.o.k", "the scheme is not Bearer"),
            (b"t.o.k", "the scheme is not Bearer"),
            (b"Bearer t\xE9", "the value is not visible ASCII"),
        ] {
            assert_eq!(
                extract(&[(header::AUTHORIZATION, value)]),
                Err(AuthError::InvalidAuthorizationHeader(reason)),
                "{value:?}"
            );
        }
        assert_eq!(
            extract(&[
                (header::AUTHORIZATION, b"Bearer a.b.c"),
                (header::AUTHORIZATION, b"Bearer d.e.f")
            ]),
            Err(AuthError::InvalidAuthorizationHeader(
                "several Authorization headers"
            ))
        );
        let none = HeaderMap::new();
        assert_eq!(
            extract_token(&none, Some("authorization=a&authorization=b")),
            Err(AuthError::InvalidAuthorizationQuery("given several times"))
        );
        assert_eq!(
            extract_token(&none, Some("authorization=")),
            Err(AuthError::InvalidAuthorizationQuery("empty"))
        );
        assert_eq!(
            extract_token(&none, Some("authorization")),
            Err(AuthError::InvalidAuthorizationQuery("empty"))
        );
    }

    #[test]
    fn cookie_parsing() {
        let cookie = |values: &[&[u8]]| {
            let pairs: Vec<_> = values.iter().map(|v| (header::COOKIE, *v)).collect();
            extract_token(&headers(&pairs), None)
                .unwrap()
                .map(|(t, _)| t)
        };
        assert_eq!(
            cookie(&[b"mercureAuthorization=a.b.c"]),
            Some("a.b.c".into())
        );
        assert_eq!(
            cookie(&[b"theme=dark;mercureAuthorization=a.b.c; lang=en"]),
            Some("a.b.c".into())
        );
        assert_eq!(
            cookie(&[b"  mercureAuthorization = \"a.b.c\" ; x=y"]),
            Some("a.b.c".into())
        );
        // Split over several headers (HTTP/2), first one wins.
        assert_eq!(
            cookie(&[
                b"theme=dark",
                b"mercureAuthorization=first",
                b"mercureAuthorization=second"
            ]),
            Some("first".into())
        );
        // Names are exact and case-sensitive.
        assert_eq!(
            cookie(&[b"xmercureAuthorization=a; mercureauthorization=b"]),
            None
        );
        assert_eq!(cookie(&[b"mercureAuthorizationX=a"]), None);
        // An empty cookie (after a logout) is no cookie; a later one still counts.
        assert_eq!(cookie(&[b"mercureAuthorization="]), None);
        assert_eq!(
            cookie(&[b"mercureAuthorization=; mercureAuthorization=a.b.c"]),
            Some("a.b.c".into())
        );
        // Other cookies with bytes that are not text do not get in the way.
        assert_eq!(
            cookie(&[b"blob=\xFF\xFE; mercureAuthorization=a.b.c"]),
            Some("a.b.c".into())
        );
        assert_eq!(cookie(&[b"garbage;;;=;mercureAuthorization"]), None);
        // Another cookie name.
        let map = headers(&[(header::COOKIE, b"hub=a.b.c")]);
        assert_eq!(
            extract_token_with_cookie(&map, None, "hub").unwrap(),
            Some(("a.b.c".into(), TokenSource::Cookie))
        );
        assert_eq!(extract_token(&map, None).unwrap(), None);
    }

    #[test]
    fn messages_are_one_line_and_leak_nothing() {
        let token = raw_token("another secret", r#"{"alg":"HS256"}"#, r#"{"mercure":{}}"#);
        let errors = [
            AuthError::MissingToken,
            AuthError::InvalidAuthorizationHeader("x"),
            AuthError::InvalidAuthorizationQuery("x"),
            AuthError::MalformedToken("x"),
            AuthError::InvalidClaims("x"),
            hmac_authorizer()
                .verify(Role::Publisher, &token, now())
                .unwrap_err(),
            AuthError::Expired {
                ago: Duration::from_secs(1),
            },
            AuthError::NotYetValid {
                remaining: Duration::from_secs(1),
            },
            AuthError::AlgorithmNotAllowed {
                alg: "x".into(),
                key: "RSA key",
                accepted: "RS256".into(),
            },
            AuthError::NoKey(Role::Publisher),
            AuthError::UnknownKeyId,
            AuthError::KeyRejected("RSA key"),
            AuthError::Signing("x"),
        ];
        for err in errors {
            let message = err.to_string();
            assert!(!message.contains('\n'), "{message}");
            assert!(
                !message.contains(SECRET) && !message.contains(&token),
                "{message}"
            );
        }
        let debug = format!(
            "{:?} {:?}",
            KeyConfig::hmac(SECRET),
            SigningKey::hmac(SECRET)
        );
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("33, 67"), "no key bytes either: {debug}");
    }
}

/// Hostile input never panics: tokens, headers and query strings of any shape.
#[cfg(test)]
mod hostile_input {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn authorizer() -> Authorizer {
        let key = KeyConfig::hmac("secret");
        Authorizer::new(Some(key.clone()), Some(key))
    }

    proptest! {
        #[test]
        fn any_token_is_refused_without_panic(token in "\\PC{0,200}") {
            let result = authorizer().verify(Role::Publisher, &token, SystemTime::now());
            prop_assert!(result.is_err());
            let message = result.unwrap_err().to_string();
            prop_assert!(!message.contains('\n'));
        }

        #[test]
        fn tokens_with_json_parts_never_panic(
            header in "\\{(\"(alg|kid|crit|typ)\":(\"[A-Za-z0-9]{0,6}\"|[0-9]{1,3}|null|\\[\\]),?){0,3}\\}",
            claims in "\\{(\"(exp|nbf|mercure|publish|subscribe|payload)\":(\"[a-z*]{0,3}\"|-?[0-9]{1,12}(\\.[0-9]{1,3})?|null|\\{\\}|\\[\"\\*\"\\]|\\{\"publish\":\\[\"\\*\",1\\]\\}),?){0,4}\\}",
            valid_header in any::<bool>(),
        ) {
            // Signed correctly, so that the claims are looked at too.
            let header = if valid_header { r#"{"alg":"HS256"}"#.to_string() } else { header };
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&header),
                URL_SAFE_NO_PAD.encode(&claims)
            );
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(b"secret"),
                jsonwebtoken::Algorithm::HS256,
            )
            .unwrap();
            let result = authorizer().verify(Role::Subscriber, &format!("{message}.{signature}"), SystemTime::now());
            if valid_header && claims == "{}" {
                prop_assert_eq!(result, Ok(Claims::default()));
            }
        }

        #[test]
        fn any_request_shape_is_handled(
            authorization in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            cookies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..3),
            query in proptest::option::of("\\PC{0,60}"),
        ) {
            let mut headers = HeaderMap::new();
            if let Some(value) = authorization.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                headers.append(header::AUTHORIZATION, value);
            }
            for cookie in cookies {
                if let Ok(value) = HeaderValue::from_bytes(&cookie) {
                    headers.append(header::COOKIE, value);
                }
            }
            if let Ok(Some((token, _))) = extract_token(&headers, query.as_deref()) {
                prop_assert!(!token.is_empty());
            }
        }
    }
}
