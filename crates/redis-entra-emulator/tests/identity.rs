//! The fake Entra ID over the wire: OIDC metadata, JWKS, the v2 token endpoint, the managed
//! identity endpoints, injected faults and counters, through a real HTTPS client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use redis_entra_emulator::directory::{Directory, Principal, REDIS_APP_ID, REDIS_RESOURCE};
use redis_entra_emulator::faults::{Faults, IdentityFault};
use redis_entra_emulator::identity::{
    authority_router, imds_router, managed_identity_router, serve, IdentityState,
};
use redis_entra_emulator::signing::{now_secs, TokenIssuer};
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::tls::Pki;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const REDIS_SCOPE: &str = "https://redis.azure.com/.default";

/// Both identity servers on loopback, with a client that trusts the emulator's CA.
struct Harness {
    state: IdentityState,
    tenant: String,
    authority: String,
    authority_addr: SocketAddr,
    msi_base: String,
    imds_base: String,
    client: reqwest::Client,
    sp: Principal,
    system_mi: Principal,
    user_mi: Principal,
    stop: Option<oneshot::Sender<()>>,
    servers: Vec<JoinHandle<()>>,
}

impl Harness {
    async fn start() -> Result<Self> {
        capture_logs();
        let directory = Arc::new(Directory::new());
        let sp = directory.create_service_principal("app");
        let system_mi = directory.create_managed_identity("web", false);
        let user_mi = directory.create_managed_identity("uami", true);
        let tenant = directory.tenant_id().to_string();
        let issuer = Arc::new(TokenIssuer::new(&tenant, Duration::from_secs(3600))?);
        let pki = Pki::generate()?;

        let authority_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let authority_addr = authority_listener.local_addr()?;
        let msi_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let msi_addr = msi_listener.local_addr()?;
        let imds_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let imds_addr = imds_listener.local_addr()?;
        let authority = format!("https://localhost:{}", authority_addr.port());

        let state = IdentityState {
            directory,
            issuer,
            faults: Arc::new(Faults::default()),
            stats: Arc::new(Stats::default()),
            authority: authority.clone(),
            identity_header: "identity-header-secret-value".to_string(),
            sign_in: Default::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = futures::future::FutureExt::shared(async move {
            let _ = stopped.await;
        });
        let servers = vec![
            serve(
                authority_listener,
                Some(pki.server_config()),
                authority_router(state.clone()),
                stopped.clone(),
            ),
            serve(
                msi_listener,
                None,
                managed_identity_router(state.clone()),
                stopped.clone(),
            ),
            serve(imds_listener, None, imds_router(state.clone()), stopped),
        ];
        let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes())?;
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve("localhost", authority_addr)
            .build()?;
        Ok(Self {
            state,
            tenant,
            authority,
            authority_addr,
            msi_base: format!("http://127.0.0.1:{}", msi_addr.port()),
            imds_base: format!("http://127.0.0.1:{}", imds_addr.port()),
            client,
            sp,
            system_mi,
            user_mi,
            stop: Some(stop),
            servers,
        })
    }

    fn secret(&self) -> &str {
        self.sp.secret.as_deref().unwrap_or_default()
    }

    async fn get(&self, url: &str) -> Result<(u16, Value)> {
        let response = self.client.get(url).send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).with_context(|| text.clone())?,
        ))
    }

    /// POSTs a form to the token endpoint of `tenant`.
    async fn post_token_raw(
        &self,
        tenant: &str,
        params: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<reqwest::Response> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let mut request = self
            .client
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.authority))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((id, secret)) = basic {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(id),
                enc(secret)
            ));
            request = request.header("authorization", format!("Basic {credentials}"));
        }
        Ok(request.send().await?)
    }

    async fn post_token(&self, params: &[(&str, &str)]) -> Result<(u16, Value)> {
        json_of(self.post_token_raw(&self.tenant, params, None).await?).await
    }

    async fn msi(&self, query: &str, header: Option<&str>) -> Result<(u16, Value)> {
        let mut request = self
            .client
            .get(format!("{}/msi/token?{query}", self.msi_base));
        if let Some(value) = header {
            request = request.header("X-IDENTITY-HEADER", value);
        }
        json_of(request.send().await?).await
    }

    async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for server in self.servers.drain(..) {
            tokio::time::timeout(Duration::from_secs(30), server).await??;
        }
        Ok(())
    }
}

async fn json_of(response: reqwest::Response) -> Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).with_context(|| text.clone())?,
    ))
}

/// The claims of a JWT, decoded without verification.
fn claims(token: &str) -> Result<Value> {
    let Some(payload) = token.split('.').nth(1) else {
        bail!("not a JWT");
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn secret_params<'a>(
    client_id: &'a str,
    secret: &'a str,
    scope: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", client_id),
        ("grant_type", "client_credentials"),
        ("client_secret", secret),
        ("scope", scope),
    ]
}

fn assert_entra_error(status: u16, body: &Value, want_status: u16, error: &str, code: u64) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], serde_json::json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    assert!(
        description.contains("\r\nCorrelation ID: "),
        "{description}"
    );
    assert!(description.contains("\r\nTimestamp: "), "{description}");
    assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
}

#[tokio::test]
async fn v2_metadata_names_the_emulators_endpoints() -> Result<()> {
    let h = Harness::start().await?;
    let tid = &h.tenant;
    let (status, doc) = h
        .get(&format!(
            "{}/{tid}/v2.0/.well-known/openid-configuration",
            h.authority
        ))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(doc["issuer"], format!("{}/{tid}/v2.0", h.authority));
    assert_eq!(
        doc["token_endpoint"],
        format!("{}/{tid}/oauth2/v2.0/token", h.authority)
    );
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{}/{tid}/oauth2/v2.0/authorize", h.authority)
    );
    assert_eq!(
        doc["jwks_uri"],
        format!("{}/{tid}/discovery/v2.0/keys", h.authority)
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    assert_eq!(
        doc["subject_types_supported"],
        serde_json::json!(["pairwise"])
    );
    assert_eq!(doc["cloud_instance_name"], "microsoftonline.com");
    let methods = doc["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("client_secret_basic") && methods.contains("client_secret_post"));

    // The multi-tenant aliases, as Entra writes them.
    let (status, doc) = h
        .get(&format!(
            "{}/common/v2.0/.well-known/openid-configuration",
            h.authority
        ))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(doc["issuer"], format!("{}/{{tenantid}}/v2.0", h.authority));
    assert_eq!(
        doc["token_endpoint"],
        format!("{}/common/oauth2/v2.0/token", h.authority)
    );

    // v1.
    let (status, doc) = h
        .get(&format!(
            "{}/{tid}/.well-known/openid-configuration",
            h.authority
        ))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(doc["issuer"], format!("https://sts.windows.net/{tid}/"));
    assert_eq!(doc["issuer"], h.state.issuer.v1_issuer());

    // Unknown tenant.
    let (status, body) = h
        .get(&format!(
            "{}/not-a-tenant/v2.0/.well-known/openid-configuration",
            h.authority
        ))
        .await?;
    assert_entra_error(status, &body, 400, "invalid_tenant", 90002);
    assert!(body["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("Tenant 'not-a-tenant' not found")));
    h.shutdown().await
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() -> Result<()> {
    let h = Harness::start().await?;
    let kid = h.state.issuer.kid().to_string();
    for path in [
        format!("{}/discovery/v2.0/keys", h.tenant),
        format!("{}/discovery/keys", h.tenant),
        "common/discovery/v2.0/keys".to_string(),
    ] {
        let (status, jwks) = h.get(&format!("{}/{path}", h.authority)).await?;
        assert_eq!(status, 200, "{path}");
        let keys = jwks["keys"].as_array().context("keys")?;
        assert!(
            keys.iter().any(|k| k["kid"] == kid.as_str()),
            "{path}: {jwks}"
        );
        assert!(keys.iter().all(|k| k["kty"] == "RSA" && k["use"] == "sig"));
    }
    let (status, body) = h
        .get(&format!(
            "{}/{}/discovery/v2.0/keys",
            h.authority,
            uuid::Uuid::new_v4()
        ))
        .await?;
    assert_entra_error(status, &body, 400, "invalid_tenant", 90002);
    h.shutdown().await
}

#[tokio::test]
async fn client_secret_in_the_body_gives_a_token() -> Result<()> {
    let h = Harness::start().await?;
    let mut params = secret_params(&h.sp.client_id, h.secret(), REDIS_SCOPE);
    // What MSAL adds; ignored.
    params.extend([
        ("client_info", "1"),
        ("x-client-SKU", "MSAL.Python"),
        ("x-client-Ver", "1.39.0"),
    ]);
    let response = h.post_token_raw(&h.tenant, &params, None).await?;
    assert_eq!(response.status().as_u16(), 200);
    let cache = response
        .headers()
        .get("cache-control")
        .context("cache-control")?;
    assert!(cache.to_str()?.contains("no-store"));
    let (_, body) = json_of(response).await?;
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_u64().context("expires_in")?;
    assert!(expires_in > 3000 && expires_in <= 3600);
    assert_eq!(body["ext_expires_in"].as_u64(), Some(expires_in));
    let token = body["access_token"].as_str().context("access_token")?;

    let c = claims(token)?;
    assert_eq!(c["oid"], h.sp.object_id.as_str());
    assert_eq!(c["tid"], h.tenant.as_str());
    assert_eq!(c["aud"], REDIS_RESOURCE);
    assert!(c["exp"].as_u64().is_some_and(|exp| exp > now_secs()));

    // And it verifies against the issuer's key, as the gateway will check it.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[REDIS_RESOURCE]);
    validation.set_issuer(&[h.state.issuer.v1_issuer()]);
    jsonwebtoken::decode::<Value>(token, &h.state.issuer.decoding_key()?, &validation)?;
    h.shutdown().await
}

#[tokio::test]
async fn client_secret_basic_and_the_guid_scope() -> Result<()> {
    let h = Harness::start().await?;
    let scope = format!("{REDIS_APP_ID}/.default");
    let params = [
        ("grant_type", "client_credentials"),
        ("scope", scope.as_str()),
    ];
    let response = h
        .post_token_raw(&h.tenant, &params, Some((&h.sp.client_id, h.secret())))
        .await?;
    let (status, body) = json_of(response).await?;
    assert_eq!(status, 200, "{body}");
    let c = claims(body["access_token"].as_str().context("access_token")?)?;
    assert_eq!(c["oid"], h.sp.object_id.as_str());
    assert_eq!(c["tid"], h.tenant.as_str());
    assert_eq!(c["aud"], REDIS_APP_ID);
    assert!(c["exp"].as_u64().is_some_and(|exp| exp > now_secs()));

    // Basic with the wrong secret is the same 401 as in the body.
    let response = h
        .post_token_raw(&h.tenant, &params, Some((&h.sp.client_id, "nope")))
        .await?;
    let (status, body) = json_of(response).await?;
    assert_entra_error(status, &body, 401, "invalid_client", 7000215);
    h.shutdown().await
}

#[tokio::test]
async fn every_request_gets_a_fresh_token() -> Result<()> {
    let h = Harness::start().await?;
    let params = secret_params(&h.sp.client_id, h.secret(), REDIS_SCOPE);
    let (_, first) = h.post_token(&params).await?;
    let (_, second) = h.post_token(&params).await?;
    assert_ne!(first["access_token"], second["access_token"]);
    h.shutdown().await
}

#[tokio::test]
async fn wrong_secret_is_entras_401() -> Result<()> {
    let h = Harness::start().await?;
    let wrong = "wrong-secret-value-123";
    let (status, body) = h
        .post_token(&secret_params(&h.sp.client_id, wrong, REDIS_SCOPE))
        .await?;
    assert_entra_error(status, &body, 401, "invalid_client", 7000215);
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.starts_with(&format!(
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request \
         is the client secret value, not the client secret ID, for a secret added to app '{}'.",
        h.sp.client_id
    )));
    assert_eq!(
        body["error_uri"],
        format!("{}/error?code=7000215", h.authority)
    );
    assert!(!body.to_string().contains(wrong));
    h.shutdown().await
}

#[tokio::test]
async fn each_mistake_gets_its_aadsts_code() -> Result<()> {
    let h = Harness::start().await?;
    let id = h.sp.client_id.as_str();
    let secret = h.secret();
    let stranger = uuid::Uuid::new_v4().to_string();

    let (s, b) = h
        .post_token(&secret_params(&stranger, secret, REDIS_SCOPE))
        .await?;
    assert_entra_error(s, &b, 400, "unauthorized_client", 700016);
    assert!(b["error_description"]
        .as_str()
        .is_some_and(|d| d.contains(&format!(
            "Application with identifier '{stranger}' was not found in the directory '{}'",
            h.tenant
        ))));

    let (s, b) = h
        .post_token(&secret_params(id, secret, "https://redis.azure.com"))
        .await?;
    assert_entra_error(s, &b, 400, "invalid_scope", 1002012);
    assert!(b["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("must have a scope value with /.default suffixed")));

    let (s, b) = h
        .post_token(&secret_params(
            id,
            secret,
            "https://vault.azure.net/.default",
        ))
        .await?;
    assert_entra_error(s, &b, 400, "invalid_resource", 500011);

    let (s, b) = h
        .post_token(&[
            ("client_id", id),
            ("client_secret", secret),
            ("scope", REDIS_SCOPE),
        ])
        .await?;
    assert_entra_error(s, &b, 400, "invalid_request", 900144);
    assert!(b["error_description"]
        .as_str()
        .is_some_and(|d| d.starts_with(
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'."
        )));

    let (s, b) = h
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_secret", secret),
            ("scope", REDIS_SCOPE),
        ])
        .await?;
    assert_entra_error(s, &b, 400, "invalid_request", 900144);
    assert!(b["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("'client_id'")));

    let (s, b) = h
        .post_token(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:saml1_1-bearer",
            ),
            ("client_id", id),
            ("scope", REDIS_SCOPE),
        ])
        .await?;
    assert_entra_error(s, &b, 400, "unsupported_grant_type", 70003);

    let (s, b) = h
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("scope", REDIS_SCOPE),
        ])
        .await?;
    assert_entra_error(s, &b, 401, "invalid_client", 7000218);

    let (s, b) = h
        .post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("scope", REDIS_SCOPE),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", "a.b.c"),
        ])
        .await?;
    // Assertions are verified now (tests/client_assertions.rs): this one is not a JWT.
    assert_entra_error(s, &b, 401, "invalid_client", 50027);

    let params = secret_params(id, secret, REDIS_SCOPE);
    let unknown = uuid::Uuid::new_v4().to_string();
    let (s, b) = json_of(h.post_token_raw(&unknown, &params, None).await?).await?;
    assert_entra_error(s, &b, 400, "invalid_request", 90002);
    assert!(b["error_description"]
        .as_str()
        .is_some_and(|d| d.contains(&format!("Tenant '{unknown}' not found"))));

    let (s, b) = json_of(h.post_token_raw("common", &params, None).await?).await?;
    assert_entra_error(s, &b, 400, "invalid_request", 50059);
    h.shutdown().await
}

#[tokio::test]
async fn bodies_that_are_not_forms_get_a_clear_400() -> Result<()> {
    let h = Harness::start().await?;
    let url = format!("{}/{}/oauth2/v2.0/token", h.authority, h.tenant);
    let response = h
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#)
        .send()
        .await?;
    let (s, b) = json_of(response).await?;
    assert_entra_error(s, &b, 400, "invalid_request", 90004);

    let huge = format!(
        "grant_type=client_credentials&pad={}",
        "x".repeat(80 * 1024)
    );
    let response = h
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await?;
    let (s, b) = json_of(response).await?;
    assert_entra_error(s, &b, 400, "invalid_request", 90004);

    let response = h
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, 0x00, b'=', 0x80])
        .send()
        .await?;
    let (s, b) = json_of(response).await?;
    assert_entra_error(s, &b, 400, "invalid_request", 90004);

    // Still serving.
    let (s, _) = h
        .post_token(&secret_params(&h.sp.client_id, h.secret(), REDIS_SCOPE))
        .await?;
    assert_eq!(s, 200);
    h.shutdown().await
}

#[tokio::test]
async fn app_service_managed_identity() -> Result<()> {
    let h = Harness::start().await?;
    let header = h.state.identity_header.clone();
    let query = "api-version=2019-08-01&resource=https://redis.azure.com";

    let (s, b) = h.msi(query, Some(&header)).await?;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["resource"], REDIS_RESOURCE);
    assert_eq!(b["client_id"], h.system_mi.client_id.as_str());
    let expires_on: u64 = b["expires_on"]
        .as_str()
        .context("expires_on is a string")?
        .parse()?;
    assert!(expires_on > now_secs());
    let c = claims(b["access_token"].as_str().context("access_token")?)?;
    assert_eq!(c["oid"], h.system_mi.object_id.as_str());
    assert_eq!(c["tid"], h.tenant.as_str());
    assert_eq!(c["aud"], REDIS_RESOURCE);
    assert_eq!(c["exp"].as_u64(), Some(expires_on));

    // Without the header, or with a wrong one.
    let (s, b) = h.msi(query, None).await?;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["statusCode"], 401);
    assert!(b["message"].is_string());
    let (s, b) = h.msi(query, Some("not-the-header")).await?;
    assert_eq!(s, 401, "{b}");
    assert!(!b.to_string().contains(&header));

    // A trailing slash and the GUID.
    let (s, b) = h
        .msi(
            "api-version=2019-08-01&resource=https://redis.azure.com/",
            Some(&header),
        )
        .await?;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        claims(b["access_token"].as_str().unwrap_or_default())?["aud"],
        REDIS_RESOURCE
    );
    let (s, b) = h
        .msi(
            &format!("api-version=2019-08-01&resource={REDIS_APP_ID}"),
            Some(&header),
        )
        .await?;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        claims(b["access_token"].as_str().unwrap_or_default())?["aud"],
        REDIS_APP_ID
    );

    // User-assigned, by each selector.
    let rid: String = url::form_urlencoded::byte_serialize(
        h.user_mi
            .resource_id
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    )
    .collect();
    for selector in [
        format!("client_id={}", h.user_mi.client_id),
        format!("principal_id={}", h.user_mi.object_id),
        format!("object_id={}", h.user_mi.object_id),
        format!("mi_res_id={rid}"),
    ] {
        let (s, b) = h.msi(&format!("{query}&{selector}"), Some(&header)).await?;
        assert_eq!(s, 200, "{selector}: {b}");
        assert_eq!(b["client_id"], h.user_mi.client_id.as_str());
        let c = claims(b["access_token"].as_str().unwrap_or_default())?;
        assert_eq!(c["oid"], h.user_mi.object_id.as_str());
    }

    // Not attached, or not a managed identity at all.
    for selector in [
        format!("client_id={}", uuid::Uuid::new_v4()),
        format!("client_id={}", h.sp.client_id),
    ] {
        let (s, b) = h.msi(&format!("{query}&{selector}"), Some(&header)).await?;
        assert_eq!(s, 400, "{selector}: {b}");
        assert_eq!(b["statusCode"], 400);
    }

    // Missing parameters, unknown resource.
    for bad in [
        "resource=https://redis.azure.com",
        "api-version=2019-08-01",
        "api-version=2019-08-01&resource=https://vault.azure.net",
    ] {
        let (s, b) = h.msi(bad, Some(&header)).await?;
        assert_eq!(s, 400, "{bad}: {b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    h.shutdown().await
}

#[tokio::test]
async fn imds_shape() -> Result<()> {
    let h = Harness::start().await?;
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://redis.azure.com",
        h.imds_base
    );
    let (s, b) = json_of(h.client.get(&url).send().await?).await?;
    assert_eq!(s, 400);
    assert_eq!(b["error"], "bad_request_102");
    assert_eq!(
        b["error_description"],
        "Required metadata header not specified"
    );

    let (s, b) = json_of(h.client.get(&url).header("Metadata", "true").send().await?).await?;
    assert_eq!(s, 200, "{b}");
    for field in [
        "access_token",
        "refresh_token",
        "expires_in",
        "expires_on",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(b[field].is_string(), "{field} is not a string: {b}");
    }
    assert_eq!(b["refresh_token"], "");
    assert!(b["expires_on"]
        .as_str()
        .is_some_and(|v| v.parse::<u64>().is_ok()));
    let c = claims(b["access_token"].as_str().unwrap_or_default())?;
    assert_eq!(c["oid"], h.system_mi.object_id.as_str());

    let stranger = format!("{url}&client_id={}", uuid::Uuid::new_v4());
    let (s, b) = json_of(
        h.client
            .get(&stranger)
            .header("Metadata", "true")
            .send()
            .await?,
    )
    .await?;
    assert_eq!(s, 400);
    assert_eq!(b["error_description"], "Identity not found");
    h.shutdown().await
}

#[tokio::test]
async fn injected_faults_then_recovery() -> Result<()> {
    let h = Harness::start().await?;
    let params = secret_params(&h.sp.client_id, h.secret(), REDIS_SCOPE);
    let header = h.state.identity_header.clone();
    let msi_query = "api-version=2019-08-01&resource=https://redis.azure.com";

    h.state.faults.set_identity(IdentityFault::Unavailable);
    let (s, b) = h.post_token(&params).await?;
    assert_eq!(s, 503);
    assert!(b["error"].is_string());
    let (s, b) = h.msi(msi_query, Some(&header)).await?;
    assert_eq!(s, 503);
    assert_eq!(b["statusCode"], 503);

    h.state.faults.set_identity(IdentityFault::TooManyRequests {
        retry_after_secs: 7,
    });
    let response = h.post_token_raw(&h.tenant, &params, None).await?;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"7"[..])
    );

    h.state.faults.set_identity(IdentityFault::InternalError);
    let (s, _) = h.post_token(&params).await?;
    assert_eq!(s, 500);

    h.state.faults.set_identity(IdentityFault::MalformedJson);
    let response = h.post_token_raw(&h.tenant, &params, None).await?;
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await?;
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    h.state
        .faults
        .set_identity(IdentityFault::Slow(Duration::from_millis(20)));
    let (s, _) = h.post_token(&params).await?;
    assert_eq!(s, 200);

    h.state.faults.set_identity(IdentityFault::None);
    let (s, b) = h.post_token(&params).await?;
    assert_eq!(s, 200, "{b}");
    let (s, b) = h.msi(msi_query, Some(&header)).await?;
    assert_eq!(s, 200, "{b}");
    h.shutdown().await
}

#[tokio::test]
async fn token_requests_and_issued_tokens_are_counted() -> Result<()> {
    let h = Harness::start().await?;
    let header = h.state.identity_header.clone();
    let params = secret_params(&h.sp.client_id, h.secret(), REDIS_SCOPE);
    h.post_token(&params).await?;
    h.post_token(&secret_params(&h.sp.client_id, "wrong", REDIS_SCOPE))
        .await?;
    h.msi(
        "api-version=2019-08-01&resource=https://redis.azure.com",
        Some(&header),
    )
    .await?;
    h.state.faults.set_identity(IdentityFault::Unavailable);
    h.post_token(&params).await?;
    // Metadata is not a token request.
    h.state.faults.set_identity(IdentityFault::None);
    h.get(&format!("{}/{}/discovery/v2.0/keys", h.authority, h.tenant))
        .await?;
    assert_eq!(Stats::get(&h.state.stats.token_requests), 4);
    assert_eq!(Stats::get(&h.state.stats.tokens_issued), 2);
    h.shutdown().await
}

#[tokio::test]
async fn garbage_and_failed_handshakes_affect_only_their_connection() -> Result<()> {
    let h = Harness::start().await?;
    // A connection that never speaks stays open alongside.
    let idle = TcpStream::connect(h.authority_addr).await?;
    // Garbage instead of a ClientHello.
    let mut garbage = TcpStream::connect(h.authority_addr).await?;
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage")
        .await?;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut sink)).await;
    // Plain HTTP garbage on the managed-identity port.
    let msi_addr: SocketAddr = h.msi_base.trim_start_matches("http://").parse()?;
    let mut junk = TcpStream::connect(msi_addr).await?;
    junk.write_all(b"\x16\x03\x01\x00\x05hello\r\n\r\n").await?;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), junk.read_to_end(&mut sink)).await;

    let (s, _) = h
        .post_token(&secret_params(&h.sp.client_id, h.secret(), REDIS_SCOPE))
        .await?;
    assert_eq!(s, 200);
    let (s, _) = h
        .msi(
            "api-version=2019-08-01&resource=https://redis.azure.com",
            Some(&h.state.identity_header.clone()),
        )
        .await?;
    assert_eq!(s, 200);
    drop(idle);
    h.shutdown().await
}

#[tokio::test]
async fn shutdown_closes_the_listener() -> Result<()> {
    let h = Harness::start().await?;
    let addr = h.authority_addr;
    let (s, _) = h
        .get(&format!("{}/{}/discovery/v2.0/keys", h.authority, h.tenant))
        .await?;
    assert_eq!(s, 200);
    // A connection still open (the client's keep-alive) must not hold the shutdown up.
    h.shutdown().await?;
    assert!(TcpStream::connect(addr).await.is_err());
    Ok(())
}

/// Everything the emulator logs while this test binary runs. One global subscriber, installed
/// before any test's first request: a scoped (`set_default`) subscriber races with the other
/// test threads over tracing's per-callsite interest cache and may see nothing.
static LOGS: OnceLock<Captured> = OnceLock::new();

fn capture_logs() -> &'static Captured {
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "redis_entra_emulator=trace",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        captured
    })
}

/// A `MakeWriter` that keeps everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_and_debug_output_never_carry_secrets_or_tokens() -> Result<()> {
    let h = Harness::start().await?;
    let header = h.state.identity_header.clone();
    let wrong = "a-wrong-secret-987";
    let (_, ok) = h
        .post_token(&secret_params(&h.sp.client_id, h.secret(), REDIS_SCOPE))
        .await?;
    h.post_token(&secret_params(&h.sp.client_id, wrong, REDIS_SCOPE))
        .await?;
    let params = [("grant_type", "client_credentials"), ("scope", REDIS_SCOPE)];
    let (_, basic) = json_of(
        h.post_token_raw(&h.tenant, &params, Some((&h.sp.client_id, h.secret())))
            .await?,
    )
    .await?;
    let (_, mi) = h
        .msi(
            "api-version=2019-08-01&resource=https://redis.azure.com",
            Some(&header),
        )
        .await?;
    h.msi(
        "api-version=2019-08-01&resource=https://redis.azure.com",
        Some("wrong-header-555"),
    )
    .await?;
    let debug = format!("{:?}", h.state);
    let secret = h.secret().to_string();
    let client_id = h.sp.client_id.clone();
    h.shutdown().await?;

    let logs = String::from_utf8(
        capture_logs()
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone(),
    )?;
    assert!(logs.contains("token request"), "nothing was logged: {logs}");
    assert!(
        logs.contains(&client_id),
        "the logs name the client: {logs}"
    );
    let tokens: Vec<&str> = [&ok, &basic, &mi]
        .iter()
        .filter_map(|b| b["access_token"].as_str())
        .collect();
    assert_eq!(tokens.len(), 3);
    for forbidden in [secret.as_str(), wrong, header.as_str(), "wrong-header-555"]
        .into_iter()
        .chain(tokens.iter().copied())
    {
        assert!(
            !logs.contains(forbidden),
            "the logs carry a secret or token"
        );
        assert!(
            !debug.contains(forbidden),
            "Debug carries a secret or token"
        );
    }
    // Nor the Basic credentials.
    assert!(!logs.contains("Basic "));
    Ok(())
}
