//! `redis-entra emulator --hermetic`: unmodified apps, configured by nothing but the env file
//! (no `AZURE_AUTHORITY_HOST`, no `disable_instance_discovery`), get their tokens from the SDKs'
//! default authority `https://login.microsoftonline.com`, which the emulator answers through
//! the env file's `HTTPS_PROXY`, and authenticate to the gateway with them: azure-identity's
//! `DefaultAzureCredential` (Python and Node), MSAL Python's `ConfidentialClientApplication`,
//! and Microsoft's own Python hello world sample.
//!
//! The Python is `$REDIS_ENTRA_PYTHON`, else `<workspace>/target/pyenv/bin/python`; the Node
//! packages are in `<workspace>/target/node/node_modules` (both made by
//! `scripts/setup --with-python`). Without them these tests fail: they do not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    assert_no_secrets, clean_command, jwt_claims, run_with_timeout, EmulatorProcess, Run,
    COMMAND_TIMEOUT,
};

/// Gets a token (`default`: azure-identity's `DefaultAzureCredential`; `msal`: MSAL's
/// `ConfidentialClientApplication` with the tenant's authority on login.microsoftonline.com),
/// prints it on stdout's last line after `OK`, and SETs and GETs a key as the token's `oid`.
const PYTHON_APP: &str = r#"
import base64
import json
import os
import sys

import redis

SCOPE = "https://redis.azure.com/.default"


def claims(token):
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def token(kind):
    if kind == "default":
        from azure.identity import DefaultAzureCredential

        cred = DefaultAzureCredential()
        tok = cred.get_token(SCOPE).token
        print(f"credential: {type(cred._successful_credential).__name__}", file=sys.stderr)
        return tok
    if kind == "msal":
        import msal

        app = msal.ConfidentialClientApplication(
            os.environ["AZURE_CLIENT_ID"],
            client_credential=os.environ["AZURE_CLIENT_SECRET"],
            authority="https://login.microsoftonline.com/" + os.environ["AZURE_TENANT_ID"],
        )
        result = app.acquire_token_for_client(scopes=[SCOPE])
        if "access_token" not in result:
            raise SystemExit(f"MSAL: {result.get('error')}: {result.get('error_description')}")
        return result["access_token"]
    raise SystemExit(f"unknown kind {kind!r}")


def main(kind):
    tok = token(kind)
    r = redis.Redis(
        host=os.environ["AZURE_REDIS_HOST"],
        port=int(os.environ["AZURE_REDIS_PORT"]),
        ssl=True,
        username=claims(tok)["oid"],
        password=tok,
        decode_responses=True,
    )
    r.set("Az:hermetic", kind)
    got = r.get("Az:hermetic")
    if got != kind:
        raise SystemExit(f"GET Az:hermetic returned {got!r}, expected {kind!r}")
    r.close()
    print("OK")
    print(tok)


if __name__ == "__main__":
    main(sys.argv[1])
"#;

/// The Node app: `DefaultAzureCredential` and node-redis; prints `OK` then the token.
const NODE_APP: &str = r#"'use strict';
const { DefaultAzureCredential } = require('@azure/identity');
const { createClient } = require('redis');

async function main() {
  const { token } = await new DefaultAzureCredential().getToken('https://redis.azure.com/.default');
  const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
  const client = createClient({
    url: `rediss://${process.env.AZURE_REDIS_HOST}:${process.env.AZURE_REDIS_PORT}`,
    username: payload.oid,
    password: token,
  });
  client.on('error', (e) => console.error(`redis client error: ${e}`));
  await client.connect();
  await client.set('Az:hermetic', 'node');
  const got = await client.get('Az:hermetic');
  if (got !== 'node') throw new Error(`GET Az:hermetic returned ${JSON.stringify(got)}`);
  await client.quit();
  console.log('OK');
  console.log(token);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
"#;

/// Microsoft's hello world sample, unmodified but for host and port (see the file's header).
const SEED_SAMPLE: &str = include_str!("fixtures/entra_hello_world.py");

/// The interpreter with azure-identity, msal and redis-py; fails the test if there is none.
fn python() -> PathBuf {
    let hint = "run `bash scripts/setup --with-python`, or set REDIS_ENTRA_PYTHON to a Python with azure-identity, msal and redis";
    let path = match std::env::var_os("REDIS_ENTRA_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => common::workspace_root().join("target/pyenv/bin/python"),
    };
    assert!(path.exists(), "no Python at {}: {hint}", path.display());
    let mut check = Command::new(&path);
    check.args(["-c", "import azure.identity, msal, redis"]);
    let run = run_with_timeout(check, COMMAND_TIMEOUT);
    assert!(
        run.status.success(),
        "{} cannot import azure.identity, msal and redis ({}): {hint}",
        path.display(),
        run.stderr.trim()
    );
    path
}

/// `redis-entra emulator --hermetic` with a service principal, its env file checked: the proxy,
/// not the authority host.
fn hermetic_emulator() -> EmulatorProcess {
    hermetic_emulator_with("service-principal")
}

/// As [`hermetic_emulator`], with another `--identity`.
fn hermetic_emulator_with(identity: &str) -> EmulatorProcess {
    let emulator = EmulatorProcess::start(&["--hermetic", "--identity", identity]);
    let names: Vec<&str> = emulator.vars.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        !names.contains(&"AZURE_AUTHORITY_HOST"),
        "the hermetic env file names an authority host:\n{}",
        emulator.env_text
    );
    assert!(
        emulator.var("HTTPS_PROXY").starts_with("http://127.0.0.1:"),
        "{}",
        emulator.env_text
    );
    emulator
}

/// Runs `program script args` with exactly the env file's variables (and `extra`).
fn run_app(
    emulator: &EmulatorProcess,
    program: &Path,
    extra: &[(String, String)],
    script_name: &str,
    script: &str,
    args: &[&str],
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(script_name);
    std::fs::write(&path, script).unwrap();
    let mut vars = emulator.vars.clone();
    vars.extend_from_slice(extra);
    let mut cmd = clean_command(program, &vars);
    cmd.arg(&path).args(args);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
}

/// Checks that the app printed `OK` and a token of the emulator's tenant for the service
/// principal, issued as Entra issues v1 tokens, and that nobody printed the secret.
fn assert_token_from_the_emulator(emulator: &EmulatorProcess, what: &str, run: &Run) {
    run.assert_success(what);
    let mut lines = run.stdout.lines();
    assert_eq!(lines.next(), Some("OK"), "{what} printed:\n{}", run.all());
    let token = lines.next().unwrap_or_default();
    let claims = jwt_claims(token);
    let tenant = emulator.var("AZURE_TENANT_ID");
    assert_eq!(claims["tid"], tenant.as_str(), "{what}: {claims}");
    assert_eq!(
        claims["iss"],
        format!("https://sts.windows.net/{tenant}/").as_str(),
        "{what}: {claims}"
    );
    if let Some((_, client_id)) = emulator.vars.iter().find(|(k, _)| k == "AZURE_CLIENT_ID") {
        assert_eq!(claims["appid"], client_id.as_str(), "{what}: {claims}");
    }
    let secrets: Vec<String> = emulator
        .vars
        .iter()
        .filter(|(k, _)| k == "AZURE_CLIENT_SECRET" || k == "IDENTITY_HEADER")
        .map(|(_, v)| v.clone())
        .collect();
    assert_no_secrets("the emulator", &emulator.stderr(), &secrets);
}

#[test]
fn python_default_azure_credential_with_the_default_authority() {
    let emulator = hermetic_emulator();
    let run = run_app(
        &emulator,
        &python(),
        &[],
        "app.py",
        PYTHON_APP,
        &["default"],
    );
    assert_token_from_the_emulator(&emulator, "DefaultAzureCredential (Python)", &run);
    assert!(
        run.stderr.contains("credential: EnvironmentCredential"),
        "{}",
        run.stderr
    );
    // The proxy is what carries it: without HTTPS_PROXY the same app cannot get a token (no
    // network here; with one, Entra does not know the emulator's tenant).
    let mut without: Vec<(String, String)> = emulator.vars.clone();
    without.retain(|(k, _)| !k.eq_ignore_ascii_case("HTTPS_PROXY"));
    let mut cmd = clean_command(python(), &without);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), PYTHON_APP).unwrap();
    cmd.arg(dir.path().join("app.py")).arg("default");
    let direct = run_with_timeout(cmd, COMMAND_TIMEOUT);
    assert!(
        !direct.status.success() && direct.all().contains("login.microsoftonline.com"),
        "without HTTPS_PROXY:\n{}",
        direct.all()
    );
}

#[test]
fn python_certificate_credential_signs_its_assertion_for_login_microsoftonline_com() {
    // EnvironmentCredential with AZURE_CLIENT_CERTIFICATE_PATH: MSAL signs a client assertion
    // whose audience is the token endpoint on login.microsoftonline.com, which the emulator,
    // answering as that host, accepts.
    let emulator = hermetic_emulator_with("certificate");
    let run = run_app(
        &emulator,
        &python(),
        &[],
        "app.py",
        PYTHON_APP,
        &["default"],
    );
    assert_token_from_the_emulator(&emulator, "DefaultAzureCredential with a certificate", &run);
    assert!(
        run.stderr.contains("credential: EnvironmentCredential"),
        "{}",
        run.stderr
    );
}

#[test]
fn managed_identity_works_unchanged_in_hermetic_mode() {
    // IDENTITY_ENDPOINT is plain http://127.0.0.1:PORT: HTTPS_PROXY does not apply to it (and
    // NO_PROXY names loopback besides), so the App Service path is the same as without --hermetic.
    let emulator = hermetic_emulator_with("managed-identity");
    let run = run_app(
        &emulator,
        &python(),
        &[],
        "app.py",
        PYTHON_APP,
        &["default"],
    );
    assert_token_from_the_emulator(&emulator, "DefaultAzureCredential (managed identity)", &run);
    assert!(
        run.stderr.contains("credential: ManagedIdentityCredential"),
        "{}",
        run.stderr
    );
}

#[test]
fn msal_python_with_only_a_tenant_id() {
    let emulator = hermetic_emulator();
    let run = run_app(&emulator, &python(), &[], "app.py", PYTHON_APP, &["msal"]);
    assert_token_from_the_emulator(&emulator, "MSAL Python", &run);
}

#[test]
fn node_default_azure_credential_with_the_default_authority() {
    let node_modules = common::workspace_root().join("target/node/node_modules");
    assert!(
        node_modules.join("@azure/identity/package.json").exists(),
        "no @azure/identity in {}: run `bash scripts/setup --with-python`",
        node_modules.display()
    );
    let emulator = hermetic_emulator();
    let node_path = [("NODE_PATH".to_string(), node_modules.display().to_string())];
    let run = run_app(
        &emulator,
        Path::new("node"),
        &node_path,
        "app.js",
        NODE_APP,
        &[],
    );
    assert_token_from_the_emulator(&emulator, "DefaultAzureCredential (Node)", &run);
}

#[test]
fn microsofts_hello_world_sample() {
    hello_world_sample("service-principal");
}

#[test]
fn microsofts_hello_world_sample_with_a_managed_identity() {
    hello_world_sample("managed-identity");
}

#[test]
fn microsofts_hello_world_sample_with_workload_identity() {
    // WorkloadIdentityCredential posts the federated token to the default authority's token
    // endpoint: through the proxy, as login.microsoftonline.com.
    hello_world_sample("workload-identity");
}

/// Runs Microsoft's hello world sample (unmodified but for host and port) with the env file of
/// `redis-entra emulator --hermetic --identity <identity>`.
fn hello_world_sample(identity: &str) {
    let emulator = hermetic_emulator_with(identity);
    let port = emulator.var("AZURE_REDIS_PORT");
    assert_eq!(
        SEED_SAMPLE.matches("port = 6380 # Required").count(),
        1,
        "the fixture's port line moved"
    );
    let sample = SEED_SAMPLE.replace("port = 6380 # Required", &format!("port = {port}"));
    let run = run_app(&emulator, &python(), &[], "hello_world.py", &sample, &[]);
    run.assert_success("Microsoft's hello world sample");
    assert_eq!(run.stdout.trim(), "value1", "{}", run.all());
    // What the sample wrote, another client reads.
    let get = common::redis_entra(&["GET", "Az:key1"], &emulator.vars);
    get.assert_success("redis-entra GET Az:key1");
    assert_eq!(get.stdout.trim(), "value1", "{}", get.all());
}

#[test]
fn a_hermetic_port_without_hermetic_is_refused() {
    let run = common::redis_entra(&["emulator", "--hermetic-port", "0"], &[]);
    assert!(!run.status.success(), "{}", run.all());
    assert!(run.stderr.contains("--hermetic"), "{}", run.stderr);
}
