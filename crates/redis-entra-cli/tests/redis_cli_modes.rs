//! redis-cli 7's long-running modes side by side: `--bigkeys`, `--memkeys`, `--latency`,
//! `--latency-history`, `--stat`. Their figures move (timings, counters), so what is compared
//! is what cannot move: the keys found, the sizes, the layout of each line.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::side::SideBySide;

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    lines
}

fn populate(s: &SideBySide) {
    s.entra(&["MSET", "s1", "x", "s2", "xxxxxxxxxx"]).ok("MSET");
    s.entra(&["RPUSH", "l1", "a", "b", "c"]).ok("RPUSH");
    s.entra(&["SADD", "set1", "a", "b"]).ok("SADD");
    s.entra(&["HSET", "h1", "f", "v", "g", "w"]).ok("HSET");
    s.entra(&["ZADD", "z1", "1", "a"]).ok("ZADD");
    s.entra(&["XADD", "x1", "*", "f", "v"]).ok("XADD");
}

#[test]
fn bigkeys_and_memkeys_find_the_same_keys() {
    let s = SideBySide::start();
    populate(&s);
    for args in [
        &["--bigkeys"][..],
        &["--memkeys"][..],
        &["--memkeys-samples", "5"][..],
        &["--bigkeys", "--pattern", "s*"][..],
        &["-3", "--bigkeys"][..],
    ] {
        let cli = s.cli(args);
        let entra = s.entra(args);
        assert_eq!(cli.code(), entra.code(), "{args:?}");
        // The summary, whatever the order SCAN returned the keys in (the "found so far" lines
        // before it depend on that order, which Redis' incremental rehashing can change
        // between two runs).
        let summary = |t: &str| {
            t.split_once("-------- summary -------")
                .map(|(_, s)| s.to_string())
        };
        assert!(summary(&entra.stdout).is_some(), "{}", entra.stdout);
        let header = |t: &str| t.lines().take(5).collect::<Vec<_>>().join("\n");
        assert_eq!(header(&cli.stdout), header(&entra.stdout), "{args:?}");
        assert_eq!(
            sorted_lines(&summary(&cli.stdout).unwrap_or_default()),
            sorted_lines(&summary(&entra.stdout).unwrap_or_default()),
            "{args:?}: redis-cli (left) and redis-entra (right)\n{}\n---\n{}",
            cli.stdout,
            entra.stdout
        );
        assert_eq!(cli.stderr, entra.stderr, "{args:?}");
    }
}

fn latency_line(line: &str, sep: &str) -> bool {
    let parts: Vec<&str> = line.split(sep).collect();
    parts.len() == 4
        && parts[0].parse::<u64>().is_ok()
        && parts[1].parse::<u64>().is_ok()
        && parts[2].split_once('.').is_some_and(|(_, d)| d.len() == 2)
        && parts[3].parse::<u64>().is_ok_and(|n| n > 0)
}

#[test]
fn latency_prints_one_line_when_not_on_a_terminal() {
    let s = SideBySide::start();
    for (args, sep) in [
        (&["--latency", "-i", "0.2"][..], " "),
        (&["--latency", "--csv", "-i", "0.2"][..], ","),
    ] {
        for run in [s.cli(args), s.entra(args)] {
            assert_eq!(run.code(), Some(0), "{args:?}: {}", run.all());
            let lines: Vec<&str> = run.stdout.lines().collect();
            assert_eq!(lines.len(), 1, "{args:?}: {}", run.stdout);
            assert!(latency_line(lines[0], sep), "{args:?}: {}", run.stdout);
        }
    }
    let json = s
        .entra(&["--latency", "--json", "-i", "0.2"])
        .ok("--latency --json");
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("JSON");
    assert!(v["count"].as_u64().is_some_and(|n| n > 0), "{v}");
}

/// The first `n` lines `cmd` prints, then it is killed.
fn first_lines(mut cmd: Command, n: usize) -> Vec<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("starts");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .take(n)
            .map_while(Result::ok)
            .collect();
        let _ = tx.send(lines);
    });
    let lines = rx
        .recv_timeout(common::COMMAND_TIMEOUT)
        .expect("the lines within the timeout");
    common::signal(pid, "KILL");
    let _ = child.wait();
    lines
}

#[test]
fn stat_and_latency_history_lines() {
    let s = SideBySide::start();
    populate(&s);
    let entra = |args: &[&str]| {
        let mut cmd = common::clean_command(common::bin(), &s.vars);
        cmd.args(args);
        cmd
    };
    let cli = |args: &[&str]| {
        let mut cmd = common::clean_command("redis-cli", &[]);
        cmd.args(["--tls", "--cacert"])
            .arg(s.cache.emulator().ca_file())
            .args(["-h", "localhost", "-p", &s.port().to_string()])
            .args(s.cli_auth())
            .args(args);
        cmd
    };
    let ours = first_lines(entra(&["--stat", "-i", "0.05"]), 4);
    let theirs = first_lines(cli(&["--stat", "-i", "0.05"]), 4);
    assert_eq!(ours[..2], theirs[..2], "the header");
    for line in ours[2..].iter().chain(&theirs[2..]) {
        // keys (7), memory, clients, blocked, requests (+n), connections.
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], "7", "{line}");
        assert!(fields[1].ends_with(['B', 'K', 'M']), "{line}");
        assert!(fields[5].starts_with("(+"), "{line}");
    }
    assert_eq!(ours[2].find('('), theirs[2].find('('), "columns line up");

    let ours = first_lines(entra(&["--latency-history", "--raw", "-i", "0.1"]), 30);
    let theirs = first_lines(cli(&["--latency-history", "--raw", "-i", "0.1"]), 30);
    for lines in [&ours, &theirs] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(" -- ") && l.ends_with("seconds range")),
            "{lines:?}"
        );
        assert!(latency_line(&lines[0], " "), "{lines:?}");
    }
}
