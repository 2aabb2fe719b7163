//! Certificates for "an application with a certificate": a fresh RSA key and self-signed
//! certificate, the files a client needs (PEM with certificate and key; PKCS#12 with a
//! password), and the public part the directory keeps.

use std::path::{Path, PathBuf};

use crate::directory::UploadedCertificate;
use crate::Error;

/// A generated client certificate. `Debug` shows the files and thumbprint, never the key.
pub struct AppCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The certificate, DER.
    pub certificate_der: Vec<u8>,
    /// The private key, PKCS#8 PEM (a secret).
    key_pem: String,
    /// The private key, PKCS#8 DER (a secret).
    key_der: Vec<u8>,
    /// What the directory keeps: thumbprints and public key.
    pub uploaded: UploadedCertificate,
}

impl std::fmt::Debug for AppCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCertificate")
            .field("sha256", &self.thumbprint_sha256())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Where [`AppCertificate::write_files`] wrote the certificate. `Debug` hides the password.
#[derive(Clone)]
pub struct CertificateFiles {
    /// The certificate followed by its private key (PEM), as `AZURE_CLIENT_CERTIFICATE_PATH`
    /// takes it.
    pub pem: PathBuf,
    /// The same as PKCS#12, protected by [`CertificateFiles::pkcs12_password`].
    pub pkcs12: PathBuf,
    /// The certificate followed by its private key encrypted with the same password (PEM
    /// `ENCRYPTED PRIVATE KEY`, PKCS#8 PBES2).
    pub encrypted_pem: PathBuf,
    /// The password of the PKCS#12 file and of the encrypted PEM key (a secret of the
    /// emulator's own making).
    pub pkcs12_password: String,
}

impl std::fmt::Debug for CertificateFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateFiles")
            .field("pem", &self.pem)
            .field("pkcs12", &self.pkcs12)
            .field("encrypted_pem", &self.encrypted_pem)
            .field("pkcs12_password", &"<redacted>")
            .finish()
    }
}

impl AppCertificate {
    /// A fresh 2048-bit RSA key and a self-signed certificate for `subject`.
    pub fn generate(subject: &str) -> Result<Self, Error> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(|e| Error::Pki(format!("RSA key generation: {e}")))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| Error::Pki(format!("certificate parameters: {e}")))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, subject);
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::Pki(format!("self-signing the client certificate: {e}")))?;
        Ok(Self::assemble(cert.pem(), cert.der().to_vec(), &key))
    }

    /// The certificate and RSA key in `text` (PEM, as [`Self::pem_with_key`] writes them,
    /// perhaps in an earlier run). The key must be the certificate's.
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let certificate_pem = pem_block(text, "CERTIFICATE")
            .ok_or_else(|| Error::Pki("no CERTIFICATE block in the PEM".into()))?;
        let key_pem = pem_block(text, "PRIVATE KEY")
            .ok_or_else(|| Error::Pki("no PRIVATE KEY block in the PEM".into()))?;
        let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|e| Error::Pki(format!("reading the client certificate: {e}")))?;
        let key = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| Error::Pki(format!("reading the client certificate's key: {e}")))?;
        let public = key.public_key_raw();
        if !der.windows(public.len()).any(|w| w == public) {
            return Err(Error::Pki(
                "the private key is not the key of the client certificate".into(),
            ));
        }
        Ok(Self::assemble(certificate_pem, der.to_vec(), &key))
    }

    fn assemble(certificate_pem: String, certificate_der: Vec<u8>, key: &rcgen::KeyPair) -> Self {
        let uploaded = UploadedCertificate::new(&certificate_der, key.public_key_raw().to_vec());
        Self {
            certificate_pem,
            certificate_der,
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            uploaded,
        }
    }

    /// The SHA-256 thumbprint in hex, as the portal shows it.
    pub fn thumbprint_sha256(&self) -> String {
        self.uploaded
            .sha256
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    /// The private key, PKCS#8 PEM (a secret: for clients and tests that sign assertions
    /// themselves).
    pub fn private_key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate and private key as one PEM text (a secret).
    pub fn pem_with_key(&self) -> String {
        format!("{}{}", self.certificate_pem, self.key_pem)
    }

    /// The private key encrypted with `password` (PKCS#8 PBES2, PEM `ENCRYPTED PRIVATE KEY`).
    pub fn encrypted_key_pem(&self, password: &str) -> Result<String, Error> {
        use base64::Engine;
        let info = pkcs8::PrivateKeyInfoRef::try_from(self.key_der.as_slice())
            .map_err(|e| Error::Pki(format!("reading the private key: {e}")))?;
        // PBKDF2-SHA256 (2048 rounds, OpenSSL's default) and AES-256-CBC: what every SDK's
        // PEM reader understands, and quick to derive in a debug build.
        let params = pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(
            2048,
            &rand::random::<[u8; 16]>(),
            rand::random::<[u8; 16]>(),
        )
        .map_err(|e| Error::Pki(format!("PBES2 parameters: {e}")))?;
        let encrypted = info
            .encrypt_with_params(params, password)
            .map_err(|e| Error::Pki(format!("encrypting the private key: {e}")))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(encrypted.as_bytes());
        let mut out = String::from("-----BEGIN ENCRYPTED PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END ENCRYPTED PRIVATE KEY-----\n");
        Ok(out)
    }

    /// The certificate and key as PKCS#12 protected by `password`.
    pub fn pkcs12(&self, password: &str) -> Result<Vec<u8>, Error> {
        use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
        let cert = Certificate::from_der(&self.certificate_der)
            .map_err(|e| Error::Pki(format!("PKCS#12 certificate: {e}")))?;
        let key = PrivateKey::from_der(&self.key_der)
            .map_err(|e| Error::Pki(format!("PKCS#12 key: {e}")))?;
        let local_key_id: Vec<u8> = self.uploaded.sha1.clone();
        let chain = PrivateKeyChain::new(local_key_id, key, [cert]);
        let mut store = KeyStore::new();
        store.add_entry("redis-entra-app", KeyStoreEntry::PrivateKeyChain(chain));
        store
            .writer(password)
            .write()
            .map_err(|e| Error::Pki(format!("writing PKCS#12: {e}")))
    }

    /// Writes `client-certificate.pem` and `client-certificate.pfx` (password-protected) into
    /// `dir`, readable by the owner only.
    pub fn write_files(&self, dir: &Path) -> Result<CertificateFiles, Error> {
        let pem = dir.join("client-certificate.pem");
        crate::env_file::write_atomic(&pem, &self.pem_with_key())?;
        let pkcs12_password = uuid::Uuid::new_v4().simple().to_string();
        let pkcs12 = dir.join("client-certificate.pfx");
        let bytes = self.pkcs12(&pkcs12_password)?;
        std::fs::write(&pkcs12, bytes).map_err(|e| Error::io("writing the PKCS#12 file", e))?;
        let encrypted_pem = dir.join("client-certificate-encrypted.pem");
        let encrypted = format!(
            "{}{}",
            self.certificate_pem,
            self.encrypted_key_pem(&pkcs12_password)?
        );
        crate::env_file::write_atomic(&encrypted_pem, &encrypted)?;
        Ok(CertificateFiles {
            pem,
            pkcs12,
            encrypted_pem,
            pkcs12_password,
        })
    }
}

/// The first `-----BEGIN {label}-----` … `-----END {label}-----` block of `text`, with a final
/// newline.
fn pem_block(text: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let len = text[start..].find(&end)? + end.len();
    Some(format!("{}\n", &text[start..start + len]))
}
