//! The emulator's own PKI: a CA (generated at start, or kept in a
//! [state folder](crate::state) across restarts; never written to the repository) and a server
//! certificate for `localhost` and `127.0.0.1`, issued at every start, shared by the fake Entra
//! ID's HTTPS endpoints and the Redis gateway.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::Error;

/// A certificate authority and the server certificate it issued for the emulator's endpoints.
pub struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Pki {
    /// Generates a fresh CA and a server certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn generate() -> Result<Self, Error> {
        Self::generate_for(&[])
    }

    /// As [`generate`](Self::generate), the server certificate also naming each of `names` (a
    /// host name, or an IP address).
    pub fn generate_for(names: &[String]) -> Result<Self, Error> {
        let ca = CaKeys::generate()?;
        Self::with_ca(&ca, names)
    }

    /// A server certificate for `localhost`, `127.0.0.1`, `::1` and each of `names`, issued
    /// now by the CA `ca` (one [`CaKeys::generate`] made, perhaps in an earlier run). Checks
    /// that the certificate chains to `ca`'s certificate, so a CA key that does not belong to
    /// the CA certificate is an error, not a server clients cannot trust.
    pub fn with_ca(ca: &CaKeys, names: &[String]) -> Result<Self, Error> {
        let pki = |e: rcgen::Error| Error::Pki(e.to_string());
        let ca_key = KeyPair::from_pem(&ca.key_pem)
            .map_err(|e| Error::Pki(format!("reading the CA key: {e}")))?;
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
            .map_err(|e| Error::Pki(format!("reading the CA certificate: {e}")))?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let server_key = KeyPair::generate().map_err(pki)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(pki)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        for name in names.iter().filter(|n| n.as_str() != "localhost") {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    SanType::DnsName(name.clone().try_into().map_err(|e: rcgen::Error| {
                        Error::Config(format!("{name:?} is not a host name: {e}"))
                    })?)
                }
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        let server_cert = params.signed_by(&server_key, &issuer).map_err(pki)?;

        check_chain(&ca_der, server_cert.der())?;
        let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone(), ca_der];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Pki(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| Error::Pki(e.to_string()))?;
        server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem: ca.cert_pem.clone(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            server_config: Arc::new(server_config),
        })
    }

    /// The CA certificate in PEM form: what a client must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate (for `localhost`) in PEM form, without the CA.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The server certificate's private key (PKCS#8 PEM), held in memory only: for a process
    /// that must serve the same certificate (the gateway benchmark's haproxy and TLS
    /// `redis-server`), which then writes it to a private temporary file.
    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    /// The rustls server configuration for every TLS listener of the emulator.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config.clone()
    }
}

/// A CA's certificate and private key, both PEM. `Debug` never shows the key.
#[derive(Clone)]
pub struct CaKeys {
    /// The CA certificate (what clients trust).
    pub cert_pem: String,
    /// The CA's private key, PKCS#8 PEM (a secret).
    pub key_pem: String,
}

impl std::fmt::Debug for CaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKeys")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CaKeys {
    /// A fresh CA: a P-256 key and a self-signed certificate `redis-entra emulator CA`.
    pub fn generate() -> Result<Self, Error> {
        let pki = |e: rcgen::Error| Error::Pki(e.to_string());
        let key = KeyPair::generate().map_err(pki)?;
        let cert = ca_params().self_signed(&key).map_err(pki)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The CA's parameters: the same at every start, so that a kept CA key issues server
/// certificates naming the kept CA certificate as their issuer.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "redis-entra emulator CA");
    dn.push(DnType::OrganizationName, "redis-entra emulator");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Checks that `leaf` verifies for `localhost` against the root `ca`, as a client would.
fn check_chain(ca: &CertificateDer<'static>, leaf: &CertificateDer<'static>) -> Result<(), Error> {
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| Error::Pki(format!("the CA certificate is not usable as a root: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::Pki(format!("building a verifier for the CA: {e}")))?;
    verifier
        .verify_server_cert(
            leaf,
            &[],
            &ServerName::try_from("localhost").map_err(|e| Error::Pki(e.to_string()))?,
            &[],
            UnixTime::now(),
        )
        .map_err(|e| {
            Error::Pki(format!(
                "the server certificate the CA key issued does not verify against the CA \
                 certificate ({e}): the CA key and certificate do not belong together"
            ))
        })?;
    Ok(())
}
