//! `redis-entra emulator --profile managed-redis` (Azure Managed Redis): the port it takes,
//! its cluster policies (`--cluster-policy oss|enterprise|non-clustered`), its unsupported
//! commands, and
//! clear errors for the flags that do not go together.

mod common;

use common::{clean_command, redis_entra, run_with_timeout, EmulatorProcess, COMMAND_TIMEOUT};

/// A port that was free a moment ago (the tests never rely on 10000 being free).
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `redis-entra emulator ARGS` that must fail before starting: its exit code and stderr.
fn emulator_refuses(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = clean_command(common::bin(), &[]);
    cmd.arg("emulator").args(args);
    let run = run_with_timeout(cmd, COMMAND_TIMEOUT);
    assert!(!run.status.success(), "{args:?} started: {run:?}");
    assert!(
        !run.stdout.contains("ready"),
        "{args:?} became ready: {run:?}"
    );
    (run.code(), run.stderr)
}

#[test]
fn oss_cluster_policy_serves_a_cluster_on_the_given_port() {
    let port = free_port();
    let emulator = EmulatorProcess::start(&[
        "--profile",
        "managed-redis",
        "--cluster-policy",
        "oss",
        "--cluster",
        "2",
        "--port",
        &port.to_string(),
    ]);
    assert_eq!(emulator.var("AZURE_REDIS_PORT"), port.to_string());
    assert!(
        emulator.stderr().contains("(managed-redis)"),
        "{}",
        emulator.stderr()
    );
    let info = redis_entra(&["CLUSTER", "INFO"], &emulator.vars).ok("CLUSTER INFO");
    assert!(info.stdout.contains("cluster_known_nodes:2"), "{info:?}");
    // Azure Managed Redis' own unsupported command.
    let swapdb = redis_entra(&["SWAPDB", "0", "1"], &emulator.vars);
    assert!(
        swapdb.stdout.contains("unknown command 'SWAPDB'"),
        "{swapdb:?}"
    );
}

#[test]
fn non_clustered_policy_serves_one_node() {
    let port = free_port();
    let emulator = EmulatorProcess::start(&[
        "--profile",
        "managed-redis",
        "--cluster-policy",
        "non-clustered",
        "--port",
        &port.to_string(),
    ]);
    assert_eq!(emulator.var("AZURE_REDIS_PORT"), port.to_string());
    let set = redis_entra(&["SET", "k", "v"], &emulator.vars).ok("SET");
    assert_eq!(set.stdout.trim(), "OK");
    let info = redis_entra(&["CLUSTER", "INFO"], &emulator.vars);
    assert!(info.stdout.contains("cluster support disabled"), "{info:?}");
}

#[test]
fn enterprise_policy_serves_one_endpoint_with_the_proxys_slot_rules() {
    let port = free_port();
    let emulator = EmulatorProcess::start(&[
        "--profile",
        "managed-redis",
        "--cluster-policy",
        "enterprise",
        "--port",
        &port.to_string(),
    ]);
    assert_eq!(emulator.var("AZURE_REDIS_PORT"), port.to_string());
    let mset = redis_entra(
        &["MSET", "user:1", "a", "user:1:books", "b"],
        &emulator.vars,
    )
    .ok("MSET");
    assert_eq!(mset.stdout.trim(), "OK");
    let sunion = redis_entra(&["SUNION", "user:1", "user:1:books"], &emulator.vars);
    assert!(
        sunion
            .stdout
            .contains("CROSSSLOT Keys in request don't hash to the same slot"),
        "{sunion:?}"
    );
    let tagged = redis_entra(&["SUNION", "{u}:1", "{u}:2"], &emulator.vars).ok("SUNION");
    assert!(!tagged.stdout.contains("CROSSSLOT"), "{tagged:?}");
}

#[test]
fn flags_that_do_not_go_together_are_clear_errors() {
    let (_, stderr) = emulator_refuses(&["--cluster-policy", "oss"]);
    assert!(stderr.contains("add --profile managed-redis"), "{stderr}");

    let (code, stderr) = emulator_refuses(&[
        "--profile",
        "managed-redis",
        "--cluster-policy",
        "enterprize",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("use oss, enterprise or non-clustered"),
        "{stderr}"
    );

    let (_, stderr) = emulator_refuses(&[
        "--profile",
        "managed-redis",
        "--cluster-policy",
        "enterprise",
        "--cluster",
        "3",
    ]);
    assert!(stderr.contains("has one endpoint"), "{stderr}");

    let (_, stderr) = emulator_refuses(&[
        "--profile",
        "managed-redis",
        "--cluster-policy",
        "non-clustered",
        "--cluster",
        "2",
    ]);
    assert!(stderr.contains("leave out --cluster 2"), "{stderr}");

    let (code, stderr) = emulator_refuses(&["--profile", "premium"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("managed-redis"), "{stderr}");
}

/// Without `--port`, the profile takes 10000; when that is taken (here by this test, or by
/// whatever already holds it), it says so and what to do, instead of starting elsewhere.
#[test]
fn taken_port_10000_is_a_clear_error() {
    let _held = std::net::TcpListener::bind(("127.0.0.1", 10000));
    let (_, stderr) = emulator_refuses(&["--profile", "managed-redis"]);
    assert!(stderr.contains("port 10000"), "{stderr}");
    assert!(stderr.contains("--port N"), "{stderr}");
}
