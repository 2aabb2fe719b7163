//! The token endpoint's client assertions as Entra checks them (certificate credentials in
//! every encoding clients use, each failure with its AADSTS code), the cluster OIDC issuer's
//! discovery documents, the Azure Arc challenge, and status faults for retry tests.

use std::time::Duration;

use anyhow::Result;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use redis_entra_emulator::faults::IdentityFault;
use redis_entra_emulator::{Emulator, EmulatorConfig};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn start() -> Result<Emulator> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(Emulator::start(EmulatorConfig::default()).await?)
}

fn https(emu: &Emulator) -> Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes())?;
    Ok(reqwest::Client::builder().tls_certs_only([ca]).build()?)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token_url(emu: &Emulator) -> String {
    format!("{}/{}/oauth2/v2.0/token", emu.authority(), emu.tenant_id())
}

/// Valid certificate-assertion claims for the emulator's certificate app.
fn claims(emu: &Emulator) -> Value {
    let id = &emu.certificate_app().client_id;
    json!({
        "aud": token_url(emu),
        "iss": id,
        "sub": id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now(),
        "exp": now() + 600,
    })
}

fn sign(emu: &Emulator, header: &Header, claims: &Value) -> Result<String> {
    let key = EncodingKey::from_rsa_pem(emu.app_certificate().private_key_pem().as_bytes())?;
    Ok(jsonwebtoken::encode(header, claims, &key)?)
}

/// A header with the SHA-1 (`x5t`) or SHA-256 (`x5t#S256`) thumbprint in `engine`'s encoding.
fn header(
    emu: &Emulator,
    alg: Algorithm,
    sha256: bool,
    engine: &base64::engine::GeneralPurpose,
) -> Header {
    let cert = &emu.app_certificate().uploaded;
    let mut h = Header::new(alg);
    h.typ = Some("JWT".into());
    if sha256 {
        h.x5t_s256 = Some(engine.encode(&cert.sha256));
    } else {
        h.x5t = Some(engine.encode(&cert.sha1));
    }
    h
}

/// POSTs the assertion; returns the status and JSON body.
async fn exchange(emu: &Emulator, assertion: &str) -> Result<(u16, Value)> {
    let client_id = emu.certificate_app().client_id.clone();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("scope", "https://redis.azure.com/.default"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let reply = https(emu)?
        .post(token_url(emu))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let status = reply.status().as_u16();
    Ok((status, serde_json::from_slice(&reply.bytes().await?)?))
}

async fn json_body(reply: reqwest::Response) -> Result<Value> {
    Ok(serde_json::from_slice(&reply.bytes().await?)?)
}

fn code(body: &Value) -> u64 {
    body["error_codes"][0].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn certificate_assertions_in_every_client_encoding() -> Result<()> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let emu = start().await?;
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        for sha256 in [false, true] {
            for engine in [&URL_SAFE_NO_PAD, &STANDARD] {
                let assertion = sign(&emu, &header(&emu, alg, sha256, engine), &claims(&emu))?;
                let (status, body) = exchange(&emu, &assertion).await?;
                assert_eq!(status, 200, "{alg:?} sha256={sha256}: {body}");
                assert!(body["access_token"].is_string());
            }
        }
    }
    // The legacy audiences.
    let base = format!("{}/{}", emu.authority(), emu.tenant_id());
    for aud in [format!("{base}/oauth2/token"), format!("{base}/v2.0")] {
        let mut c = claims(&emu);
        c["aud"] = json!(aud);
        let assertion = sign(&emu, &header(&emu, Algorithm::RS256, false, &STANDARD), &c)?;
        let (status, body) = exchange(&emu, &assertion).await?;
        assert_eq!(status, 200, "aud {aud}: {body}");
    }
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn certificate_assertion_failures_carry_entra_codes() -> Result<()> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let emu = start().await?;
    let h = header(&emu, Algorithm::PS256, true, &URL_SAFE_NO_PAD);
    let cases: Vec<(&str, Value, u64)> = vec![
        (
            "expired",
            {
                let mut c = claims(&emu);
                c["exp"] = json!(now() - 60);
                c
            },
            700024,
        ),
        (
            "no exp",
            {
                let mut c = claims(&emu);
                c.as_object_mut().map(|o| o.remove("exp"));
                c
            },
            700024,
        ),
        (
            "wrong audience",
            {
                let mut c = claims(&emu);
                c["aud"] = json!("https://login.microsoftonline.com/x/oauth2/v2.0/token");
                c
            },
            700023,
        ),
        (
            "sub is not the client",
            {
                let mut c = claims(&emu);
                c["sub"] = json!("someone-else");
                c
            },
            700021,
        ),
        (
            "no jti",
            {
                let mut c = claims(&emu);
                c.as_object_mut().map(|o| o.remove("jti"));
                c
            },
            90014,
        ),
    ];
    for (what, c, expected) in cases {
        let (status, body) = exchange(&emu, &sign(&emu, &h, &c)?).await?;
        assert_eq!(code(&body), expected, "{what}: {status} {body}");
        let text = body["error_description"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(&format!("AADSTS{expected}:")),
            "{what}: {text}"
        );
    }

    // A tampered signature.
    let good = sign(&emu, &h, &claims(&emu))?;
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig)?;
    sig[0] ^= 1;
    let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
    let (status, body) = exchange(&emu, &forged).await?;
    assert_eq!((status, code(&body)), (401, 700027), "{body}");

    // An unknown thumbprint.
    let mut h2 = h.clone();
    h2.x5t_s256 = Some(URL_SAFE_NO_PAD.encode([7u8; 32]));
    let (status, body) = exchange(&emu, &sign(&emu, &h2, &claims(&emu))?).await?;
    assert_eq!((status, code(&body)), (401, 700027), "{body}");
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .contains("The key was not found"));

    // No thumbprint at all, and not a JWT.
    let mut h3 = Header::new(Algorithm::RS256);
    h3.typ = Some("JWT".into());
    let (_, body) = exchange(&emu, &sign(&emu, &h3, &claims(&emu))?).await?;
    assert_eq!(code(&body), 700027, "{body}");
    let (_, body) = exchange(&emu, "not.a.jwt").await?;
    assert_eq!(code(&body), 50027, "{body}");
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn cluster_oidc_issuer_publishes_its_keys() -> Result<()> {
    let emu = start().await?;
    let issuer = emu.service_account_issuer().issuer().to_string();
    assert!(
        issuer.starts_with(emu.authority()) && issuer.ends_with('/'),
        "{issuer}"
    );
    let client = https(&emu)?;
    let config = json_body(
        client
            .get(format!("{issuer}.well-known/openid-configuration"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(config["issuer"], json!(issuer));
    let jwks_uri = config["jwks_uri"].as_str().unwrap_or_default().to_string();
    let jwks = json_body(client.get(&jwks_uri).send().await?).await?;
    assert_eq!(
        jwks["keys"][0]["kid"],
        json!(emu.service_account_issuer().jwk().common.key_id)
    );
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "a private key was published"
    );
    let missing = client
        .get(format!(
            "{}/oidc/nope/.well-known/openid-configuration",
            emu.authority()
        ))
        .send()
        .await?;
    assert_eq!(missing.status().as_u16(), 404);
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn azure_arc_challenge_then_token() -> Result<()> {
    let emu = start().await?;
    let client = reqwest::Client::new();
    let url = format!(
        "{}?api-version=2020-06-01&resource=https://redis.azure.com",
        emu.arc_endpoint()
    );
    let first = client.get(&url).header("Metadata", "true").send().await?;
    assert_eq!(first.status().as_u16(), 401);
    let challenge = first
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let path = challenge
        .strip_prefix("Basic realm=")
        .unwrap_or_else(|| panic!("challenge {challenge:?}"));
    assert!(path.ends_with(".key"), "{path}");
    let key = std::fs::read_to_string(path)?;
    let ok = client
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await?;
    assert_eq!(ok.status().as_u16(), 200);
    let body = json_body(ok).await?;
    assert_eq!(body["client_id"], json!(emu.managed_identity().client_id));
    assert!(body["expires_on"].is_string());
    // A key is good once.
    let again = client
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await?;
    assert_eq!(again.status().as_u16(), 401);
    emu.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn user_assigned_selectors_and_status_faults() -> Result<()> {
    let emu = start().await?;
    let client = reqwest::Client::new();
    let ua = emu.user_assigned_identity().clone();
    let imds = format!(
        "{}?api-version=2018-02-01&resource=https://redis.azure.com",
        emu.imds_endpoint()
    );
    for selector in [
        format!("client_id={}", ua.client_id),
        format!("object_id={}", ua.object_id),
        format!(
            "msi_res_id={}",
            url::form_urlencoded::byte_serialize(
                ua.resource_id.clone().unwrap_or_default().as_bytes()
            )
            .collect::<String>()
        ),
    ] {
        let reply = client
            .get(format!("{imds}&{selector}"))
            .header("Metadata", "true")
            .send()
            .await?;
        assert_eq!(reply.status().as_u16(), 200, "{selector}");
        let body = json_body(reply).await?;
        assert_eq!(body["client_id"], json!(ua.client_id), "{selector}");
    }
    for (code, retry) in [
        (410u16, Some(3u64)),
        (404, None),
        (502, None),
        (429, Some(1)),
    ] {
        emu.faults().set_identity(IdentityFault::Status {
            code,
            retry_after_secs: retry,
        });
        let reply = client.get(&imds).header("Metadata", "true").send().await?;
        assert_eq!(reply.status().as_u16(), code);
        let retry_after = reply
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(retry_after, retry.map(|r| r.to_string()));
    }
    emu.faults().set_identity(IdentityFault::None);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let reply = client.get(&imds).header("Metadata", "true").send().await?;
    assert_eq!(reply.status().as_u16(), 200);
    emu.shutdown().await;
    Ok(())
}

/// The certificate files open with OpenSSL (interoperability of our pure-Rust PKCS#12 and
/// PBES2 writers); skipped, saying so, where the `openssl` command is missing.
#[tokio::test]
async fn certificate_files_open_with_openssl() -> Result<()> {
    let emu = start().await?;
    let files = emu.certificate_files().expect("certificate files").clone();
    let pass = format!("pass:{}", files.pkcs12_password);
    let run = |args: &[&str]| std::process::Command::new("openssl").args(args).output();
    match run(&["version"]) {
        Ok(out) if out.status.success() => {}
        _ => {
            eprintln!("SKIPPED: no openssl command to cross-check the certificate files");
            emu.shutdown().await;
            return Ok(());
        }
    }
    let checks: [&[&str]; 3] = [
        &[
            "pkcs12",
            "-in",
            path(&files.pkcs12),
            "-passin",
            &pass,
            "-noout",
        ],
        &[
            "pkey",
            "-in",
            path(&files.encrypted_pem),
            "-passin",
            &pass,
            "-noout",
        ],
        &["pkey", "-in", path(&files.pem), "-noout"],
    ];
    for args in checks {
        let out = run(args)?;
        assert!(
            out.status.success(),
            "openssl {:?} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wrong = run(&[
        "pkcs12",
        "-in",
        path(&files.pkcs12),
        "-passin",
        "pass:wrong",
        "-noout",
    ])?;
    assert!(!wrong.status.success());
    emu.shutdown().await;
    Ok(())
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap_or_default()
}
