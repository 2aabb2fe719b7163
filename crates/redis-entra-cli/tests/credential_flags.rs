//! `--credential`, `--client-id` and `--tenant`: each kind signs in as the identity it names
//! (`ACL WHOAMI` answers its object id), the flags win over the variables, and a bad value or a
//! flag that does not apply is a usage error (exit 2).

mod common;

use common::{redis_entra, Cache};
use redis_entra_emulator::IdentityKind;

fn whoami(args: &[&str], vars: &[(String, String)]) -> String {
    let mut full = args.to_vec();
    full.extend(["ACL", "WHOAMI"]);
    redis_entra(&full, vars)
        .ok(&format!("{full:?}"))
        .stdout
        .trim()
        .to_string()
}

#[test]
fn each_credential_signs_in_as_its_identity() {
    let cache = Cache::start();
    let e = cache.emulator();
    let sp = e.env_for(IdentityKind::ServicePrincipal);
    let mi = e.env_for(IdentityKind::ManagedIdentity);
    let wi = e.env_for(IdentityKind::WorkloadIdentity);
    let uai = e.user_assigned_identity().client_id.clone();

    assert_eq!(
        whoami(
            &["--no-token-cache", "--credential", "service-principal"],
            &sp
        ),
        e.service_principal().object_id
    );
    assert_eq!(
        whoami(&["--credential", "managed-identity"], &mi),
        e.managed_identity().object_id
    );
    // --client-id picks the user-assigned identity, with --credential or without.
    assert_eq!(
        whoami(
            &["--credential", "managed-identity", "--client-id", &uai],
            &mi
        ),
        e.user_assigned_identity().object_id
    );
    assert_eq!(
        whoami(&["--client-id", &uai], &mi),
        e.user_assigned_identity().object_id
    );
    // The SDK's name for it works too.
    assert_eq!(
        whoami(&["--credential", "ManagedIdentityCredential"], &mi),
        e.managed_identity().object_id
    );
    assert_eq!(
        whoami(&["--credential", "workload-identity"], &wi),
        e.workload_app().object_id
    );
    // The flags win over the variables: the service principal's variables are set (its
    // secret, and its client id in AZURE_REDIS_CLIENTID), the user-assigned identity signs in.
    let mut both = sp.clone();
    both.extend(
        mi.iter()
            .filter(|(k, _)| k.starts_with("IDENTITY_"))
            .cloned(),
    );
    assert_eq!(
        whoami(
            &["--credential", "managed-identity", "--client-id", &uai],
            &both
        ),
        e.user_assigned_identity().object_id
    );
    // A user's sign-in with a device code (the emulator approves it for its user).
    let tenant = e.tenant_id().to_string();
    let run = redis_entra(
        &[
            "--credential",
            "device-code",
            "--tenant",
            &tenant,
            "ACL",
            "WHOAMI",
        ],
        &sp,
    )
    .ok("device code");
    assert_eq!(run.stdout.trim(), e.user().object_id);
}

#[test]
fn bad_values_and_flags_that_do_not_apply_exit_2() {
    let cache = Cache::start();
    let e = cache.emulator();
    let sp = e.env_for(IdentityKind::ServicePrincipal);
    let mi = e.env_for(IdentityKind::ManagedIdentity);
    for (args, vars, needle) in [
        (&["--credential", "magic", "PING"][..], &sp, "magic"),
        (
            &["--credential", "azure-cli", "--client-id", "x", "PING"][..],
            &sp,
            "--client-id does not apply",
        ),
        (
            &["--credential", "managed-identity", "--tenant", "t", "PING"][..],
            &mi,
            "--tenant does not apply",
        ),
        (
            &["--credential", "workload-identity", "PING"][..],
            &sp,
            "AZURE_FEDERATED_TOKEN_FILE",
        ),
        (
            &["--credential", "service-principal", "PING"][..],
            &mi,
            "needs the application's client id",
        ),
    ] {
        let run = redis_entra(args, vars);
        assert_eq!(run.code(), Some(2), "{args:?}: {}", run.all());
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    }
    let mut no_secret = sp.clone();
    no_secret.retain(|(k, _)| !k.ends_with("SECRET"));
    let run = redis_entra(&["--credential", "service-principal", "PING"], &no_secret);
    assert_eq!(run.code(), Some(2), "{}", run.all());
    assert!(
        run.stderr.contains("needs a secret or a certificate"),
        "{}",
        run.stderr
    );
    // A tenant that does not exist: the token request fails (exit 3), as Entra says.
    let run = redis_entra(
        &["--no-token-cache", "--tenant", "no-such-tenant", "PING"],
        &sp,
    );
    assert_eq!(run.code(), Some(3), "{}", run.all());
    let help = redis_entra(&["--help"], &[]).ok("--help");
    for text in [
        "--credential <KIND>",
        "--client-id <ID>",
        "--tenant <TENANT>",
        "AZURE_REDIS_CLIENTID",
        "AZURE_TENANT_ID",
        "managed-identity",
        "device-code",
    ] {
        assert!(
            help.stdout.contains(text),
            "--help lacks {text}:\n{}",
            help.stdout
        );
    }
}
