//! More of Microsoft's Python SDK (azure-identity, over MSAL) and redis-py against
//! `redis-entra emulator`, each configured by nothing but the emulator's env file:
//! `CertificateCredential` (the emulator's PEM), `WorkloadIdentityCredential` (the token file
//! the emulator rotates) and a user-assigned `ManagedIdentityCredential` (`client_id=`).
//!
//! The interpreter is `$REDIS_ENTRA_PYTHON`, else `<workspace>/target/pyenv/bin/python`, made by
//! `scripts/setup --with-python`. Without it these tests fail: they do not skip.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{
    assert_no_secrets, clean_command, run_with_timeout, EmulatorProcess, COMMAND_TIMEOUT,
};

/// `argv[1]` picks the credential: `certificate`, `workload-identity` or `user-assigned`.
/// Prints the token's `appid` on stderr and `OK` on stdout.
const SCRIPT: &str = r#"
import base64
import json
import os
import sys

import redis
from azure.identity import (
    CertificateCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)

SCOPE = "https://redis.azure.com/.default"


def claims(token):
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def credential(kind):
    if kind == "certificate":
        return CertificateCredential(
            tenant_id=os.environ["AZURE_TENANT_ID"],
            client_id=os.environ["AZURE_CLIENT_ID"],
            certificate_path=os.environ["AZURE_CLIENT_CERTIFICATE_PATH"],
            authority=os.environ["AZURE_AUTHORITY_HOST"],
            disable_instance_discovery=True,
        )
    if kind == "workload-identity":
        return WorkloadIdentityCredential(
            tenant_id=os.environ["AZURE_TENANT_ID"],
            client_id=os.environ["AZURE_CLIENT_ID"],
            token_file_path=os.environ["AZURE_FEDERATED_TOKEN_FILE"],
            authority=os.environ["AZURE_AUTHORITY_HOST"],
            disable_instance_discovery=True,
        )
    if kind == "user-assigned":
        # Service Connector's variable, as its Python sample reads it.
        return ManagedIdentityCredential(client_id=os.environ["AZURE_REDIS_CLIENTID"])
    raise SystemExit(f"unknown credential kind {kind!r}")


def main(kind):
    token = credential(kind).get_token(SCOPE)
    c = claims(token.token)
    print(f"appid: {c.get('appid')}", file=sys.stderr)
    r = redis.Redis(
        host=os.environ["AZURE_REDIS_HOST"],
        port=int(os.environ["AZURE_REDIS_PORT"]),
        ssl=True,
        username=c["oid"],
        password=token.token,
        decode_responses=True,
    )
    r.set("Az:key1", "value1")
    t = r.get("Az:key1")
    if t != "value1":
        raise SystemExit(f"GET Az:key1 returned {t!r}, expected 'value1'")
    r.close()
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
"#;

/// The interpreter with azure-identity and redis-py; fails the test if there is none.
fn python() -> PathBuf {
    let hint = "run `bash scripts/setup --with-python`, or set REDIS_ENTRA_PYTHON to a Python with azure-identity and redis";
    let path = match std::env::var_os("REDIS_ENTRA_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => common::workspace_root().join("target/pyenv/bin/python"),
    };
    assert!(path.exists(), "no Python at {}: {hint}", path.display());
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

/// Runs the script for `kind` with exactly the env file's variables (plus PATH and HOME);
/// returns the token's `appid`.
fn run(emulator: &EmulatorProcess, kind: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("sign_in.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut cmd = clean_command(python(), &emulator.vars);
    cmd.arg(&script).arg(kind);
    let run = run_with_timeout(cmd, COMMAND_TIMEOUT);
    run.assert_success(&format!("the Python sign-in ({kind})"));
    assert_eq!(
        run.stdout.trim(),
        "OK",
        "the Python sign-in ({kind}) printed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert_no_secrets("the emulator", &emulator.stderr(), &[]);
    run.stderr
        .lines()
        .find_map(|l| l.strip_prefix("appid: "))
        .unwrap_or("?")
        .to_string()
}

#[test]
fn certificate_credential() {
    let emulator =
        EmulatorProcess::start(&["--identity", "certificate", "--token-lifetime", "60s"]);
    let appid = run(&emulator, "certificate");
    assert_eq!(appid, emulator.var("AZURE_CLIENT_ID"));
}

#[test]
fn workload_identity_credential() {
    let emulator = EmulatorProcess::start(&[
        "--identity",
        "workload-identity",
        "--token-lifetime",
        "60s",
        "--federated-token-lifetime",
        "5s",
    ]);
    let appid = run(&emulator, "workload-identity");
    assert_eq!(appid, emulator.var("AZURE_CLIENT_ID"));
    // After the first service-account token has expired, a new process signs in with the
    // rotated file.
    std::thread::sleep(std::time::Duration::from_secs(6));
    run(&emulator, "workload-identity");
}

#[test]
fn user_assigned_managed_identity_credential() {
    let emulator = EmulatorProcess::start(&[
        "--identity",
        "user-assigned-identity",
        "--token-lifetime",
        "60s",
    ]);
    let appid = run(&emulator, "user-assigned");
    assert_eq!(appid, emulator.var("AZURE_REDIS_CLIENTID"));
}
