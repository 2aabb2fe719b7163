//! `redis-entra -c` against `redis-entra emulator --cluster 3`: one-shot commands and the
//! prompt follow `-MOVED`/`-ASK` to every node; without `-c` a key on another node prints the
//! redirection, as redis-cli does.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;

use common::{clean_command, redis_entra, run_with_timeout, EmulatorProcess, COMMAND_TIMEOUT};

/// `localhost:PORT` of a `MOVED SLOT localhost:PORT` reply, if `text` is one.
fn moved_to(text: &str) -> Option<String> {
    let rest = text.trim().strip_prefix("(error) ").unwrap_or(text.trim());
    let mut words = rest.strip_prefix("MOVED ")?.split_whitespace();
    words.next()?;
    words.next().map(str::to_string)
}

#[test]
fn dash_c_follows_redirections_to_every_node_and_without_it_moved_is_printed() {
    let emulator = EmulatorProcess::start(&["--cluster", "3"]);
    let vars = emulator.vars.clone();
    let seed = format!("localhost:{}", emulator.var("AZURE_REDIS_PORT"));
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();

    for key in &keys {
        let value = format!("v{key}");
        let run = redis_entra(&["-c", "SET", key, &value], &vars);
        run.assert_success(&format!("-c SET {key}"));
        assert_eq!(run.stdout.trim(), "OK", "{run:?}");
    }
    for key in &keys {
        let run = redis_entra(&["-c", "GET", key], &vars);
        run.assert_success(&format!("-c GET {key}"));
        assert_eq!(run.stdout.trim(), format!("v{key}"), "{run:?}");
    }

    // Without -c: the seed node answers for its own keys and prints MOVED (exit 1) for the
    // others (exit 0, as redis-cli without -e), which name the other two nodes; so the keys above
    // covered all three.
    let mut nodes = BTreeSet::new();
    let mut moved_once = false;
    for key in &keys {
        let run = redis_entra(&["GET", key], &vars);
        match moved_to(&run.stdout) {
            Some(node) => {
                assert_eq!(run.status.code(), Some(0), "{run:?}");
                nodes.insert(node);
                moved_once = true;
            }
            None => {
                run.assert_success(&format!("GET {key} on the seed"));
                assert_eq!(run.stdout.trim(), format!("v{key}"), "{run:?}");
                nodes.insert(seed.clone());
            }
        }
    }
    assert!(moved_once);
    assert_eq!(nodes.len(), 3, "keys on every node: {nodes:?}");

    // The prompt with -c (stdin not a terminal: commands line by line).
    let mut cmd = clean_command(common::bin(), &vars);
    cmd.arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the prompt starts");
    {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        for key in &keys {
            writeln!(stdin, "SET {key} p{key}").expect("the prompt reads");
            writeln!(stdin, "GET {key}").expect("the prompt reads");
        }
    }
    let out = child.wait_with_output().expect("the prompt ends");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let expected: Vec<String> = keys
        .iter()
        .flat_map(|k| ["OK".to_string(), format!("p{k}")])
        .collect();
    assert_eq!(
        lines,
        expected,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A cluster has database 0 only: -c -n 1 is refused with a clear error.
    let run = run_with_timeout(
        {
            let mut cmd = clean_command(common::bin(), &vars);
            cmd.args(["-c", "-n", "1", "PING"]);
            cmd
        },
        COMMAND_TIMEOUT,
    );
    assert!(!run.status.success());
    assert!(run.stderr.contains("only database 0"), "{run:?}");
}
