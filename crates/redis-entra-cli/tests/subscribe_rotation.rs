//! `redis-entra SUBSCRIBE` across token rotations on RESP2 (`-2`: a handover to a new
//! connection before each expiry) and RESP3 (`-3`: `AUTH` in place): numbered messages
//! published over several 3-second token lifetimes are each printed exactly once.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{clean_command, signal};
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::{Emulator, EmulatorConfig};

/// How long any one step may take.
const WAIT: Duration = Duration::from_secs(60);

/// A child whose stdout lines arrive on a channel, killed when dropped.
struct Lines {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Lines {
    fn spawn(args: &[&str], vars: &[(String, String)], stdin: Stdio) -> Lines {
        let mut cmd = clean_command(common::bin(), vars);
        cmd.args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("redis-entra starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, lines }
    }

    fn next(&self, what: &str) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn streams_every_message_once_across_rotations(protocol: &str) {
    let lifetime = Duration::from_secs(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let emulator = rt
        .block_on(Emulator::start(EmulatorConfig {
            token_lifetime: lifetime,
            ..EmulatorConfig::default()
        }))
        .expect("the emulator starts");
    let vars = emulator.env();
    let started = std::time::Instant::now();

    let subscriber = Lines::spawn(
        &["--log", "error", protocol, "SUBSCRIBE", "news"],
        &vars,
        Stdio::null(),
    );
    // Raw output (stdout is a pipe): `subscribe`, `news`, `1`.
    for expected in ["subscribe", "news", "1"] {
        assert_eq!(subscriber.next("the confirmation"), expected);
    }

    // The publisher: the prompt, one PUBLISH per line; each answers how many received it.
    let mut publisher = Lines::spawn(&["--log", "error"], &vars, Stdio::piped());
    let mut to_publisher = publisher.child.stdin.take().expect("stdin is piped");
    let mut publish = |message: &str| -> String {
        writeln!(to_publisher, "PUBLISH news {message}").expect("the prompt reads");
        publisher.next("a PUBLISH reply")
    };

    // Publish numbered messages until more than three lifetimes have passed since the
    // subscriber's first token (so it outlived three tokens: had it not renewed them, the
    // gateway would have closed it, which the end checks) and the emulator issued nine more
    // tokens (three or more rotations for each process; the publisher's first may be among
    // them).
    let issued = || Stats::get(&emulator.stats().tokens_issued);
    let start = issued();
    let mut sent = 0usize;
    let mut handovers = 0usize;
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while issued() < start + 9 || started.elapsed() < lifetime * 3 + Duration::from_secs(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the tokens do not rotate"
        );
        let receivers = publish(&format!("m{sent}"));
        // 2 while a RESP2 handover has both connections subscribed.
        assert!(
            matches!(receivers.as_str(), "1" | "2"),
            "message m{sent} reached {receivers:?} subscribers"
        );
        if receivers == "2" && last != "2" {
            handovers += 1;
        }
        last = receivers;
        sent += 1;
    }
    assert_ne!(publish("end"), "0");

    // Read the subscriber's output up to `end`, then stop it with Ctrl-C.
    let mut received = Vec::new();
    loop {
        let kind = subscriber.next("a message");
        let channel = subscriber.next("a message's channel");
        let payload = subscriber.next("a message's payload");
        assert_eq!((kind.as_str(), channel.as_str()), ("message", "news"));
        if payload == "end" {
            break;
        }
        received.push(payload);
    }
    let expected: Vec<String> = (0..sent).map(|i| format!("m{i}")).collect();
    assert_eq!(received, expected, "every message once, in order");

    let mut subscriber = subscriber;
    assert!(signal(subscriber.child.id(), "INT"));
    let status = subscriber.child.wait().expect("the subscriber exits");
    assert_eq!(status.code(), Some(0), "Ctrl-C exits 0");
    let mut stderr = String::new();
    if let Some(mut pipe) = subscriber.child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert!(
        !stderr.contains("connection lost"),
        "no connection should be lost:\n{stderr}"
    );
    if protocol == "-2" {
        assert!(
            handovers >= 1,
            "RESP2 renews a subscription by handing over"
        );
    }
    // Nothing was closed by the gateway for an expired token: the subscription moved on first.
    assert_eq!(Stats::get(&emulator.stats().closed_at_expiry), 0);
    eprintln!(
        "{protocol}: {sent} messages over {} tokens, {handovers} handovers seen by PUBLISH",
        issued() - start
    );
    drop(to_publisher);
    drop(publisher);
    rt.block_on(emulator.shutdown());
}

#[test]
fn resp2_subscription_prints_every_message_once_across_token_rotations() {
    streams_every_message_once_across_rotations("-2");
}

#[test]
fn resp3_subscription_prints_every_message_once_across_token_rotations() {
    streams_every_message_once_across_rotations("-3");
}
