//! Configuration from Service Connector's variables: every row of its table parses to the right
//! sign-in, and every malformed setting is a one-line error naming the variable.

use std::collections::HashMap;

use redis_entra::config::{Auth, AzureService, RedisConfig};
use redis_entra::Protocol;

fn config(vars: &[(&str, &str)]) -> redis_entra::Result<RedisConfig> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    RedisConfig::from_vars(|name| map.get(name).cloned())
}

const HOST: &str = "mycache.redis.cache.windows.net";
const KEY: &str = "aB3/+xYz0123456789abcdefghijklmnopqrstuvwx=";

#[test]
fn system_assigned_managed_identity() {
    let c = config(&[("AZURE_REDIS_HOST", HOST)]).unwrap();
    assert_eq!(c.auth, Auth::ManagedIdentity { client_id: None });
    assert_eq!((c.host.as_str(), c.port, c.db), (HOST, 6380, 0));
    assert_eq!(c.profile.service, AzureService::CacheForRedis);
}

#[test]
fn user_assigned_managed_identity() {
    let c = config(&[("AZURE_REDIS_HOST", HOST), ("AZURE_REDIS_CLIENTID", "c1")]).unwrap();
    assert_eq!(
        c.auth,
        Auth::ManagedIdentity {
            client_id: Some("c1".into())
        }
    );
}

#[test]
fn service_principal() {
    let c = config(&[
        ("AZURE_REDIS_HOST", HOST),
        ("AZURE_REDIS_CLIENTID", "c1"),
        ("AZURE_REDIS_CLIENTSECRET", "s3cr3t"),
        ("AZURE_REDIS_TENANTID", "t1"),
    ])
    .unwrap();
    assert_eq!(
        c.auth,
        Auth::ClientSecret {
            tenant_id: "t1".into(),
            client_id: "c1".into(),
            secret: "s3cr3t".into()
        }
    );
    assert!(
        !format!("{c:?}").contains("s3cr3t"),
        "Debug shows the secret"
    );
}

#[test]
fn workload_identity() {
    let c = config(&[
        ("AZURE_REDIS_HOST", HOST),
        ("AZURE_REDIS_CLIENTID", "c1"),
        ("AZURE_TENANT_ID", "t1"),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            "/var/run/secrets/azure/tokens/azure-identity-token",
        ),
    ])
    .unwrap();
    assert!(
        matches!(c.auth, Auth::WorkloadIdentity { .. }),
        "{:?}",
        c.auth
    );
}

#[test]
fn secret_as_each_client_type_gets_it() {
    // .NET
    let c = config(&[(
        "AZURE_REDIS_CONNECTIONSTRING",
        &format!("{HOST}:6380,password={KEY},ssl=True,abortConnect=False,defaultDatabase=0"),
    )])
    .unwrap();
    assert_eq!(c.auth, Auth::AccessKey { key: KEY.into() });
    assert_eq!((c.host.as_str(), c.port, c.db), (HOST, 6380, 0));
    // Java, Python, Go, Node: the key as Azure gives it, '/' and '+' and '=' included.
    let c = config(&[(
        "AZURE_REDIS_CONNECTIONSTRING",
        &format!("rediss://:{KEY}@{HOST}:6380/2"),
    )])
    .unwrap();
    assert_eq!(c.auth, Auth::AccessKey { key: KEY.into() });
    assert_eq!((c.port, c.db), (6380, 2));
    // … and percent-encoded.
    let encoded = KEY
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D");
    let c = config(&[(
        "AZURE_REDIS_CONNECTIONSTRING",
        &format!("rediss://:{encoded}@{HOST}:6380/0"),
    )])
    .unwrap();
    assert_eq!(c.auth, Auth::AccessKey { key: KEY.into() });
    // Other / None: separate variables.
    let c = config(&[
        ("AZURE_REDIS_HOST", HOST),
        ("AZURE_REDIS_PORT", "6380"),
        ("AZURE_REDIS_DATABASE", "3"),
        ("AZURE_REDIS_PASSWORD", KEY),
        ("AZURE_REDIS_SSL", "true"),
    ])
    .unwrap();
    assert_eq!(c.auth, Auth::AccessKey { key: KEY.into() });
    assert_eq!(c.db, 3);
    assert!(!format!("{c:?}").contains(KEY), "Debug shows the key");
}

#[test]
fn managed_redis_profile_from_the_host() {
    let c = config(&[("AZURE_REDIS_HOST", "r1.westeurope.redis.azure.net")]).unwrap();
    assert_eq!((c.port, c.protocol), (10000, Protocol::Resp3));
    let c = config(&[("AZURE_REDIS_HOST", "c1.redis.cache.chinacloudapi.cn")]).unwrap();
    assert_eq!(
        c.profile.cloud.authority_host(),
        "https://login.chinacloudapi.cn"
    );
    let c = config(&[
        ("AZURE_REDIS_HOST", "localhost"),
        ("AZURE_REDIS_PORT", "12345"),
    ])
    .unwrap();
    assert_eq!(c.port, 12345);
}

#[test]
fn sdk_variables_when_service_connector_s_are_absent() {
    let c = config(&[
        ("AZURE_REDIS_HOST", HOST),
        ("AZURE_CLIENT_ID", "c2"),
        ("AZURE_CLIENT_SECRET", "x"),
        ("AZURE_TENANT_ID", "t2"),
    ])
    .unwrap();
    assert!(matches!(c.auth, Auth::ClientSecret { ref client_id, .. } if client_id == "c2"));
    let c = config(&[("AZURE_REDIS_HOST", HOST), ("AZURE_CLIENT_ID", "c3")]).unwrap();
    assert_eq!(
        c.auth,
        Auth::ManagedIdentity {
            client_id: Some("c3".into())
        }
    );
}

/// (variables, the variable the error must name), from `fixtures/malformed_env.tsv`.
fn malformed() -> Vec<(Vec<(String, String)>, String)> {
    include_str!("fixtures/malformed_env.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let mut cols = line.split('\t');
            let name = cols.next().unwrap().to_string();
            let vars = cols
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            (vars, name)
        })
        .collect()
}

#[test]
fn malformed_settings_are_one_line_errors_naming_the_variable() {
    let cases = malformed();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for (vars, names) in cases {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let result = std::panic::catch_unwind(|| RedisConfig::from_vars(|n| map.get(n).cloned()));
        let result = result.unwrap_or_else(|_| panic!("{vars:?} panicked"));
        let err = match result {
            Ok(c) => panic!("{vars:?} was accepted as {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(names.as_str()),
            "{vars:?}: {err:?} does not name {names}"
        );
        assert!(!err.contains('\n'), "{vars:?}: not one line: {err:?}");
    }
}

#[test]
fn errors_never_echo_a_key_or_secret() {
    for vars in [
        vec![(
            "AZURE_REDIS_CONNECTIONSTRING",
            "host:6380,password=SuperSecretKey1,ssl=Maybe",
        )],
        vec![(
            "AZURE_REDIS_CONNECTIONSTRING",
            "rediss://:SuperSecretKey1@host:port/0",
        )],
        vec![
            ("AZURE_REDIS_HOST", HOST),
            ("AZURE_REDIS_CLIENTSECRET", "SuperSecretKey1"),
        ],
        vec![
            ("AZURE_REDIS_HOST", HOST),
            ("AZURE_REDIS_PASSWORD", "SuperSecretKey1"),
            ("AZURE_REDIS_CLIENTID", "c"),
        ],
    ] {
        let err = config(&vars).unwrap_err().to_string();
        assert!(!err.contains("SuperSecretKey1"), "{err}");
    }
}

/// Found by `cargo fuzz run connection_string` (docs/RELIABILITY.md): an empty IPv6 bracket
/// (`[]`) was accepted as a host, giving a configuration with an empty host name.
#[test]
fn fuzz_regression_empty_bracketed_host_is_refused() {
    use redis_entra::config::ConnectionString;
    for s in [
        "[]",
        "[]:6380",
        "[]:6380,password=k,ssl=True",
        "rediss://:k@[]:6380/0",
        "redis://[]",
    ] {
        let e = ConnectionString::parse(s, "AZURE_REDIS_CONNECTIONSTRING")
            .expect_err(s)
            .to_string();
        assert!(e.contains("no host name"), "{s:?}: {e}");
    }
    for vars in [
        &[("AZURE_REDIS_HOST", "[]")][..],
        &[("AZURE_REDIS_HOST", "[]:6380")][..],
        &[("AZURE_REDIS_CONNECTIONSTRING", "[]:6380,password=k")][..],
    ] {
        let e = config(vars).expect_err("empty host accepted").to_string();
        assert!(e.contains("no host name"), "{vars:?}: {e}");
    }
    // A real IPv6 address in brackets still parses.
    let c = ConnectionString::parse("[::1]:6380", "X").unwrap();
    assert_eq!((c.host.as_str(), c.port), ("::1", Some(6380)));
}
