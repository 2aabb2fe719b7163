//! Redis' own Python client, redis-py, with Redis' own Entra ID package, `redis-entraid`, keeps a
//! RESP3 subscription through `redis-entra emulator`'s gateway across token rotations: the
//! emulator's tokens live 5 s and its gateway closes any connection whose token has expired
//! (plus its 2 s clock skew) unless it was re-`AUTH`ed in place. Numbered messages are published
//! every 50 ms for 22 s (over 4 token lifetimes); the subscriber must get each exactly once, in
//! order, on the connection it started with.
//!
//! The credential is redis-entraid's `create_from_default_azure_credential`: azure-identity's
//! `DefaultAzureCredential` reaches the emulator's App Service managed-identity endpoint from
//! the env file's `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, offline. The token manager renews at
//! half a token's life (`expiration_refresh_ratio=0.5`), about every 2.5 s.
//!
//! Two tests, one script:
//! - `plain`: the way redis-py documents pub/sub, a listener thread calling `get_message`. This
//!   is what redis-entraid's README promises works on RESP3.
//! - `serialized`: the same, except the listener reads while holding the `PubSub`'s own lock (the
//!   one redis-py's re-`AUTH` takes) and messages are taken by a RESP3 `push_handler_func`, so
//!   redis-py's re-`AUTH` never races the listener for the socket and a message that arrives
//!   before the `AUTH` reply is not dropped. This isolates the gateway: any loss or close here is
//!   the gateway's.
//!
//! The interpreter is `$REDIS_ENTRA_PYTHON`, else `<workspace>/target/pyenv/bin/python`, made by
//! `scripts/setup --with-python` (which installs redis-entraid). Without it these tests fail:
//! they do not skip.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    assert_no_secrets, clean_command, run_with_timeout, EmulatorProcess, COMMAND_TIMEOUT,
};
use serde_json::Value;

/// How long the emulator's tokens live.
const TOKEN_LIFETIME_S: u64 = 5;
/// How long the publisher publishes: over 4 token lifetimes.
const PUBLISH_FOR_S: u64 = 22;
/// How long the script may take in all.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// What the emulator logs (at debug) when it closes a connection whose token has expired.
const CLOSED_AT_EXPIRY: &str = "token expired: closing the connection";

/// `argv`: mode (`plain` or `serialized`), seconds to publish for, seconds between messages.
/// Prints one JSON object on stdout.
const SCRIPT: &str = r#"
import json
import logging
import os
import sys
import threading
import time
import traceback

import redis
from redis.auth.token_manager import RetryPolicy, TokenManagerConfig
from redis_entraid.cred_provider import create_from_default_azure_credential

SCOPES = ("https://redis.azure.com/.default",)
CHANNEL = "Az:news"


class Logged(logging.Handler):
    """Keeps what redis-py, redis-entraid and asyncio log at WARNING or above (failed renewals)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        text = f"{record.name}: {record.getMessage()}"
        e = record.exc_info[1] if record.exc_info else None
        while e is not None:
            # The chain, innermost last: e.g. ConnectionError <- TokenRenewalErr <- EventException.
            text += f" | {type(e).__name__}: {e}"
            e = e.__cause__ or e.__context__
        self.records.append(text)


class Reconnects:
    """Counts the subscriber connection's connects after the first (redis-py resubscribes then)."""

    def __init__(self):
        self.count = 0

    def on_connect(self, connection):
        self.count += 1


def provider(renewals):
    cp = create_from_default_azure_credential(
        SCOPES,
        token_manager_config=TokenManagerConfig(
            expiration_refresh_ratio=0.5,
            lower_refresh_bound_millis=0,
            token_request_execution_timeout_in_ms=1000,
            retry_policy=RetryPolicy(max_attempts=3, delay_in_ms=100),
        ),
    )
    # redis-py registers its re-AUTH callback with on_next; count the tokens it is handed.
    register = cp.on_next

    def on_next(callback):
        def counted(token):
            renewals.append(token.get_expires_at_ms())
            return callback(token)

        register(counted)

    cp.on_next = on_next
    return cp


def client(cp):
    return redis.Redis(
        host=os.environ["AZURE_REDIS_HOST"],
        port=int(os.environ["AZURE_REDIS_PORT"]),
        ssl=True,
        credential_provider=cp,
        protocol=3,
        decode_responses=True,
    )


def main(mode, duration, interval):
    logged = Logged()
    logging.getLogger().addHandler(logged)

    sub_renewals, pub_renewals = [], []
    sub = client(provider(sub_renewals))
    # The publisher has its own provider: a provider holds one re-AUTH callback, the last
    # client's to register.
    pub = client(provider(pub_renewals))
    publisher_id_before = pub.client_id()

    received, others, failures = [], [], []
    end = threading.Event()

    def take(kind, channel, data):
        if kind == "message" and channel == CHANNEL:
            if data == "end":
                end.set()
            else:
                received.append(int(data))
        else:
            others.append(f"{kind} {channel} {data}")

    if mode == "plain":
        p = sub.pubsub()
    else:
        def on_push(response):
            take(str(response[0]), response[1], response[2])

        p = sub.pubsub(push_handler_func=on_push)
    p.subscribe(CHANNEL)
    if mode == "plain":
        first = p.get_message(timeout=10)
        if not first or first["type"] != "subscribe":
            raise SystemExit(f"no subscribe confirmation: {first!r}")
    else:
        with p._lock:
            deadline = time.time() + 10
            while not others and time.time() < deadline:
                p.get_message(timeout=0.1)
        if others != [f"subscribe {CHANNEL} 1"]:
            raise SystemExit(f"no subscribe confirmation: {others!r}")
        others.clear()
    protocol = str(p.connection.get_protocol())
    reconnects = Reconnects()
    # redis-py keeps connect callbacks as weak bound methods; `reconnects` lives to the end.
    p.connection.register_connect_callback(reconnects.on_connect)
    pubsub_clients_before = [c["id"] for c in pub.client_list(_type="pubsub")]

    def listen():
        try:
            while not end.is_set():
                if mode == "plain":
                    m = p.get_message(timeout=1.0)
                    if m is not None:
                        take(m["type"], m["channel"], m["data"])
                else:
                    # The lock redis-py's pub/sub re-AUTH holds while it sends AUTH and reads
                    # the reply.
                    with p._lock:
                        p.get_message(timeout=0.05)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            failures.append(f"subscriber: {type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}")

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()

    started = time.time()
    published, unheard = 0, []
    try:
        while time.time() - started < duration:
            n = published + 1
            if pub.publish(CHANNEL, str(n)) != 1:
                unheard.append(n)
            published = n
            time.sleep(interval)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        failures.append(f"publisher: {type(e).__name__}: {e}")
    pubsub_clients_after = [c["id"] for c in pub.client_list(_type="pubsub")]
    publisher_id_after = pub.client_id()
    pub.publish(CHANNEL, "end")
    deadline = time.time() + 20
    while listener.is_alive() and not end.is_set() and time.time() < deadline:
        end.wait(timeout=0.2)
    end.set()
    listener.join(timeout=20)

    # Closing may connect again (redis-py re-AUTHs a released connection): count before it.
    subscriber_reconnects = reconnects.count
    for what, close in (("pubsub", p.close), ("subscriber", sub.close), ("publisher", pub.close)):
        try:
            close()
        except Exception as e:  # noqa: BLE001 - reported, not raised
            failures.append(f"closing the {what}: {type(e).__name__}: {e}")

    expected = list(range(1, published + 1))
    print(
        json.dumps(
            {
                "protocol": protocol,
                "elapsed_s": round(time.time() - started, 2),
                "published": published,
                "received": len(received),
                "lost": len(set(expected) - set(received)),
                "duplicates": len(received) - len(set(received)),
                "in_order": received == sorted(received),
                "exactly_expected": received == expected,
                "unheard_publishes": len(unheard),
                "subscriber_reconnects": subscriber_reconnects,
                "pubsub_clients_before": pubsub_clients_before,
                "pubsub_clients_after": pubsub_clients_after,
                "publisher_id_before": publisher_id_before,
                "publisher_id_after": publisher_id_after,
                "subscriber_renewals": len(set(sub_renewals)),
                "publisher_renewals": len(set(pub_renewals)),
                "other_messages": others[:10],
                "failures": failures,
                "logged": logged.records[:5],
                "listener_finished": not listener.is_alive(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
"#;

/// The interpreter with redis-entraid (and so azure-identity and redis-py); fails the test if
/// there is none.
fn python() -> PathBuf {
    let hint = "run `bash scripts/setup --with-python` (it installs redis-entraid into target/pyenv), or set REDIS_ENTRA_PYTHON to a Python that has it";
    let path = match std::env::var_os("REDIS_ENTRA_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => common::workspace_root().join("target/pyenv/bin/python"),
    };
    assert!(path.exists(), "no Python at {}: {hint}", path.display());
    let mut check = Command::new(&path);
    check.args(["-c", "import azure.identity, redis, redis_entraid"]);
    let run = run_with_timeout(check, COMMAND_TIMEOUT);
    assert!(
        run.status.success(),
        "{} cannot import azure.identity, redis and redis_entraid ({}): {hint}",
        path.display(),
        run.stderr.trim()
    );
    path
}

/// The installed versions of redis-py and redis-entraid, for failure messages.
fn versions(python: &PathBuf) -> String {
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "from importlib.metadata import version as v; print(f\"redis {v('redis')}, redis-entraid {v('redis-entraid')}, azure-identity {v('azure-identity')}\")",
    ]);
    run_with_timeout(cmd, COMMAND_TIMEOUT)
        .stdout
        .trim()
        .to_string()
}

fn subscription_survives_token_rotations(mode: &str) {
    let lifetime = format!("{TOKEN_LIFETIME_S}s");
    // Debug logging makes the gateway say when it closes a connection at expiry.
    let emulator = EmulatorProcess::start(&[
        "--identity",
        "managed-identity",
        "--token-lifetime",
        &lifetime,
        "--log",
        "debug",
    ]);
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("entraid_pubsub.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut cmd = clean_command(&python, &emulator.vars);
    cmd.arg(&script)
        .arg(mode)
        .arg(PUBLISH_FOR_S.to_string())
        .arg("0.05");
    let started = Instant::now();
    let run = run_with_timeout(cmd, SCRIPT_TIMEOUT);
    let took = started.elapsed();
    run.assert_success(&format!("the redis-entraid pub/sub script ({mode})"));
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "the script ({mode}) printed no JSON ({e}):\n{}\n{}",
            run.stdout, run.stderr
        )
    });
    let emulator_log = emulator.stderr();
    let closed_at_expiry = emulator_log.matches(CLOSED_AT_EXPIRY).count();
    let context = format!(
        "{} ({mode}); took {took:?}; the script reported:\n{}\nits stderr:\n{}\nthe gateway closed {closed_at_expiry} connection(s) at token expiry",
        versions(&python),
        serde_json::to_string_pretty(&report).unwrap(),
        run.stderr
    );
    let int = |name: &str| {
        report[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} in the report: {context}"))
    };

    assert_eq!(report["protocol"], "3", "not RESP3: {context}");
    let published = int("published");
    assert!(
        published >= 4 * TOKEN_LIFETIME_S * 10,
        "only {published} messages published in {PUBLISH_FOR_S} s: {context}"
    );
    assert_eq!(int("lost"), 0, "messages were lost: {context}");
    assert_eq!(int("duplicates"), 0, "messages came twice: {context}");
    assert_eq!(
        report["exactly_expected"], true,
        "the subscriber did not get 1..={published} exactly once, in order: {context}"
    );
    assert_eq!(
        int("unheard_publishes"),
        0,
        "some PUBLISH reached no subscriber (the subscriber was away): {context}"
    );
    assert_eq!(
        report["failures"],
        Value::Array(vec![]),
        "the subscriber or publisher failed: {context}"
    );
    assert_eq!(
        report["other_messages"],
        Value::Array(vec![]),
        "the subscriber saw more than the numbered messages (resubscribed?): {context}"
    );
    // Kept the connection it started with: not closed at expiry, no reconnect.
    assert_eq!(
        int("subscriber_reconnects"),
        0,
        "the subscriber reconnected: {context}"
    );
    let before = &report["pubsub_clients_before"];
    assert_eq!(
        before.as_array().map(Vec::len),
        Some(1),
        "expected one pub/sub client at the start: {context}"
    );
    assert_eq!(
        &report["pubsub_clients_after"], before,
        "the subscriber's CLIENT ID changed: {context}"
    );
    assert_eq!(
        report["publisher_id_after"], report["publisher_id_before"],
        "the publisher's CLIENT ID changed: {context}"
    );
    assert_eq!(
        closed_at_expiry, 0,
        "the gateway closed a connection whose token had expired: {context}"
    );
    // It was renewed in place, not merely lucky: tokens live 5 s and the run lasted over 20 s.
    assert!(
        int("subscriber_renewals") >= 4,
        "the subscriber's connection was re-AUTHed with fewer than 4 new tokens: {context}"
    );
    assert!(
        emulator_log.matches("re-authenticated").count() >= 8,
        "the gateway saw fewer than 8 in-place re-AUTHs: {context}"
    );
    // redis-py's own race, not the gateway's: its renewal timer may read the subscriber's
    // connection while the listener task has it (`'NoneType' object has no attribute
    // 'readline'` inside `TokenManager._renew_token`), seen under load on this 2-core machine.
    // The next renewal succeeds (the assertions above hold: nothing closed at expiry, no
    // reconnect, no message lost). One such entry is tolerated; anything else fails.
    let logged: Vec<&str> = report["logged"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (redis_py_race, other): (Vec<&str>, Vec<&str>) = logged.iter().partition(|l| {
        l.contains("TokenManager._renew_token")
            && l.contains("'NoneType' object has no attribute 'readline'")
    });
    assert!(
        other.is_empty() && redis_py_race.len() <= 1,
        "redis-py or redis-entraid logged warnings or errors: {context}"
    );
    assert_no_secrets("the emulator", &emulator_log, &[]);
    eprintln!(
        "{mode}: {published} messages over {PUBLISH_FOR_S} s, {} subscriber renewals, took {took:?}",
        int("subscriber_renewals")
    );
}

/// The way redis-py documents pub/sub: a thread calling `get_message`. redis-entraid's README
/// says RESP3 pub/sub connections are re-authenticated.
///
/// Fails with redis-py 5.3.1, 6.4.0 and 8.1.0 (redis-entraid 1.2.2), as it does against a plain
/// redis-server: redis-py's pub/sub re-`AUTH` (`RegisterReAuthForPubSub._re_auth`) sends `AUTH` and
/// reads its reply under `PubSub._lock`, which `get_message` does not take, so the listener can
/// read the `+OK` (and die on it in `handle_message`: `IndexError`) while the re-`AUTH` reads, and
/// drops, the published messages until the gateway closes the connection at expiry.
#[test]
#[ignore = "redis-py bug (pub/sub re-AUTH races get_message; cf. redis/redis-py#3444): run with --ignored to check a newer redis-py"]
fn resp3_subscription_survives_token_rotations() {
    subscription_survives_token_rotations("plain");
}

/// The listener never races redis-py's re-`AUTH` for the socket, and pushes read by the
/// re-`AUTH` reach the application: what is left to go wrong is the gateway's.
#[test]
fn resp3_subscription_survives_token_rotations_with_serialized_reads() {
    subscription_survives_token_rotations("serialized");
}
