//! Whom to trust: the system's roots plus, optionally, one more CA (the emulator's, or a
//! corporate proxy's). Shared by Redis connections and token requests, so both trust the same.
//!
//! Verification is always on unless [`TlsOptions::danger_accept_invalid_certs`] is set.

use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::{pem::PemObject, CertificateDer};

use crate::error::{Error, Result};

/// Which certificates to trust.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// Extra CA certificates (PEM) to trust besides the system's roots.
    pub extra_ca_pem: Option<String>,
    /// Accept any server certificate. Insecure: for debugging only.
    pub danger_accept_invalid_certs: bool,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("extra_ca_pem", &self.extra_ca_pem.as_ref().map(|_| "<pem>"))
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .finish()
    }
}

impl TlsOptions {
    /// An error when [`danger_accept_invalid_certs`](Self::danger_accept_invalid_certs) is set
    /// but redis-rs was built without a way to honour it (the `dangerous-insecure-tls` feature).
    pub(crate) fn check_insecure_supported(&self) -> Result<()> {
        if self.danger_accept_invalid_certs && !cfg!(feature = "dangerous-insecure-tls") {
            return Err(Error::Config(
                "danger_accept_invalid_certs is set, but redis-entra was built without its \
                 `dangerous-insecure-tls` feature: turn the feature on, or trust the server's CA \
                 (TlsOptions::with_ca_file) instead"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Trust the system roots plus the CA certificates in `pem` (PEM text).
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when `pem` holds no certificate or one that does not parse.
    pub fn with_ca_pem(pem: impl Into<String>) -> Result<Self> {
        let opts = Self {
            extra_ca_pem: Some(pem.into()),
            danger_accept_invalid_certs: false,
        };
        opts.extra_certs()?;
        Ok(opts)
    }

    /// Accept any server certificate. **Insecure**: anyone on the path can read the tokens; for
    /// debugging only (on redis-rs connections it needs the `dangerous-insecure-tls` feature).
    pub fn dangerous_accept_invalid_certs() -> Self {
        Self {
            extra_ca_pem: None,
            danger_accept_invalid_certs: true,
        }
    }

    /// Trust the system roots plus the CA certificates in the PEM file at `path`.
    pub fn with_ca_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path).map_err(|e| {
            Error::Tls(format!(
                "cannot read the CA file {}: {e}; point it at a PEM file with the CA certificate",
                path.display()
            ))
        })?;
        let opts = Self {
            extra_ca_pem: Some(pem),
            danger_accept_invalid_certs: false,
        };
        opts.extra_certs()?;
        Ok(opts)
    }

    fn extra_certs(&self) -> Result<Vec<CertificateDer<'static>>> {
        let Some(pem) = &self.extra_ca_pem else {
            return Ok(Vec::new());
        };
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls(format!("the extra CA is not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Tls(
                "the extra CA holds no `BEGIN CERTIFICATE` block".into(),
            ));
        }
        Ok(certs)
    }

    /// The system's roots plus the extra CA.
    pub fn root_store(&self) -> Result<rustls::RootCertStore> {
        let mut store = rustls::RootCertStore::empty();
        store.add_parsable_certificates(native_roots().iter().cloned());
        for cert in self.extra_certs()? {
            store
                .add(cert)
                .map_err(|e| Error::Tls(format!("the extra CA cannot be used: {e}")))?;
        }
        Ok(store)
    }

    /// A PEM bundle of every trusted root, for clients that take one (the redis crate replaces
    /// the system store with the bundle it is given). `None` when there is no extra CA, so the
    /// client uses the system store itself.
    ///
    /// The bundle is built once per extra CA and kept (a few hundred KiB with the system's
    /// roots): every connection asks for it, and building it meant reading and parsing the
    /// system's certificate directory each time.
    pub fn pem_bundle(&self) -> Result<Option<Vec<u8>>> {
        let Some(pem) = &self.extra_ca_pem else {
            return Ok(None);
        };
        static BUNDLES: std::sync::Mutex<Vec<(String, Arc<Vec<u8>>)>> =
            std::sync::Mutex::new(Vec::new());
        {
            let bundles = BUNDLES.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, bundle)) = bundles.iter().find(|(p, _)| p == pem) {
                return Ok(Some(bundle.as_ref().clone()));
            }
        }
        let extra = self.extra_certs()?;
        let mut out = String::new();
        for der in native_roots().iter().chain(extra.iter()) {
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            for line in b64.as_bytes().chunks(64) {
                out.push_str(std::str::from_utf8(line).unwrap_or_default());
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        let bundle = out.into_bytes();
        let mut bundles = BUNDLES.lock().unwrap_or_else(|p| p.into_inner());
        // A handful of distinct CAs per process at most; keep the latest few.
        if bundles.len() >= 8 {
            bundles.remove(0);
        }
        bundles.push((pem.clone(), Arc::new(bundle.clone())));
        Ok(Some(bundle))
    }

    /// The same configuration as [`Self::client_config`], built once per process for each
    /// distinct `TlsOptions` and shared: every Redis connection this library opens uses it, so a
    /// connection costs a handshake, not a root store (hundreds of certificates parsed and held
    /// per connection, as the redis crate's own TLS set-up does).
    pub fn shared_client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        type Configs = Vec<(TlsOptions, Arc<rustls::ClientConfig>)>;
        static CONFIGS: std::sync::Mutex<Configs> = std::sync::Mutex::new(Vec::new());
        {
            let configs = CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, config)) = configs.iter().find(|(o, _)| o == self) {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(self.client_config()?);
        let mut configs = CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
        // A handful of distinct trust settings per process at most; keep the latest few.
        if configs.len() >= 8 {
            configs.remove(0);
        }
        configs.push((self.clone(), config.clone()));
        Ok(config)
    }

    /// A rustls client configuration (aws-lc-rs) that trusts [`Self::root_store`].
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let config = if self.danger_accept_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(insecure::AcceptAnything(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.root_store()?)
                .with_no_client_auth()
        };
        Ok(config)
    }
}

/// The system's roots, read once per process (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the platform's
/// store): reading and parsing them took a directory walk and hundreds of PEM decodes, which the
/// soak (`docs/RELIABILITY.md`) found dominating the client's CPU when connections were opened
/// every few seconds.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

mod insecure {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    /// Accepts every certificate: what `danger_accept_invalid_certs` asks for.
    #[derive(Debug)]
    pub(super) struct AcceptAnything(pub(super) Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAnything {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
