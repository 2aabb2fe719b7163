//! Identities and keys that outlive one run (`--state DIR`) and the documented well-known
//! identities (`--well-known`), through real emulators: real `redis-server`, real TLS, tokens
//! over HTTPS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use redis::TlsCertificates;
use redis_entra_emulator::directory::REDIS_RESOURCE;
use redis_entra_emulator::state::{files, well_known};
use redis_entra_emulator::{Emulator, EmulatorConfig, Error};
use serde_json::Value;

/// Generous bound on anything the tests wait for.
const WAIT: Duration = Duration::from_secs(15);

async fn start(config: EmulatorConfig) -> Result<Emulator> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(Emulator::start(config).await?)
}

fn with_state(dir: &Path, well_known: bool) -> EmulatorConfig {
    EmulatorConfig {
        state: Some(dir.to_path_buf()),
        well_known,
        ..EmulatorConfig::default()
    }
}

fn https(ca_pem: &str) -> Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(WAIT)
        .build()?)
}

/// The JWKS of `emu`'s tenant, fetched over HTTPS trusting `ca_pem`.
async fn jwks(emu: &Emulator, ca_pem: &str) -> Result<Value> {
    let url = format!(
        "{}/{}/discovery/v2.0/keys",
        emu.authority(),
        emu.tenant_id()
    );
    let body = https(ca_pem)?.get(url).send().await?.text().await?;
    Ok(serde_json::from_str(&body)?)
}

/// A token from `emu`'s token endpoint for `client_id` and `secret` (client credentials).
async fn client_credentials(emu: &Emulator, client_id: &str, secret: &str) -> Result<String> {
    let url = format!("{}/{}/oauth2/v2.0/token", emu.authority(), emu.tenant_id());
    let scope = format!("{REDIS_RESOURCE}/.default");
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope.as_str()),
        ])
        .finish();
    let body = https(emu.ca_pem())?
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?
        .text()
        .await?;
    let reply: Value = serde_json::from_str(&body)?;
    reply["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no access token in {reply}"))
}

/// `AUTH oid token` on `emu`'s gateway, trusting `ca_pem`, then a `SET` and a `GET`.
async fn auth_and_use(emu: &Emulator, ca_pem: &str, oid: &str, token: &str) -> Result<()> {
    let url = format!("rediss://localhost:{}/0", emu.gateway_addr().port());
    let client = redis::Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.as_bytes().to_vec()),
        },
    )?;
    let mut conn = tokio::time::timeout(WAIT, client.get_multiplexed_async_connection())
        .await
        .context("connecting")??;
    let auth: String = redis::cmd("AUTH")
        .arg(oid)
        .arg(token)
        .query_async(&mut conn)
        .await?;
    assert_eq!(auth, "OK");
    let _: () = redis::cmd("SET")
        .arg("state-test")
        .arg(oid)
        .query_async(&mut conn)
        .await?;
    let got: String = redis::cmd("GET")
        .arg("state-test")
        .query_async(&mut conn)
        .await?;
    assert_eq!(got, oid);
    Ok(())
}

/// What a run's identities are: every principal's ids and secret, the user, the access keys.
fn identities(emu: &Emulator) -> Vec<String> {
    let mut all: Vec<String> = emu
        .directory()
        .principals()
        .iter()
        .map(|p| {
            format!(
                "{} {:?} {} {} {:?} {:?}",
                p.display_name, p.kind, p.client_id, p.object_id, p.secret, p.resource_id
            )
        })
        .collect();
    let user = emu.user();
    all.push(format!(
        "{} {} {}",
        user.username, user.object_id, user.password
    ));
    all.push(format!("{} {}", emu.primary_key(), emu.secondary_key()));
    all.push(emu.app_certificate().thumbprint_sha256());
    all
}

#[cfg(unix)]
fn mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[tokio::test]
async fn a_state_folder_keeps_the_ca_the_signing_key_and_the_identities() -> Result<()> {
    let parent = tempfile::tempdir()?;
    let dir = parent.path().join("state");
    let first = start(with_state(&dir, false)).await?;
    let ca = first.ca_pem().to_string();
    let keys = jwks(&first, &ca).await?;
    let tenant = first.tenant_id().to_string();
    let ids = identities(&first);
    let sp = first.service_principal().clone();
    let secret = sp
        .secret
        .clone()
        .context("the service principal has a secret")?;
    let token = client_credentials(&first, &sp.client_id, &secret).await?;
    let authority_port: u16 = first
        .authority()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("the authority's port")?;
    first.shutdown().await;

    assert_eq!(std::fs::read_to_string(files::ca_file(&dir))?, ca);
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir)?, 0o700, "the folder");
        for file in [
            files::STATE_FILE,
            files::CA_KEY_FILE,
            files::SIGNING_KEY_FILE,
            files::APP_CERTIFICATE_FILE,
        ] {
            assert_eq!(mode(&dir.join(file))?, 0o600, "{file}");
        }
        assert_eq!(
            mode(&dir.join(files::CA_CERT_FILE))?,
            0o644,
            "the CA certificate"
        );
    }

    // The same authority port, so that the JWKS' "issuer" (which names it) is the same too.
    let second = start(EmulatorConfig {
        authority_port,
        ..with_state(&dir, false)
    })
    .await?;
    assert_eq!(second.ca_pem(), ca, "the CA");
    assert_eq!(jwks(&second, &ca).await?, keys, "the JWKS");
    assert_eq!(second.tenant_id(), tenant);
    assert_eq!(identities(&second), ids);
    // A token from the first run, on the second run's gateway, trusting the first run's CA.
    auth_and_use(&second, &ca, &sp.object_id, &token).await?;
    second.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn without_a_state_folder_every_start_is_new() -> Result<()> {
    let first = start(EmulatorConfig::default()).await?;
    let (ca, tenant, kid) = (
        first.ca_pem().to_string(),
        first.tenant_id().to_string(),
        first.issuer().kid().to_string(),
    );
    first.shutdown().await;
    let second = start(EmulatorConfig::default()).await?;
    assert_ne!(second.ca_pem(), ca);
    assert_ne!(second.tenant_id(), tenant);
    assert_ne!(second.issuer().kid(), kid);
    second.shutdown().await;
    Ok(())
}

/// The well-known values as docs/EMULATOR.md's table lists them: constant name → value.
fn documented() -> Result<Vec<(String, String)>> {
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/EMULATOR.md");
    let text = std::fs::read_to_string(&doc).with_context(|| doc.display().to_string())?;
    let rows: Vec<(String, String)> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            let value = cells.get(3)?.strip_prefix('`')?.strip_suffix('`')?;
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c == '_')
                .then(|| (name.to_string(), value.to_string()))
        })
        .collect();
    if rows.len() < 10 {
        bail!(
            "docs/EMULATOR.md's well-known table has {} rows",
            rows.len()
        );
    }
    Ok(rows)
}

#[tokio::test]
async fn the_well_known_identities_are_the_documented_ones_and_work() -> Result<()> {
    let emu = start(EmulatorConfig {
        well_known: true,
        ..EmulatorConfig::default()
    })
    .await?;
    let sp = emu.service_principal();
    let user = emu.user();
    let actual = [
        ("TENANT_ID", emu.tenant_id().to_string()),
        ("SERVICE_PRINCIPAL_CLIENT_ID", sp.client_id.clone()),
        ("SERVICE_PRINCIPAL_OBJECT_ID", sp.object_id.clone()),
        (
            "SERVICE_PRINCIPAL_SECRET",
            sp.secret.clone().unwrap_or_default(),
        ),
        (
            "MANAGED_IDENTITY_CLIENT_ID",
            emu.managed_identity().client_id.clone(),
        ),
        (
            "MANAGED_IDENTITY_OBJECT_ID",
            emu.managed_identity().object_id.clone(),
        ),
        (
            "USER_ASSIGNED_IDENTITY_CLIENT_ID",
            emu.user_assigned_identity().client_id.clone(),
        ),
        (
            "USER_ASSIGNED_IDENTITY_OBJECT_ID",
            emu.user_assigned_identity().object_id.clone(),
        ),
        (
            "CERTIFICATE_APP_CLIENT_ID",
            emu.certificate_app().client_id.clone(),
        ),
        (
            "CERTIFICATE_APP_OBJECT_ID",
            emu.certificate_app().object_id.clone(),
        ),
        (
            "WORKLOAD_APP_CLIENT_ID",
            emu.workload_app().client_id.clone(),
        ),
        (
            "WORKLOAD_APP_OBJECT_ID",
            emu.workload_app().object_id.clone(),
        ),
        ("USER_NAME", user.username.clone()),
        ("USER_OBJECT_ID", user.object_id.clone()),
        ("USER_PASSWORD", user.password.clone()),
        ("PRIMARY_KEY", emu.primary_key()),
        ("SECONDARY_KEY", emu.secondary_key()),
    ];
    let documented = documented()?;
    for (name, value) in &actual {
        let doc = documented
            .iter()
            .find(|(n, _)| n == name)
            .with_context(|| format!("{name} is not in docs/EMULATOR.md's table"))?;
        assert_eq!(&doc.1, value, "{name}: the docs and the emulator differ");
    }
    assert_eq!(emu.tenant_id(), well_known::TENANT_ID);
    assert_eq!(sp.client_id, well_known::SERVICE_PRINCIPAL_CLIENT_ID);
    assert_eq!(
        sp.secret.as_deref(),
        Some(well_known::SERVICE_PRINCIPAL_SECRET)
    );
    let env: Vec<(String, String)> = emu.env();
    let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(var("AZURE_TENANT_ID"), Some(well_known::TENANT_ID));
    assert_eq!(
        var("AZURE_CLIENT_SECRET"),
        Some(well_known::SERVICE_PRINCIPAL_SECRET)
    );

    // The constants alone are enough to get in: a test config needs nothing from this run.
    let token = client_credentials(
        &emu,
        well_known::SERVICE_PRINCIPAL_CLIENT_ID,
        well_known::SERVICE_PRINCIPAL_SECRET,
    )
    .await?;
    auth_and_use(
        &emu,
        emu.ca_pem(),
        well_known::SERVICE_PRINCIPAL_OBJECT_ID,
        &token,
    )
    .await?;
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn well_known_with_a_state_folder_keeps_the_keys_and_refuses_mixing() -> Result<()> {
    let parent = tempfile::tempdir()?;
    let dir = parent.path().join("state");
    let first = start(with_state(&dir, true)).await?;
    let (ca, kid) = (first.ca_pem().to_string(), first.issuer().kid().to_string());
    assert_eq!(first.tenant_id(), well_known::TENANT_ID);
    first.shutdown().await;
    let second = start(with_state(&dir, true)).await?;
    assert_eq!(second.ca_pem(), ca);
    assert_eq!(second.issuer().kid(), kid);
    assert_eq!(
        second.service_principal().client_id,
        well_known::SERVICE_PRINCIPAL_CLIENT_ID
    );
    second.shutdown().await;

    let err = start_error(with_state(&dir, false)).await?;
    let text = err.to_string();
    assert!(
        text.contains(&dir.join(files::STATE_FILE).display().to_string())
            && text.contains("--well-known"),
        "{text}"
    );
    Ok(())
}

/// Starts an emulator expecting it to fail; the error.
async fn start_error(config: EmulatorConfig) -> Result<Error> {
    match start(config).await {
        Ok(emu) => {
            emu.shutdown().await;
            bail!("the emulator started")
        }
        Err(e) => e
            .downcast::<Error>()
            .map_err(|e| anyhow!("not an emulator error: {e}")),
    }
}

/// Makes a state folder in `parent` (without starting an emulator), then corrupts `file` with
/// `contents`; the error a start gives.
async fn corrupted(
    parent: &Path,
    name: &str,
    file: &str,
    contents: &str,
) -> Result<(PathBuf, Error)> {
    let dir = parent.join(name);
    files::open(&dir, false)?;
    std::fs::write(dir.join(file), contents)?;
    Ok((dir.join(file), start_error(with_state(&dir, false)).await?))
}

#[tokio::test]
async fn a_corrupt_or_foreign_state_folder_is_an_error_naming_the_file() -> Result<()> {
    let parent = tempfile::tempdir()?;
    let cases = [
        ("json", files::STATE_FILE, "{ not json", "delete the folder"),
        (
            "version",
            files::STATE_FILE,
            r#"{"version": 2}"#,
            "format version 2",
        ),
        (
            "no-version",
            files::STATE_FILE,
            "{}",
            "no format \"version\"",
        ),
        (
            "signing",
            files::SIGNING_KEY_FILE,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "delete the folder",
        ),
        (
            "ca-key",
            files::CA_KEY_FILE,
            "garbage",
            "holds no PRIVATE KEY",
        ),
        ("ca", files::CA_CERT_FILE, "", "holds no CERTIFICATE"),
    ];
    for (name, file, contents, expected) in cases {
        let (path, err) = corrupted(parent.path(), name, file, contents).await?;
        let text = err.to_string();
        assert!(
            matches!(err, Error::State { .. })
                && text.contains(&path.display().to_string())
                && text.contains(expected),
            "{name}: {text}"
        );
    }

    // A CA key that is not the CA certificate's.
    let dir = parent.path().join("swapped");
    let other = parent.path().join("other");
    files::open(&dir, false)?;
    files::open(&other, false)?;
    std::fs::copy(other.join(files::CA_KEY_FILE), dir.join(files::CA_KEY_FILE))?;
    let text = start_error(with_state(&dir, false)).await?.to_string();
    assert!(
        text.contains(&dir.join(files::CA_KEY_FILE).display().to_string())
            && text.contains("do not belong together"),
        "{text}"
    );

    // A folder with files but no state.json is not taken over.
    let foreign = parent.path().join("foreign");
    std::fs::create_dir(&foreign)?;
    std::fs::write(foreign.join("notes.txt"), "mine")?;
    let text = start_error(with_state(&foreign, false)).await?.to_string();
    assert!(
        text.contains(&foreign.display().to_string()) && text.contains("no state.json"),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(&foreign)?.count(), 1, "nothing written");
    Ok(())
}
