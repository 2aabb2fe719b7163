//! `RedisConfig::from_vars` over arbitrary variable maps built from the input.
//!
//! The input is split on `\n` into records; each record's first byte picks one of the variables
//! `from_vars` reads (or, modulo the list, a name it does not know) and the rest is its value
//! (lossily UTF-8). Invariant: no panic, whatever is set; a configuration it returns has a host
//! and a non-zero port.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use redis_entra::config::RedisConfig;

const NAMES: &[&str] = &[
    "AZURE_REDIS_CONNECTIONSTRING",
    "AZURE_REDIS_HOST",
    "AZURE_REDIS_PORT",
    "AZURE_REDIS_SSL",
    "AZURE_REDIS_DATABASE",
    "AZURE_REDIS_PASSWORD",
    "AZURE_REDIS_CLIENTID",
    "AZURE_REDIS_CLIENTSECRET",
    "AZURE_REDIS_TENANTID",
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_REDIS_PROTOCOL",
    "AZURE_REDIS_CACERT",
    "AZURE_REDIS_TLS_SERVER_NAME",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "UNKNOWN_VARIABLE",
];

fuzz_target!(|data: &[u8]| {
    let mut vars: HashMap<&'static str, String> = HashMap::new();
    for record in data.split(|&b| b == b'\n') {
        let Some((&which, value)) = record.split_first() else {
            continue;
        };
        let name = NAMES[usize::from(which) % NAMES.len()];
        vars.insert(name, String::from_utf8_lossy(value).into_owned());
    }
    if let Ok(config) = RedisConfig::from_vars(|name| vars.get(name).cloned()) {
        assert!(!config.host.is_empty(), "empty host from {vars:?}");
        assert_ne!(config.port, 0, "port 0 from {vars:?}");
        let _ = format!("{config:?}");
    }
});
