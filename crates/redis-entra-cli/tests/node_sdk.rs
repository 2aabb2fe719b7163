//! Microsoft's Node SDK (`@azure/identity`) and node-redis (`redis`) against
//! `redis-entra emulator --identity service-principal`, configured by nothing but the emulator's
//! env file: `ClientSecretCredential` with the env file's authority host gets a token for
//! `https://redis.azure.com/.default`, the username is the token's `oid` (base64url payload), and
//! node-redis connects over TLS (`rediss://`) trusting the emulator's CA through
//! `NODE_EXTRA_CA_CERTS` alone (no CA option in the code).
//!
//! The packages are looked up in `<workspace>/target/node/node_modules` (through `NODE_PATH`),
//! made by `scripts/setup --with-python`. Without them this test fails: it does not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_no_secrets, clean_command, run_with_timeout, EmulatorProcess, Run};

/// The hello world. Prints the token's `oid` and `appid` on stderr and `OK` on stdout.
const HELLO_WORLD: &str = r#"'use strict';
const { ClientSecretCredential } = require('@azure/identity');
const { createClient } = require('redis');

const SCOPE = 'https://redis.azure.com/.default';

function claims(token) {
  // The payload is base64url without padding (RFC 7515).
  const payload = token.split('.')[1];
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
}

async function main() {
  const env = process.env;
  const credential = new ClientSecretCredential(
    env.AZURE_TENANT_ID,
    env.AZURE_CLIENT_ID,
    env.AZURE_CLIENT_SECRET,
    { authorityHost: env.AZURE_AUTHORITY_HOST, disableInstanceDiscovery: true },
  );
  const { token } = await credential.getToken(SCOPE);
  const c = claims(token);
  console.error(`oid: ${c.oid}`);
  console.error(`appid: ${c.appid}`);
  const client = createClient({
    url: `rediss://${env.AZURE_REDIS_HOST}:${env.AZURE_REDIS_PORT}`,
    username: c.oid,
    password: token,
  });
  client.on('error', (e) => console.error(`redis client error: ${e}`));
  await client.connect();
  await client.set('Az:key1', 'value1');
  const got = await client.get('Az:key1');
  if (got !== 'value1') {
    throw new Error(`GET Az:key1 returned ${JSON.stringify(got)}, expected "value1"`);
  }
  await client.quit();
  console.log('OK');
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
"#;

/// `<workspace>/target/node/node_modules` with both packages; fails the test if it is missing.
fn node_modules() -> PathBuf {
    let hint = "run `bash scripts/setup --with-python` (it installs @azure/identity and redis with `npm install --prefix target/node`)";
    let dir = common::workspace_root().join("target/node/node_modules");
    for package in ["@azure/identity", "redis"] {
        let manifest = dir.join(package).join("package.json");
        assert!(
            manifest.exists(),
            "the Node SDK test needs {package}, but {} does not exist: {hint}",
            manifest.display()
        );
    }
    dir
}

/// Runs the hello world with exactly `vars` plus `NODE_PATH` (and PATH and HOME).
fn hello_world(node_path: &Path, vars: &[(String, String)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hello_world.js");
    std::fs::write(&script, HELLO_WORLD).unwrap();
    let mut vars = vars.to_vec();
    vars.push(("NODE_PATH".into(), node_path.display().to_string()));
    let mut cmd = clean_command("node", &vars);
    cmd.arg(&script);
    run_with_timeout(cmd, common::COMMAND_TIMEOUT)
}

fn stderr_field(run: &Run, name: &str) -> String {
    run.stderr
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("?")
        .to_string()
}

#[test]
fn client_secret_credential_and_node_redis() {
    let node_path = node_modules();
    let mut version = Command::new("node");
    version.arg("--version");
    let version = run_with_timeout(version, common::COMMAND_TIMEOUT);
    version.assert_success("node --version (Node.js is needed for the Node SDK test)");

    let emulator =
        EmulatorProcess::start(&["--identity", "service-principal", "--token-lifetime", "60s"]);
    let run = hello_world(&node_path, &emulator.vars);
    run.assert_success("the Node hello world (@azure/identity + node-redis)");
    assert_eq!(
        run.stdout.trim(),
        "OK",
        "the Node hello world printed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    // The token is the service principal's, and its oid is a GUID (the gateway took it as the
    // username).
    assert_eq!(
        stderr_field(&run, "appid"),
        emulator.var("AZURE_CLIENT_ID"),
        "the token is not the service principal's:\n{}",
        run.stderr
    );
    let oid = stderr_field(&run, "oid");
    assert!(
        oid.len() == 36 && oid.matches('-').count() == 4,
        "the token's oid is not a GUID: {oid:?}"
    );
    // What node-redis wrote, another client reads.
    let get = common::redis_entra(&["GET", "Az:key1"], &emulator.vars);
    get.assert_success("redis-entra GET Az:key1");
    assert_eq!(get.stdout.trim(), "value1", "{}", get.all());

    let secret = emulator.var("AZURE_CLIENT_SECRET");
    assert_no_secrets(
        "the Node hello world",
        &run.all(),
        std::slice::from_ref(&secret),
    );
    assert_no_secrets("the emulator", &emulator.stderr(), &[secret]);

    // Trust comes from NODE_EXTRA_CA_CERTS: without it, the same script cannot connect.
    let without_ca: Vec<(String, String)> = emulator
        .vars
        .iter()
        .filter(|(k, _)| k != "NODE_EXTRA_CA_CERTS")
        .cloned()
        .collect();
    let untrusted = hello_world(&node_path, &without_ca);
    assert!(
        !untrusted.status.success() && !untrusted.stdout.contains("OK"),
        "the Node hello world succeeded without NODE_EXTRA_CA_CERTS:\n{}",
        untrusted.all()
    );
}
