//! Whom the key fetches trust: the system's roots plus the CAs of the PEM file that
//! `SSL_CERT_FILE` names in the server's environment (the emulator's CA, a proxy's).

use std::sync::Arc;

/// The Debian/Ubuntu system bundle, read besides `SSL_CERT_FILE` (which makes
/// `rustls-native-certs` skip the platform's store).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn pem_certs(path: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .filter_map(Result::ok)
        .collect()
}

/// A TLS client configuration trusting the system's roots and `SSL_CERT_FILE`'s; also says how
/// many roots it holds (for the log).
pub fn client_config() -> Result<(rustls::ClientConfig, usize), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots.add_parsable_certificates(pem_certs(SYSTEM_BUNDLE));
    if let Ok(path) = std::env::var("SSL_CERT_FILE") {
        roots.add_parsable_certificates(pem_certs(&path));
    }
    let count = roots.len();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((config, count))
}
