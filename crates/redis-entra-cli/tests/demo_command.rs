//! `redis-entra demo` (DESIGN.md §4.1): the project's main job, end to end, with tokens short
//! enough that the long-running client must re-authenticate several times.

mod common;

use std::time::Duration;

use common::{assert_no_secrets, clean_command, run_with_timeout};

#[test]
fn demo_survives_three_token_lifetimes() {
    let mut cmd = clean_command(common::bin(), &[]);
    cmd.args([
        "demo",
        "--token-lifetime",
        "5s",
        "--lifetimes",
        "3",
        "--interval",
        "100ms",
    ]);
    // 3 lifetimes of 5 s plus 2 s run, then start-up and shut-down: well under 3 minutes.
    let run = run_with_timeout(cmd, Duration::from_secs(180));
    run.assert_success("redis-entra demo");
    let out = &run.stdout;

    assert!(
        out.lines().any(|l| l.trim() == "result: OK"),
        "the demo does not print `result: OK`:\n{out}"
    );
    let reauthenticated = out
        .lines()
        .filter(|l| l.contains("re-authenticated"))
        .count();
    assert!(
        reauthenticated >= 3,
        "the demo re-authenticated {reauthenticated} times in 3 token lifetimes, wanted >= 3:\n{out}"
    );
    // The hello world step ran and read back what it wrote.
    assert!(
        out.contains("GET Az:key1 -> value1"),
        "the hello world step is missing:\n{out}"
    );
    // The summary says no command failed.
    let summary = out
        .lines()
        .find(|l| l.starts_with("commands OK / failed:"))
        .unwrap_or_else(|| panic!("the demo prints no `commands OK / failed:` line:\n{out}"));
    assert!(
        summary.trim_end().ends_with("/ 0"),
        "commands failed during the demo: {summary}\n{out}"
    );
    let ok: u64 = summary
        .trim_start_matches("commands OK / failed:")
        .split('/')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read the OK count in {summary:?}"));
    assert!(ok > 0, "no command succeeded: {summary}");
    // Azure closes a connection whose token expired; the demo shows the gateway does too.
    assert!(
        out.contains("closed by the server when its token expired"),
        "the never re-authenticated control connection was not closed at expiry:\n{out}"
    );
    assert_no_secrets("redis-entra demo", &run.all(), &[]);
}
