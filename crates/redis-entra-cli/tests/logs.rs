//! The command at `--log trace`, signed in every way the emulator's env file describes, running a
//! write, a read, `token` and `doctor`: nothing it prints (stdout and stderr, its own logs and
//! those of azure_identity, redis-rs and rustls) holds a token, secret, key, identity header or
//! federated token.

mod common;

use common::{assert_no_secrets, redis_entra, Cache};
use redis_entra_emulator::IdentityKind;

/// Every value in `vars` that is a secret, plus what a file-valued variable points to when that
/// file holds one (the federated token).
fn secrets_of(vars: &[(String, String)]) -> Vec<String> {
    let mut secrets = Vec::new();
    for (name, value) in vars {
        let secret_name = [
            "SECRET",
            "KEY",
            "PASSWORD",
            "IDENTITY_HEADER",
            "CONNECTIONSTRING",
        ]
        .iter()
        .any(|s| name.contains(s));
        if secret_name && !value.is_empty() {
            secrets.push(value.clone());
        }
        if name == "AZURE_FEDERATED_TOKEN_FILE" {
            let token = std::fs::read_to_string(value).expect("the federated token file");
            secrets.push(token.trim().to_string());
        }
    }
    secrets
}

#[test]
fn trace_output_of_every_sign_in_kind_holds_no_secret() {
    let cache = Cache::start();
    let emulator = cache.emulator();
    let mut key_seen = false;
    for kind in [
        IdentityKind::ServicePrincipal,
        IdentityKind::ManagedIdentity,
        IdentityKind::UserAssignedIdentity,
        IdentityKind::WorkloadIdentity,
        IdentityKind::Certificate,
        IdentityKind::AccessKey,
    ] {
        let vars = emulator.env_for(kind);
        let mut secrets = secrets_of(&vars);
        secrets.push(cache.secret());
        secrets.push(emulator.primary_key());
        key_seen |= vars
            .iter()
            .any(|(_, v)| v.contains(&emulator.primary_key()));
        let name = kind.name();
        for args in [
            &["--log", "trace", "SET", "logs:k", name][..],
            &["--log", "trace", "GET", "logs:k"][..],
            &["--log", "trace", "token"][..],
            &["--log", "trace", "doctor"][..],
        ] {
            let run = redis_entra(args, &vars);
            let what = format!("redis-entra {} ({name})", args[2..].join(" "));
            if kind == IdentityKind::AccessKey && args[2] == "token" {
                // An access key is no Entra token: refused as a usage error, with the reason.
                assert_eq!(run.code(), Some(2), "{what}: {}", run.all());
                assert!(run.stderr.contains("access key"), "{what}: {}", run.stderr);
            } else {
                run.assert_success(&what);
                let all = run.all();
                assert!(
                    all.contains("TRACE") || all.contains("DEBUG"),
                    "{what} logged at trace level:\n{all}"
                );
            }
            let all = run.all();
            assert_no_secrets(&what, &all, &secrets);
        }
        let got = redis_entra(&["GET", "logs:k"], &vars);
        assert_eq!(got.stdout.trim().trim_matches('"'), name, "{}", got.all());
    }
    assert!(key_seen, "the access-key kind carries the key");
}
