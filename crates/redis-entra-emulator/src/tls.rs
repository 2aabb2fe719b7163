//! The emulator's own PKI: a CA generated at start (never written to the repository) and a
//! server certificate for `localhost` and `127.0.0.1`, shared by the fake Entra ID's HTTPS
//! endpoints and the Redis gateway.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

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
        let pki = |e: rcgen::Error| Error::Pki(e.to_string());
        let ca_key = KeyPair::generate().map_err(pki)?;
        let mut ca_params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "redis-entra emulator CA");
        dn.push(DnType::OrganizationName, "redis-entra emulator");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki)?;
        let issuer = Issuer::new(ca_params, ca_key);

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

        let chain: Vec<CertificateDer<'static>> =
            vec![server_cert.der().clone(), ca_cert.der().clone()];
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
            ca_pem: ca_cert.pem(),
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
