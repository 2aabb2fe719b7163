//! Redis' own Python client, redis-py, with Redis' own Entra ID package, `redis-entraid`
//! (azure-identity's `DefaultAzureCredential`, here a client secret from the emulator's
//! environment), against Valkey with the module: it signs in as the `oid`, and keeps one
//! connection working across token rotations (tokens living 3 s, renewed at half their life and
//! re-`AUTH`ed in place) with no command failed and no connection closed at expiry.
//!
//! The interpreter is `$REDIS_ENTRA_PYTHON`, else `<workspace>/target/pyenv/bin/python`, made by
//! `scripts/setup --with-python`. Without it this test fails: it does not skip.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use support::Server;

const SCRIPT: &str = r#"
import json, sys, time
import redis
from redis.auth.token_manager import RetryPolicy, TokenManagerConfig
from redis_entraid.cred_provider import create_from_default_azure_credential

port, seconds = int(sys.argv[1]), float(sys.argv[2])
import os
cp = create_from_default_azure_credential(
    ("https://redis.azure.com/.default",),
    authority=os.environ["AZURE_AUTHORITY_HOST"],
    app_kwargs={"disable_instance_discovery": True},
    token_manager_config=TokenManagerConfig(
        expiration_refresh_ratio=0.5,
        lower_refresh_bound_millis=0,
        token_request_execution_timeout_in_ms=2000,
        retry_policy=RetryPolicy(max_attempts=5, delay_in_ms=100),
    ),
)
r = redis.Redis(host="127.0.0.1", port=port, credential_provider=cp, protocol=3,
                decode_responses=True, single_connection_client=True)
whoami = r.acl_whoami()
first_id = r.client_id()
ok = failed = 0
i = 0
end = time.time() + seconds
while time.time() < end:
    i += 1
    try:
        r.set("py:k", i)
        assert r.get("py:k") == str(i)
        ok += 1
    except Exception as e:
        failed += 1
        print(repr(e), file=sys.stderr)
    time.sleep(0.05)
print(json.dumps({"whoami": whoami, "ok": ok, "failed": failed,
                  "same_connection": r.client_id() == first_id}))
"#;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("REDIS_ENTRA_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
    assert!(
        p.exists(),
        "no Python environment at {}: run scripts/setup --with-python",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_py_with_redis_entraid_keeps_one_connection_across_rotations() -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3)).await;
    let server = Server::for_emulator(&emulator, &[])?;
    let oid = emulator.service_principal().object_id.clone();
    server.create_user(&oid)?;
    let mut cmd = Command::new(python());
    cmd.env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("REDIS_ENTRA_IMDS_ADDR", "127.0.0.1:9")
        .envs(emulator.env())
        .args(["-c", SCRIPT, &server.port.to_string(), "10"])
        .stdin(Stdio::null());
    let port = server.port;
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running Python")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "the script failed (port {port}): {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the script's output: {stderr}"))?;
    assert_eq!(report["whoami"], oid.as_str());
    assert_eq!(report["failed"], 0, "{stderr}");
    assert!(report["ok"].as_u64().unwrap_or(0) > 50, "{report}");
    assert_eq!(report["same_connection"], true, "{report}");
    ensure!(
        server.stat("accepted")? >= 4,
        "fewer than 3 re-AUTHs: {report}"
    );
    assert_eq!(server.stat("expired_closes")?, 0);
    assert_eq!(server.stat("refused")?, 0);
    Ok(())
}
