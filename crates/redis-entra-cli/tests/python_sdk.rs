//! Microsoft's own Python SDK (azure-identity) and redis-py against `redis-entra emulator`,
//! configured by nothing but the emulator's env file: the hello world of Microsoft's Python samples, done right
//! (base64url-decoded payload, no CA argument: trust comes from SSL_CERT_FILE and
//! REQUESTS_CA_BUNDLE).
//!
//! The interpreter is `$REDIS_ENTRA_PYTHON`, else `<workspace>/target/pyenv/bin/python`, made by
//! `scripts/setup --with-python`. Without it these tests fail: they do not skip.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{
    assert_no_secrets, clean_command, run_with_timeout, EmulatorProcess, COMMAND_TIMEOUT,
};

/// The Python samples' hello world, corrected. `argv[1]` picks the credential (`default`,
/// `managed-identity` or `client-secret`), `argv[2]` the protocol (2 or 3).
const HELLO_WORLD: &str = r#"
import base64
import json
import os
import sys

import redis
from azure.identity import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential

SCOPE = "https://redis.azure.com/.default"


def extract_username_from_token(token):
    # The payload is base64url without padding (RFC 7515): urlsafe alphabet, padding restored.
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["oid"]


def credential(kind):
    if kind == "default":
        return DefaultAzureCredential()
    if kind == "managed-identity":
        return ManagedIdentityCredential()
    if kind == "client-secret":
        # Service Connector's variable names, as its Python sample reads them.
        return ClientSecretCredential(
            tenant_id=os.environ["AZURE_REDIS_TENANTID"],
            client_id=os.environ["AZURE_REDIS_CLIENTID"],
            client_secret=os.environ["AZURE_REDIS_CLIENTSECRET"],
            authority=os.environ["AZURE_AUTHORITY_HOST"],
            disable_instance_discovery=True,
        )
    raise SystemExit(f"unknown credential kind {kind!r}")


def hello_world(kind, protocol):
    cred = credential(kind)
    token = cred.get_token(SCOPE)
    used = getattr(cred, "_successful_credential", None) or cred
    print(f"credential: {type(used).__name__}", file=sys.stderr)
    user_name = extract_username_from_token(token.token)
    r = redis.Redis(
        host=os.environ["AZURE_REDIS_HOST"],
        port=int(os.environ["AZURE_REDIS_PORT"]),
        ssl=True,  # ssl connection is required.
        username=user_name,
        password=token.token,
        decode_responses=True,
        protocol=protocol,
    )
    r.set("Az:key1", "value1")
    t = r.get("Az:key1")
    if t != "value1":
        raise SystemExit(f"GET Az:key1 returned {t!r}, expected 'value1'")
    if protocol == 3:
        # redis-py connected with HELLO 3 AUTH <oid> <token> and checked the reply's proto;
        # check the server's view of the connection too.
        conn = r.connection_pool.get_connection()
        try:
            if str(conn.protocol) != "3":
                raise SystemExit(f"the connection speaks RESP{conn.protocol}")
        finally:
            r.connection_pool.release(conn)
        info = r.client_info()
        if str(info.get("resp")) != "3":
            raise SystemExit(f"CLIENT INFO says resp={info.get('resp')!r}, expected 3")
    r.close()
    print("OK")


if __name__ == "__main__":
    hello_world(sys.argv[1], int(sys.argv[2]))
"#;

/// The interpreter with azure-identity and redis-py; fails the test if there is none.
fn python() -> PathBuf {
    let hint = "run `bash scripts/setup --with-python` (it makes target/pyenv with azure-identity and redis-py), or set REDIS_ENTRA_PYTHON to a Python that has them";
    let path = match std::env::var_os("REDIS_ENTRA_PYTHON") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(
                p.exists(),
                "REDIS_ENTRA_PYTHON={} does not exist: {hint}",
                p.display()
            );
            p
        }
        _ => {
            let p = common::workspace_root().join("target/pyenv/bin/python");
            assert!(
                p.exists(),
                "no Python for the SDK tests: REDIS_ENTRA_PYTHON is unset and {} does not exist: {hint}",
                p.display()
            );
            p
        }
    };
    let mut check = Command::new(&path);
    check.args(["-c", "import azure.identity, redis"]);
    let run = run_with_timeout(check, COMMAND_TIMEOUT);
    assert!(
        run.status.success(),
        "{} cannot import azure.identity and redis ({}): {hint}",
        path.display(),
        run.stderr.trim()
    );
    path
}

/// Runs the hello world with exactly the env file's variables (plus PATH and HOME); returns
/// which credential class got the token. Panics unless it exits 0 and prints OK.
fn hello_world(emulator: &EmulatorProcess, kind: &str, protocol: u8) -> String {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hello_world.py");
    std::fs::write(&script, HELLO_WORLD).unwrap();
    let mut cmd = clean_command(&python, &emulator.vars);
    cmd.arg(&script).arg(kind).arg(protocol.to_string());
    let run = run_with_timeout(cmd, COMMAND_TIMEOUT);
    run.assert_success(&format!("the Python hello world ({kind}, RESP{protocol})"));
    assert_eq!(
        run.stdout.trim(),
        "OK",
        "the Python hello world ({kind}, RESP{protocol}) printed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert_no_secrets("the emulator", &emulator.stderr(), &[]);
    run.stderr
        .lines()
        .find_map(|l| l.strip_prefix("credential: "))
        .unwrap_or("?")
        .to_string()
}

#[test]
fn managed_identity_with_default_azure_credential() {
    let emulator =
        EmulatorProcess::start(&["--identity", "managed-identity", "--token-lifetime", "60s"]);
    // As the sample does: DefaultAzureCredential reaches the App Service endpoint offline.
    let used = hello_world(&emulator, "default", 2);
    assert_eq!(
        used, "ManagedIdentityCredential",
        "DefaultAzureCredential got its token from {used}"
    );
    // And ManagedIdentityCredential by name.
    hello_world(&emulator, "managed-identity", 2);
}

#[test]
fn service_principal_with_client_secret_credential() {
    let emulator =
        EmulatorProcess::start(&["--identity", "service-principal", "--token-lifetime", "60s"]);
    hello_world(&emulator, "client-secret", 2);
    let secret = emulator.var("AZURE_CLIENT_SECRET");
    assert_no_secrets("the emulator", &emulator.stderr(), &[secret]);
}

#[test]
fn resp3_hello_auth() {
    let emulator =
        EmulatorProcess::start(&["--identity", "managed-identity", "--token-lifetime", "60s"]);
    hello_world(&emulator, "default", 3);
}
