//! `redis-entra doctor` against the emulator: a healthy setup passes every check; broken
//! setups made with the emulator are named by the right check, with the right cause and exit
//! code.

mod common;

use common::{redis_entra, Cache, Run};

/// The doctor's line for a check (`ok    TLS: …`), and the lines under it.
fn check_block<'a>(stdout: &'a str, name: &str) -> (&'a str, String) {
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.split_whitespace().nth(1) == Some(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} check in:\n{stdout}"));
    let rest = lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("      "))
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    (lines[at], rest)
}

fn assert_status(stdout: &str, name: &str, status: &str) -> String {
    let (line, rest) = check_block(stdout, name);
    assert!(
        line.starts_with(&format!("{status} ")),
        "{name} should be {status}:\n{stdout}"
    );
    format!("{line}\n{rest}")
}

const CHECKS: [&str; 9] = [
    "configuration",
    "DNS",
    "TCP",
    "TLS",
    "token",
    "claims",
    "AUTH",
    "read",
    "write",
];

fn assert_no_secrets(run: &Run, cache: &Cache) {
    let secret = cache.secret();
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !secret.is_empty() && !text.contains(&secret),
            "the doctor printed the client secret:\n{text}"
        );
        assert!(!text.contains("eyJ"), "the doctor printed a token:\n{text}");
    }
}

#[test]
fn a_healthy_setup_passes_every_check() {
    let cache = Cache::start();
    let run = redis_entra(&["doctor"], &cache.env_with(&[]));
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout, run.stderr);
    for name in CHECKS {
        assert_status(&run.stdout, name, "ok");
    }
    // In order.
    let positions: Vec<usize> = CHECKS
        .iter()
        .map(|name| run.stdout.find(&format!(" {name}: ")).expect("present"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", run.stdout);
    assert!(run.stdout.contains("all checks passed"), "{}", run.stdout);
    let config = assert_status(&run.stdout, "configuration", "ok");
    assert!(config.contains("service principal"), "{config}");
    assert!(
        config.contains("AZURE_REDIS_CLIENTSECRET=(set, hidden)"),
        "{config}"
    );
    let claims = assert_status(&run.stdout, "claims", "ok");
    let oid = &cache.emulator().service_principal().object_id;
    assert!(claims.contains(oid.as_str()), "{claims}");
    assert!(claims.contains("https://redis.azure.com"), "{claims}");
    assert_no_secrets(&run, &cache);

    let run = redis_entra(&["doctor", "--read-only"], &cache.env_with(&[]));
    assert_eq!(run.code(), Some(0), "{}", run.stdout);
    assert_status(&run.stdout, "write", "skip");
}

#[test]
fn a_wrong_secret_fails_the_token_check() {
    let cache = Cache::start();
    let vars = cache.env_with(&[
        ("AZURE_CLIENT_SECRET", Some("Xyz8Q~not.the.secret")),
        ("AZURE_REDIS_CLIENTSECRET", Some("Xyz8Q~not.the.secret")),
    ]);
    let run = redis_entra(&["doctor"], &vars);
    assert_eq!(run.code(), Some(3), "{}", run.stdout);
    for name in ["configuration", "DNS", "TCP", "TLS"] {
        assert_status(&run.stdout, name, "ok");
    }
    let token = assert_status(&run.stdout, "token", "FAIL");
    assert!(token.contains("AADSTS7000215"), "{token}");
    assert!(token.contains("fix:"), "{token}");
    assert!(token.contains("AZURE_REDIS_CLIENTSECRET"), "{token}");
    assert!(token.contains("secret's ID, not its value"), "{token}");
    for name in ["claims", "AUTH", "read", "write"] {
        assert_status(&run.stdout, name, "skip");
    }
    assert!(
        !run.stdout.contains("Xyz8Q~not.the.secret"),
        "{}",
        run.stdout
    );
    assert_no_secrets(&run, &cache);
}

#[test]
fn an_untrusted_ca_fails_the_tls_check() {
    let cache = Cache::start();
    let vars = cache.env_with(&[
        ("SSL_CERT_FILE", None),
        ("REQUESTS_CA_BUNDLE", None),
        ("NODE_EXTRA_CA_CERTS", None),
    ]);
    let run = redis_entra(&["doctor"], &vars);
    assert_eq!(run.code(), Some(4), "{}", run.stdout);
    assert_status(&run.stdout, "TCP", "ok");
    let tls = assert_status(&run.stdout, "TLS", "FAIL");
    assert!(tls.contains("does not trust"), "{tls}");
    assert!(tls.contains("--cacert"), "{tls}");
    assert!(tls.contains("SSL_CERT_FILE"), "{tls}");
    assert_status(&run.stdout, "AUTH", "skip");

    // --cacert is the fix it names.
    let ca = cache.emulator().ca_file();
    let run = redis_entra(
        &["--cacert", ca.to_str().expect("utf-8 path"), "doctor"],
        &vars,
    );
    assert_eq!(run.code(), Some(0), "{}", run.stdout);
}

#[test]
fn a_closed_port_fails_the_tcp_check() {
    let cache = Cache::start();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("an address").port()
    };
    let vars = cache.env_with(&[("AZURE_REDIS_PORT", Some(&closed.to_string()))]);
    let run = redis_entra(&["doctor"], &vars);
    assert_eq!(run.code(), Some(4), "{}", run.stdout);
    assert_status(&run.stdout, "DNS", "ok");
    let tcp = assert_status(&run.stdout, "TCP", "FAIL");
    assert!(tcp.contains(&closed.to_string()), "{tcp}");
    assert!(tcp.contains("6380"), "{tcp}");
    assert_status(&run.stdout, "TLS", "skip");
    // The token does not depend on the cache: it is still checked.
    assert_status(&run.stdout, "token", "ok");
}

#[test]
fn no_secret_and_no_managed_identity_explains_managed_identity() {
    let cache = Cache::start();
    let vars = cache.env_with(&[
        ("AZURE_CLIENT_SECRET", None),
        ("AZURE_REDIS_CLIENTSECRET", None),
        ("AZURE_CLIENT_ID", None),
        ("AZURE_REDIS_CLIENTID", None),
        ("AZURE_REDIS_TENANTID", None),
        ("IDENTITY_ENDPOINT", None),
        ("IDENTITY_HEADER", None),
    ]);
    let run = redis_entra(&["doctor"], &vars);
    assert_eq!(run.code(), Some(3), "{}", run.stdout);
    let config = assert_status(&run.stdout, "configuration", "ok");
    assert!(config.contains("managed identity"), "{config}");
    let token = assert_status(&run.stdout, "token", "FAIL");
    assert!(
        token.contains("managed identity works only on Azure"),
        "{token}"
    );
    assert!(token.contains("service principal"), "{token}");
}

#[test]
fn no_access_policy_fails_auth_and_names_the_policy() {
    let cache = Cache::start();
    let oid = cache.emulator().service_principal().object_id.clone();
    cache.emulator().directory().unassign(&oid);
    let run = redis_entra(&["doctor"], &cache.env_with(&[]));
    assert_eq!(run.code(), Some(3), "{}", run.stdout);
    for name in ["TLS", "token", "claims"] {
        assert_status(&run.stdout, name, "ok");
    }
    let auth = assert_status(&run.stdout, "AUTH", "FAIL");
    assert!(auth.contains("WRONGPASS"), "{auth}");
    assert!(auth.contains("access policy"), "{auth}");
    assert!(auth.contains("Data Access Configuration"), "{auth}");
    assert!(auth.contains(&oid), "{auth}");
    assert!(
        auth.contains("Enable Microsoft Entra Authentication"),
        "{auth}"
    );
    assert_status(&run.stdout, "read", "skip");
    assert_no_secrets(&run, &cache);
}

#[test]
fn a_bad_variable_fails_the_configuration_check() {
    let cache = Cache::start();
    let run = redis_entra(
        &["doctor"],
        &cache.env_with(&[("AZURE_REDIS_PORT", Some("abc"))]),
    );
    assert_eq!(run.code(), Some(2), "{}", run.stdout);
    let config = assert_status(&run.stdout, "configuration", "FAIL");
    assert!(config.contains("AZURE_REDIS_PORT"), "{config}");
    assert_status(&run.stdout, "DNS", "skip");
    // The token is still checked: it needs no cache.
    assert_status(&run.stdout, "token", "ok");
}

#[test]
fn an_access_key_is_checked_with_auth_default_and_a_disabled_key_is_named() {
    let cache = Cache::start();
    let emulator = cache.emulator();
    let key = emulator.primary_key();
    let vars = emulator.env_for(redis_entra_emulator::IdentityKind::AccessKey);
    let run = redis_entra(&["doctor"], &vars);
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout, run.stderr);
    let config = assert_status(&run.stdout, "configuration", "ok");
    assert!(config.contains("an access key"), "{config}");
    assert!(config.contains("recommends Microsoft Entra ID"), "{config}");
    for name in ["token", "claims"] {
        assert_status(&run.stdout, name, "skip");
    }
    for name in ["DNS", "TCP", "TLS", "read", "write"] {
        assert_status(&run.stdout, name, "ok");
    }
    let auth = assert_status(&run.stdout, "AUTH", "ok");
    assert!(auth.contains("AUTH default <key> accepted"), "{auth}");
    assert!(!run.all().contains(&key), "the doctor printed the key");

    // Keys disabled on the cache: AUTH fails, and the fix says where to look.
    emulator.set_access_keys_enabled(false);
    let run = redis_entra(&["doctor"], &vars);
    assert_eq!(run.code(), Some(3), "{}", run.stdout);
    let auth = assert_status(&run.stdout, "AUTH", "FAIL");
    assert!(auth.contains("access keys are disabled"), "{auth}");
    assert!(auth.contains("Access keys"), "{auth}");
    assert!(!run.all().contains(&key), "the doctor printed the key");
}
