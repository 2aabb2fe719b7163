//! Microsoft's Python SDK's `DeviceCodeCredential` (azure-identity + MSAL) against
//! `redis-entra emulator`: the device code flow as Entra speaks it (OIDC metadata, the
//! `devicecode` endpoint, polling, an `id_token` and `client_info` MSAL accepts), then redis-py
//! with the user's token. The emulator approves the code for its user by itself.
//!
//! The interpreter is `$REDIS_ENTRA_PYTHON`, else `<workspace>/target/pyenv/bin/python`, made by
//! `scripts/setup --with-python`. Without it this test fails: it does not skip.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{
    assert_no_secrets, clean_command, run_with_timeout, EmulatorProcess, COMMAND_TIMEOUT,
};

const DEVICE_CODE: &str = r#"
import base64
import json
import os
import sys

import redis
from azure.identity import DeviceCodeCredential

SCOPE = "https://redis.azure.com/.default"
prompts = []


def prompt(verification_uri, user_code, expires_on):
    prompts.append(user_code)
    print(f"prompt: open {verification_uri} and enter {user_code}", file=sys.stderr)


cred = DeviceCodeCredential(
    tenant_id=os.environ["AZURE_TENANT_ID"],
    authority=os.environ["AZURE_AUTHORITY_HOST"],
    disable_instance_discovery=True,
    prompt_callback=prompt,
    timeout=60,
)
token = cred.get_token(SCOPE)
if len(prompts) != 1:
    raise SystemExit(f"expected one prompt, got {prompts!r}")
payload = token.token.split(".")[1]
payload += "=" * (-len(payload) % 4)
claims = json.loads(base64.urlsafe_b64decode(payload))
print(f"upn: {claims.get('upn')}", file=sys.stderr)
r = redis.Redis(
    host=os.environ["AZURE_REDIS_HOST"],
    port=int(os.environ["AZURE_REDIS_PORT"]),
    ssl=True,
    username=claims["oid"],
    password=token.token,
    decode_responses=True,
)
r.set("Az:device", "code")
if r.get("Az:device") != "code":
    raise SystemExit("GET Az:device did not return 'code'")
r.close()
print("OK")
"#;

/// The interpreter with azure-identity and redis-py; fails the test if there is none.
fn python() -> PathBuf {
    let hint = "run `bash scripts/setup --with-python`, or set REDIS_ENTRA_PYTHON to a Python that has azure-identity and redis";
    let path = match std::env::var_os("REDIS_ENTRA_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => common::workspace_root().join("target/pyenv/bin/python"),
    };
    assert!(path.exists(), "no Python at {}: {hint}", path.display());
    let mut check = Command::new(&path);
    check.args(["-c", "import azure.identity, redis"]);
    let run = run_with_timeout(check, COMMAND_TIMEOUT);
    assert!(run.status.success(), "{}: {hint}", run.stderr.trim());
    path
}

#[test]
fn python_device_code_credential_signs_in_the_emulator_user() {
    let emulator = EmulatorProcess::start(&["--token-lifetime", "120s"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("device_code.py");
    std::fs::write(&script, DEVICE_CODE).unwrap();
    let mut cmd = clean_command(python(), &emulator.vars);
    cmd.arg(&script);
    let run = run_with_timeout(cmd, COMMAND_TIMEOUT);
    run.assert_success("the Python DeviceCodeCredential");
    assert_eq!(run.stdout.trim(), "OK", "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("upn: developer@emulator.localhost"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/oauth2/v2.0/devicecode/verify"),
        "{}",
        run.stderr
    );
    assert_no_secrets("the emulator", &emulator.stderr(), &[]);
}
