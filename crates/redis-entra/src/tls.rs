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
        let native = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(native.certs);
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
    pub fn pem_bundle(&self) -> Result<Option<Vec<u8>>> {
        let extra = self.extra_certs()?;
        if extra.is_empty() {
            return Ok(None);
        }
        let native = rustls_native_certs::load_native_certs();
        let mut out = String::new();
        for der in native.certs.iter().chain(extra.iter()) {
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            for line in b64.as_bytes().chunks(64) {
                out.push_str(std::str::from_utf8(line).unwrap_or_default());
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        Ok(Some(out.into_bytes()))
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
