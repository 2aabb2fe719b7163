//! A service principal signing in with a certificate, in pure Rust (azure_identity's
//! `ClientCertificateCredential` needs OpenSSL; this one does not).
//!
//! The certificate and its private key come from a PEM file (the certificate(s) and a PKCS#8
//! `PRIVATE KEY`, a password-protected PKCS#8 `ENCRYPTED PRIVATE KEY` (PBES2), or a PKCS#1
//! `RSA PRIVATE KEY`, in any order, leaf first) or a PKCS#12 (`.pfx`/`.p12`) file, with an
//! optional password. Each token request signs a fresh
//! client assertion (Entra's "certificate credential" JWT):
//!
//! - header: `alg` `RS256` (default) or `PS256`, `typ` `JWT`, `x5t#S256` (base64url SHA-256 of
//!   the certificate), plus `x5t` (SHA-1) with RS256, and `x5c` (the chain, standard base64
//!   DER) when asked to send the chain (`AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`, needed for
//!   subject name + issuer authentication);
//! - claims: `aud` the token endpoint URL, `iss` = `sub` = the client id, a fresh `jti`,
//!   `nbf`/`iat` now, `exp` ten minutes later;
//!
//! and POSTs it as `client_assertion` with the client-credentials grant. Legacy OpenSSL
//! encrypted keys (`Proc-Type: 4,ENCRYPTED` headers) are not read: convert them with
//! `openssl pkcs8 -topk8`.
//!
//! ```no_run
//! # fn f() -> redis_entra::Result<()> {
//! use redis_entra::credential::{client_certificate, ClientCertificateOptions, CertificateSource};
//! let credential = client_certificate(ClientCertificateOptions::new(
//!     "00000000-0000-0000-0000-000000000000",
//!     "11111111-1111-1111-1111-111111111111",
//!     CertificateSource::Path("/etc/app/cert.pem".into()),
//! ))?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use base64::Engine;
use serde_json::json;

use super::client_assertion::{new_jti, now_secs, resolve_authority, TokenEndpoint};
use crate::error::{Error, Result};
use crate::tls::TlsOptions;

/// How long a client assertion is valid (MSAL uses ten minutes).
const ASSERTION_LIFETIME_SECS: u64 = 600;

/// The signature algorithm of the client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AssertionAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, as the Azure SDK for Rust and older MSALs sign (and as
    /// ADFS requires).
    #[default]
    Rs256,
    /// RSASSA-PSS with SHA-256, what Entra's current documentation and MSAL sign with.
    Ps256,
}

impl AssertionAlgorithm {
    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        }
    }
}

/// Where the certificate and its private key are.
#[derive(Clone)]
#[non_exhaustive]
pub enum CertificateSource {
    /// A file: PEM (certificate(s) + private key) or PKCS#12, told apart by their contents.
    Path(PathBuf),
    /// PEM text: certificate(s) + private key.
    Pem(String),
    /// The bytes of a PKCS#12 file.
    Pkcs12(Vec<u8>),
}

impl Default for CertificateSource {
    fn default() -> Self {
        Self::Path(PathBuf::new())
    }
}

impl std::fmt::Debug for CertificateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Self::Pem(_) => f.write_str("Pem(<redacted>)"),
            Self::Pkcs12(_) => f.write_str("Pkcs12(<redacted>)"),
        }
    }
}

/// What a client certificate credential needs.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ClientCertificateOptions {
    /// The tenant (directory) id.
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
    /// The certificate and its private key.
    pub certificate: CertificateSource,
    /// The password of the PKCS#12 file or of an encrypted PEM key
    /// (`AZURE_CLIENT_CERTIFICATE_PASSWORD`); `None` for none.
    pub password: Option<String>,
    /// RS256 (default) or PS256.
    pub algorithm: AssertionAlgorithm,
    /// Send the certificate chain as `x5c` (`AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`), for
    /// subject name + issuer authentication.
    pub send_certificate_chain: bool,
    /// The authority host, e.g. `https://login.microsoftonline.com`; `None` reads
    /// `AZURE_AUTHORITY_HOST`, then uses the public cloud.
    pub authority_host: Option<String>,
    /// Whom to trust for the token endpoint.
    pub tls: TlsOptions,
}

impl ClientCertificateOptions {
    /// A service principal's certificate, in tenant `tenant_id`.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        certificate: CertificateSource,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            certificate,
            ..Self::default()
        }
    }
}

authority_and_tls!(ClientCertificateOptions);

impl std::fmt::Debug for ClientCertificateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificateOptions")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("certificate", &self.certificate)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("algorithm", &self.algorithm)
            .field("send_certificate_chain", &self.send_certificate_chain)
            .field("authority_host", &self.authority_host)
            .finish()
    }
}

/// A loaded certificate: the private key, the chain (leaf first) and the leaf's thumbprints.
struct LoadedCertificate {
    key: RsaKeyPair,
    chain: Vec<Vec<u8>>,
    sha1: Vec<u8>,
    sha256: Vec<u8>,
}

/// A service principal's certificate credential, in pure Rust (no OpenSSL).
///
/// Loads the certificate and key once (PEM: certificate(s) plus a PKCS#8, encrypted PKCS#8 or
/// PKCS#1 key; or PKCS#12), then for each token request signs a fresh client assertion
/// (`RS256` by default or `PS256`; `x5t#S256`, plus `x5t` with RS256, and `x5c` when the chain
/// is sent; `aud` the token endpoint, `iss` = `sub` = the client id, a fresh `jti`, ten
/// minutes of validity) and exchanges it with the client-credentials grant. Tokens are not
/// cached: every call is a request (the [`TokenManager`](crate::TokenManager) caches and
/// refreshes). Entra's refusals come back with their AADSTS line and what to change; 429 and
/// 5xx keep `Retry-After`. `Debug` shows the client id and the certificate's SHA-256
/// thumbprint, never the key.
pub struct ClientCertificateCredential {
    endpoint: TokenEndpoint,
    certificate: LoadedCertificate,
    algorithm: AssertionAlgorithm,
    send_chain: bool,
    rng: SystemRandom,
}

impl std::fmt::Debug for ClientCertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificateCredential")
            .field("endpoint", &self.endpoint)
            .field("thumbprint_sha256", &hex(&self.certificate.sha256))
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A client certificate credential.
pub fn client_certificate(options: ClientCertificateOptions) -> Result<Arc<dyn TokenCredential>> {
    Ok(Arc::new(ClientCertificateCredential::new(options)?))
}

impl ClientCertificateCredential {
    /// Loads the certificate and checks the options; makes no request.
    pub fn new(options: ClientCertificateOptions) -> Result<Self> {
        let authority = resolve_authority(options.authority_host.as_deref())?;
        let endpoint = TokenEndpoint::new(
            &authority,
            &options.tenant_id,
            &options.client_id,
            &options.tls,
        )?;
        let certificate = load(&options.certificate, options.password.as_deref())?;
        Ok(Self {
            endpoint,
            certificate,
            algorithm: options.algorithm,
            send_chain: options.send_certificate_chain,
            rng: SystemRandom::new(),
        })
    }

    /// The certificate's SHA-256 thumbprint, in hex (as the Azure portal shows it).
    pub fn thumbprint_sha256(&self) -> String {
        hex(&self.certificate.sha256)
    }

    /// A freshly signed client assertion for the token endpoint.
    fn assertion(&self) -> azure_core::Result<String> {
        let url64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let mut header = json!({
            "alg": self.algorithm.name(),
            "typ": "JWT",
            "x5t#S256": url64(&self.certificate.sha256),
        });
        if self.algorithm == AssertionAlgorithm::Rs256 {
            header["x5t"] = json!(url64(&self.certificate.sha1));
        }
        if self.send_chain {
            let chain: Vec<String> = self
                .certificate
                .chain
                .iter()
                .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
                .collect();
            header["x5c"] = json!(chain);
        }
        let now = now_secs();
        let claims = json!({
            "aud": self.endpoint.url,
            "iss": self.endpoint.client_id,
            "sub": self.endpoint.client_id,
            "jti": new_jti(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            url64(header.to_string().as_bytes()),
            url64(claims.to_string().as_bytes())
        );
        let padding = match self.algorithm {
            AssertionAlgorithm::Rs256 => &RSA_PKCS1_SHA256,
            AssertionAlgorithm::Ps256 => &RSA_PSS_SHA256,
        };
        let mut signature = vec![0; self.certificate.key.public_modulus_len()];
        self.certificate
            .key
            .sign(padding, &self.rng, signing_input.as_bytes(), &mut signature)
            .map_err(|_| {
                azure_core::Error::with_message(
                    ErrorKind::Credential,
                    "signing the client assertion with the certificate's private key failed",
                )
            })?;
        Ok(format!("{signing_input}.{}", url64(&signature)))
    }
}

/// What to check when Entra refuses a certificate assertion.
fn certificate_hint(code: u32) -> Option<&'static str> {
    match code {
        700027 | 700023 => Some(
            "the application does not know this certificate or its key: upload the certificate (its public part) to the app registration, or point AZURE_CLIENT_CERTIFICATE_PATH at the certificate that is registered",
        ),
        700024 => Some("the assertion is outside its validity window: check this machine's clock"),
        700016 => Some("check AZURE_CLIENT_ID (the application id) and AZURE_TENANT_ID"),
        90002 => Some("check AZURE_TENANT_ID and AZURE_AUTHORITY_HOST"),
        _ => None,
    }
}

#[async_trait]
impl TokenCredential for ClientCertificateCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let assertion = self.assertion()?;
        self.endpoint
            .exchange(scopes, &assertion, certificate_hint)
            .await
    }
}

/// The env var names, for messages.
const PATH_VAR: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
const PASSWORD_VAR: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";

fn load(source: &CertificateSource, password: Option<&str>) -> Result<LoadedCertificate> {
    match source {
        CertificateSource::Path(path) => {
            if path.as_os_str().is_empty() {
                return Err(Error::Config(format!(
                    "no client certificate: set {PATH_VAR} to a PEM or PKCS#12 file"
                )));
            }
            let bytes = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "cannot read the client certificate {} ({e}): set {PATH_VAR} to a readable PEM file (certificate + private key) or PKCS#12 (.pfx) file",
                    path.display()
                ))
            })?;
            let what = path.display().to_string();
            if looks_like_pem(&bytes) {
                load_pem(&bytes, password, &what)
            } else {
                load_pkcs12(&bytes, password, &what)
            }
        }
        CertificateSource::Pem(text) => load_pem(text.as_bytes(), password, "the PEM text"),
        CertificateSource::Pkcs12(bytes) => load_pkcs12(bytes, password, "the PKCS#12 data"),
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(4096)];
    head.windows(11).any(|w| w == b"-----BEGIN ")
}

/// The DER of the first `ENCRYPTED PRIVATE KEY` block, if there is one.
fn encrypted_key_der(bytes: &[u8]) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    let text = std::str::from_utf8(bytes).ok()?;
    let start = text.find(BEGIN)? + BEGIN.len();
    let end = start + text[start..].find(END)?;
    let body: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Decrypts a PKCS#8 `EncryptedPrivateKeyInfo` with `password`.
fn decrypt_key(der: &[u8], password: Option<&str>, what: &str) -> Result<RsaKeyPair> {
    use pkcs8::der::Decode;
    let Some(password) = password else {
        return Err(Error::Config(format!(
            "the private key in {what} is encrypted: set {PASSWORD_VAR} to its password"
        )));
    };
    let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(der).map_err(|e| {
        Error::Config(format!(
            "the encrypted private key in {what} is not PKCS#8 ({e})"
        ))
    })?;
    let plain = info.decrypt(password).map_err(|_| {
        Error::Config(format!(
            "cannot decrypt the private key in {what}: the password is wrong (check {PASSWORD_VAR}) or the encryption scheme is not PBES2 (re-encrypt with openssl pkcs8 -topk8 -v2 aes-256-cbc)"
        ))
    })?;
    RsaKeyPair::from_pkcs8(plain.as_bytes()).map_err(|e| {
        Error::Config(format!(
            "the private key in {what} is not a usable RSA key ({e}): Entra certificate credentials use RSA keys"
        ))
    })
}

fn load_pem(bytes: &[u8], password: Option<&str>, what: &str) -> Result<LoadedCertificate> {
    use rustls_pemfile::Item;
    let mut reader = std::io::Cursor::new(bytes);
    let mut chain = Vec::new();
    let mut key = None;
    for item in rustls_pemfile::read_all(&mut reader) {
        let item = item.map_err(|e| {
            Error::Config(format!(
                "{what} is not a valid PEM file ({e}): check {PATH_VAR}"
            ))
        })?;
        match item {
            Item::X509Certificate(der) => chain.push(der.to_vec()),
            Item::Pkcs8Key(der) => {
                key.get_or_insert(RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| {
                    Error::Config(format!(
                        "the private key in {what} is not a usable RSA key ({e}): Entra certificate credentials use RSA keys"
                    ))
                })?);
            }
            Item::Pkcs1Key(der) => {
                key.get_or_insert(RsaKeyPair::from_der(der.secret_pkcs1_der()).map_err(|e| {
                    Error::Config(format!("the RSA private key in {what} is not usable ({e})"))
                })?);
            }
            Item::Sec1Key(_) => {
                return Err(Error::Config(format!(
                    "{what} holds an EC key: Entra certificate credentials use RSA keys"
                )))
            }
            _ => {}
        }
    }
    if key.is_none() {
        if let Some(der) = encrypted_key_der(bytes) {
            key = Some(decrypt_key(&der, password, what)?);
        }
    }
    let Some(key) = key else {
        let legacy = bytes.windows(9).any(|w| w == b"ENCRYPTED");
        return Err(Error::Config(if legacy {
            format!(
                "the private key in {what} is encrypted in OpenSSL's legacy format, which this credential does not read: convert it (openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem) or use a PKCS#12 file with {PASSWORD_VAR}"
            )
        } else {
            format!(
                "{what} has no private key: {PATH_VAR} must name a file with the certificate and its private key (PEM: both blocks in one file)"
            )
        }));
    };
    finish(key, chain, what)
}

fn load_pkcs12(bytes: &[u8], password: Option<&str>, what: &str) -> Result<LoadedCertificate> {
    use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
    let store = KeyStore::from_pkcs12(bytes, password.unwrap_or(""), Pkcs12ImportPolicy::Relaxed)
        .map_err(|e| {
            let reason = match e {
                p12_keystore::error::Error::MacError(_) | p12_keystore::error::Error::UnpadError => {
                    format!(
                        "the password is wrong: set {PASSWORD_VAR} to the PKCS#12 file's password{}",
                        if password.is_none() { " (none is set)" } else { "" }
                    )
                }
                other => format!(
                    "{other}: {PATH_VAR} must name a PEM file (certificate + private key) or a PKCS#12 (.pfx) file"
                ),
            };
            Error::Config(format!("cannot open the client certificate {what}: {reason}"))
        })?;
    let Some((_, chain)) = store.private_key_chain() else {
        return Err(Error::Config(format!(
            "the PKCS#12 file {what} has no private key with its certificate: export the certificate with its private key"
        )));
    };
    let key = RsaKeyPair::from_pkcs8(chain.key().as_der()).map_err(|e| {
        Error::Config(format!(
            "the private key in {what} is not a usable RSA key ({e}): Entra certificate credentials use RSA keys"
        ))
    })?;
    let certs = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
    finish(key, certs, what)
}

fn finish(key: RsaKeyPair, chain: Vec<Vec<u8>>, what: &str) -> Result<LoadedCertificate> {
    let Some(leaf) = chain.first() else {
        return Err(Error::Config(format!(
            "{what} has a private key but no certificate: {PATH_VAR} must name a file with both"
        )));
    };
    let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, leaf)
        .as_ref()
        .to_vec();
    let sha256 = digest::digest(&digest::SHA256, leaf).as_ref().to_vec();
    Ok(LoadedCertificate {
        key,
        chain,
        sha1,
        sha256,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
