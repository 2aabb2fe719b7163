//! The examples, run as a user runs them: against the emulator, with nothing but its env file's
//! variables.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use redis_entra_emulator::IdentityKind;

use common::*;

/// `target/<profile>/examples/<name>`, which `cargo test` builds before running the tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run through `cargo test`",
        path.display()
    );
    path
}

fn run(name: &str, env: &[(String, String)], extra: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(example(name));
    cmd.env_clear();
    for key in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.envs(extra.iter().copied());
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_world_and_service_connector_with_each_identity_kind() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    for kind in [
        IdentityKind::ServicePrincipal,
        IdentityKind::ManagedIdentity,
    ] {
        let env = emulator.env_for(kind);
        let (ok, out) = run("hello_world", &env, &[]);
        assert!(
            ok && out.contains("value1"),
            "hello_world with {kind:?}: {out}"
        );
        let (ok, out) = run("service_connector", &env, &[]);
        assert!(
            ok && out.contains("GET Az:key1 -> value1"),
            "service_connector with {kind:?}: {out}"
        );
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn re_authentication_runs_across_rotations() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let env = emulator.env_for(IdentityKind::ServicePrincipal);
    let (ok, out) = run("re_authentication", &env, &[("REDIS_ENTRA_RUN_SECS", "8")]);
    assert!(ok, "{out}");
    assert!(
        out.matches("connection re-authenticated").count() >= 3,
        "{out}"
    );
    assert!(out.contains(" 0 failed"), "{out}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn service_connector_reports_a_bad_setting_with_exit_code_2() {
    let (ok, out) = run(
        "service_connector",
        &[
            ("AZURE_REDIS_HOST".into(), "localhost".into()),
            ("AZURE_REDIS_PORT".into(), "abc".into()),
        ],
        &[],
    );
    assert!(!ok);
    assert!(out.contains("AZURE_REDIS_PORT"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn service_connector_connects_with_every_secret_form_and_a_user_assigned_identity() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let port = emulator.gateway_addr().port();
    let key = emulator.primary_key();
    let ca = emulator.ca_file().display().to_string();
    let base = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut v = vec![("SSL_CERT_FILE".to_string(), ca.clone())];
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        v
    };
    let forms = [
        // The emulator's own access-key env file (rediss:// connection string).
        emulator.env_for(IdentityKind::AccessKey),
        // .NET's StackExchange.Redis form.
        base(&[(
            "AZURE_REDIS_CONNECTIONSTRING",
            format!(
                "localhost:{port},password={key},ssl=True,abortConnect=False,defaultDatabase=0"
            ),
        )]),
        // Java/Python/Go/Node: the key as Azure gives it, unencoded.
        base(&[(
            "AZURE_REDIS_CONNECTIONSTRING",
            format!("rediss://:{key}@localhost:{port}/0"),
        )]),
        // Other/None: separate variables.
        base(&[
            ("AZURE_REDIS_HOST", "localhost".into()),
            ("AZURE_REDIS_PORT", port.to_string()),
            ("AZURE_REDIS_PASSWORD", key.clone()),
            ("AZURE_REDIS_SSL", "true".into()),
            ("AZURE_REDIS_DATABASE", "0".into()),
        ]),
    ];
    for env in forms {
        let (ok, out) = run("service_connector", &env, &[]);
        assert!(
            ok && out.contains("with access key") && out.contains("-> value1"),
            "{env:?}: {out}"
        );
    }
    // A user-assigned managed identity, chosen by AZURE_REDIS_CLIENTID.
    let uami = emulator
        .directory()
        .create_managed_identity("redis-entra-uami", true);
    emulator
        .assign_policy(
            &uami.object_id,
            redis_entra_emulator::directory::AccessPolicy::DataOwner,
            None,
        )
        .await
        .unwrap();
    let mut env = emulator.env_for(IdentityKind::ManagedIdentity);
    env.push(("AZURE_REDIS_CLIENTID".into(), uami.client_id.clone()));
    let (ok, out) = run("service_connector", &env, &[]);
    assert!(
        ok && out.contains("user-assigned managed identity") && out.contains("-> value1"),
        "{out}"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_your_types_runs_across_rotations() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let env = emulator.env_for(IdentityKind::ServicePrincipal);
    let (ok, out) = run("keep_your_types", &env, &[("REDIS_ENTRA_RUN_SECS", "8")]);
    assert!(ok, "{out}");
    assert!(out.contains("GET Az:key1 -> value1"), "{out}");
    // Two connections, each re-authenticated by its guard on each of the ~3 new tokens.
    assert!(out.matches("re-authenticated").count() >= 4, "{out}");
    assert!(out.contains(", 0 failed"), "{out}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_adoption_path_runs_against_the_emulator() {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let env = emulator.env_for(IdentityKind::ServicePrincipal);
    for (name, expected) in [
        (
            "pools",
            vec![
                "r2d2: GET Az:pool -> r2d2",
                "bb8: GET Az:pool -> bb8",
                "deadpool: GET Az:pool -> deadpool",
            ],
        ),
        (
            "pubsub",
            vec!["published to 1 subscriber(s)", "Az:news -> hello"],
        ),
        ("sync", vec!["GET Az:sync -> value1"]),
        ("fred", vec!["GET Az:fred -> value1"]),
    ] {
        let (ok, out) = run(name, &env, &[]);
        assert!(ok, "{name}: {out}");
        for line in expected {
            assert!(out.contains(line), "{name}: expected {line:?} in {out}");
        }
    }
    emulator.shutdown().await;
}
