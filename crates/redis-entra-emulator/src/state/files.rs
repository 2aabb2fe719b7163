//! The state folder (`--state DIR`): its files, and reading and writing them.
//!
//! | file | holds | mode |
//! | --- | --- | --- |
//! | `state.json` | format version, whether the identities are the well-known ones, the signing key's `kid`, the [`Identities`] (ids and secrets) | 0600 |
//! | `ca.pem` | the CA certificate: what clients trust | 0644 |
//! | `ca-key.pem` | the CA's private key | 0600 |
//! | `signing-key.pem` | the token signing key (RSA) | 0600 |
//! | `app-certificate.pem` | the certificate application's certificate and key | 0600 |
//!
//! The folder is made 0700. Each file is written atomically (a temporary file in the folder,
//! then a rename), `state.json` last: a folder with files but no `state.json` is a first start
//! that did not finish, and is refused rather than half read. A file that cannot be read or
//! parsed is an [`Error::State`] naming it; nothing is ever regenerated over a kept file.
//! One emulator at a time should make a new folder; any number may then read it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AppCertificatePem, Identities, Keys};
use crate::signing::SigningKey;
use crate::tls::CaKeys;
use crate::{env_file, Error};

/// The format version this emulator writes and reads. A folder of another version is refused
/// with an error saying so.
pub const STATE_VERSION: u64 = 1;

/// The state file's name.
pub const STATE_FILE: &str = "state.json";
/// The CA certificate's file name (PEM; trust this one).
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The token signing key's file name.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";
/// The certificate application's certificate and key.
pub const APP_CERTIFICATE_FILE: &str = "app-certificate.pem";

/// What to do about a state folder the emulator cannot use.
const START_OVER: &str = "delete the folder (or give another --state) to start over with new \
                          identities and keys; clients then need the new CA and secrets";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u64,
    well_known: bool,
    signing_kid: String,
    identities: Identities,
}

fn state_error(path: &Path, problem: impl Into<String>) -> Error {
    Error::State {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Reads the identities and keys kept in `dir`; when `dir` is missing or empty, makes them
/// (the well-known identities when `well_known`, new ones otherwise, new keys) and writes them
/// there first.
pub fn open(dir: &Path, well_known: bool) -> Result<(Identities, Keys), Error> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return create(dir, well_known),
        Err(e) => return Err(state_error(dir, format!("cannot read the folder: {e}"))),
        Ok(meta) if !meta.is_dir() => {
            return Err(state_error(
                dir,
                "is not a folder: give --state a folder (missing or empty for a first start)",
            ))
        }
        Ok(_) => {}
    }
    if !dir.join(STATE_FILE).exists() {
        let mut entries = std::fs::read_dir(dir)
            .map_err(|e| state_error(dir, format!("cannot list the folder: {e}")))?;
        if entries.next().is_none() {
            return create(dir, well_known);
        }
        return Err(state_error(
            dir,
            format!(
                "the folder holds files but no {STATE_FILE}: it is not an emulator state folder, \
                 or its first start did not finish; give a missing or empty folder, or {START_OVER}"
            ),
        ));
    }
    load(dir, well_known)
}

fn load(dir: &Path, well_known: bool) -> Result<(Identities, Keys), Error> {
    let path = dir.join(STATE_FILE);
    let text = read(&path)?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| state_error(&path, format!("is not JSON ({e}): {START_OVER}")))?;
    match value.get("version").and_then(Value::as_u64) {
        Some(STATE_VERSION) => {}
        Some(other) => {
            return Err(state_error(
                &path,
                format!(
                    "is in format version {other}, and this emulator reads version \
                     {STATE_VERSION}: run the redis-entra that wrote it, or {START_OVER}"
                ),
            ))
        }
        None => {
            return Err(state_error(
                &path,
                format!("has no format \"version\": {START_OVER}"),
            ))
        }
    }
    let state: StateFile = serde_json::from_value(value).map_err(|e| {
        state_error(
            &path,
            format!("is not a valid state file ({e}): {START_OVER}"),
        )
    })?;
    state
        .identities
        .check()
        .map_err(|problem| state_error(&path, format!("{problem}: {START_OVER}")))?;
    if state.well_known != well_known {
        let (made, now) = if state.well_known {
            ("with --well-known", "without it")
        } else {
            ("without --well-known", "with it")
        };
        return Err(state_error(
            &path,
            format!(
                "the folder was made {made} and the emulator was started {now}: start it as \
                 the folder was made, or give another --state"
            ),
        ));
    }
    let keys = Keys {
        ca: CaKeys {
            cert_pem: read_pem(&dir.join(CA_CERT_FILE), "CERTIFICATE")?,
            key_pem: read_pem(&dir.join(CA_KEY_FILE), "PRIVATE KEY")?,
        },
        signing: SigningKey {
            pem: read_pem(&dir.join(SIGNING_KEY_FILE), "PRIVATE KEY")?,
            kid: state.signing_kid,
        },
        app_certificate: AppCertificatePem(read_pem(
            &dir.join(APP_CERTIFICATE_FILE),
            "PRIVATE KEY",
        )?),
    };
    Ok((state.identities, keys))
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| state_error(path, format!("cannot be read ({e}): {START_OVER}")))
}

/// Reads a PEM file, checking that it holds a `label` block (parsing happens when it is used).
fn read_pem(path: &Path, label: &str) -> Result<String, Error> {
    let text = read(path)?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    match text.find(&begin) {
        Some(at) if text[at..].contains(&end) => Ok(text),
        _ => Err(state_error(
            path,
            format!("holds no {label} (PEM): {START_OVER}"),
        )),
    }
}

fn create(dir: &Path, well_known: bool) -> Result<(Identities, Keys), Error> {
    make_private_dir(dir)?;
    let identities = if well_known {
        Identities::well_known()
    } else {
        Identities::generate()
    };
    let keys = Keys::generate()?;
    write(&dir.join(CA_KEY_FILE), &keys.ca.key_pem, false)?;
    write(&dir.join(SIGNING_KEY_FILE), &keys.signing.pem, false)?;
    write(
        &dir.join(APP_CERTIFICATE_FILE),
        &keys.app_certificate.0,
        false,
    )?;
    write(&dir.join(CA_CERT_FILE), &keys.ca.cert_pem, true)?;
    let state = StateFile {
        version: STATE_VERSION,
        well_known,
        signing_kid: keys.signing.kid.clone(),
        identities: identities.clone(),
    };
    let text = serde_json::to_string_pretty(&state)
        .map_err(|e| state_error(&dir.join(STATE_FILE), format!("cannot be written: {e}")))?;
    write(&dir.join(STATE_FILE), &format!("{text}\n"), false)?;
    tracing::info!(dir = %dir.display(), well_known, "made a new emulator state folder");
    Ok((identities, keys))
}

/// Writes `contents` atomically, readable by the owner only (`public`: by everyone).
fn write(path: &Path, contents: &str, public: bool) -> Result<(), Error> {
    env_file::write_atomic(path, contents)
        .map_err(|e| state_error(path, format!("cannot be written: {e}")))?;
    if public {
        set_mode(path, 0o644)?;
    }
    Ok(())
}

fn make_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| state_error(dir, format!("cannot be made: {e}")))?;
    set_mode(dir, 0o700)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| state_error(path, format!("cannot set its permissions: {e}")))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// The CA certificate file of the state folder `dir`.
pub fn ca_file(dir: &Path) -> PathBuf {
    dir.join(CA_CERT_FILE)
}
