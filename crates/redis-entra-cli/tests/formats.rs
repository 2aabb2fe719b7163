//! One-shot commands against the emulator, as a script runs them: output formats (raw when
//! piped, `--no-raw`, `--json`) and the exit codes a script relies on (1 error reply with -e, 2 usage,
//! 3 authentication, 4 connection).

mod common;

use common::{redis_entra, Cache, Run};

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn replies_are_raw_when_piped_typed_with_no_raw_and_json_with_json() {
    let cache = Cache::start();
    let vars = cache.env_with(&[]);
    let run = |args: &[&str]| redis_entra(args, &vars).ok(&args.join(" "));

    // Piped stdout: raw, as redis-cli does when stdout is not a terminal.
    assert_eq!(run(&["SET", "greeting", "hello world"]).stdout, "OK\n");
    assert_eq!(run(&["GET", "greeting"]).stdout, "hello world\n");
    assert_eq!(run(&["GET", "missing"]).stdout, "\n");
    assert_eq!(run(&["RPUSH", "list", "a", "b c", "d"]).stdout, "3\n");
    assert_eq!(run(&["LRANGE", "list", "0", "-1"]).stdout, "a\nb c\nd\n");
    assert_eq!(run(&["HSET", "hash", "f1", "v1", "f2", "v2"]).stdout, "2\n");
    assert_eq!(run(&["HGETALL", "hash"]).stdout, "f1\nv1\nf2\nv2\n");
    assert_eq!(run(&["--raw", "GET", "greeting"]).stdout, "hello world\n");

    // --no-raw: redis-cli's terminal format.
    assert_eq!(
        run(&["--no-raw", "GET", "greeting"]).stdout,
        "\"hello world\"\n"
    );
    assert_eq!(run(&["--no-raw", "GET", "missing"]).stdout, "(nil)\n");
    assert_eq!(
        run(&["--no-raw", "LRANGE", "list", "0", "-1"]).stdout,
        "1) \"a\"\n2) \"b c\"\n3) \"d\"\n"
    );
    assert_eq!(
        run(&["--no-raw", "HGETALL", "hash"]).stdout,
        "1) \"f1\"\n2) \"v1\"\n3) \"f2\"\n4) \"v2\"\n"
    );
    assert_eq!(
        run(&["--no-raw", "-3", "HGETALL", "hash"]).stdout,
        "1# \"f1\" => \"v1\"\n2# \"f2\" => \"v2\"\n"
    );
    assert_eq!(
        run(&["--no-raw", "INCR", "counter"]).stdout,
        "(integer) 1\n"
    );

    // --json: strings, numbers, null, arrays, and maps as objects (RESP3 unless -2).
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = run(&all).stdout;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed {out:?}: {e}"))
    };
    assert_eq!(json(&["GET", "greeting"]), serde_json::json!("hello world"));
    assert_eq!(json(&["GET", "missing"]), serde_json::Value::Null);
    assert_eq!(json(&["INCR", "counter"]), serde_json::json!(2));
    assert_eq!(json(&["SET", "k", "v"]), serde_json::json!("OK"));
    assert_eq!(
        json(&["LRANGE", "list", "0", "-1"]),
        serde_json::json!(["a", "b c", "d"])
    );
    assert_eq!(
        json(&["HGETALL", "hash"]),
        serde_json::json!({"f1": "v1", "f2": "v2"})
    );
    assert_eq!(
        json(&["-2", "HGETALL", "hash"]),
        serde_json::json!(["f1", "v1", "f2", "v2"])
    );
    assert_eq!(
        run(&["--json", "LRANGE", "list", "0", "-1"]).stdout,
        "[\"a\",\"b c\",\"d\"]\n",
        "compact, one document per line, as redis-cli prints it"
    );
}

#[test]
fn exit_codes_tell_a_script_what_went_wrong() {
    let cache = Cache::start();
    let vars = cache.env_with(&[]);
    let secret = cache.secret();
    let no_secret = |run: &Run, what: &str| {
        for text in [&run.stdout, &run.stderr] {
            assert!(!text.contains(&secret), "{what} printed the client secret");
            assert!(!text.contains("eyJ"), "{what} printed a token:\n{text}");
        }
    };

    // An error reply, printed as redis-cli prints it: exit 0 as redis-cli, 1 with -e (the
    // comparison with redis-cli itself: tests/redis_cli_compat.rs).
    redis_entra(&["RPUSH", "alist", "x"], &vars).ok("RPUSH");
    let run = redis_entra(&["INCR", "alist"], &vars);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(run.stdout.starts_with("WRONGTYPE "), "{:?}", run.stdout);
    let run = redis_entra(&["-e", "INCR", "alist"], &vars);
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.starts_with("WRONGTYPE "), "{:?}", run.stderr);
    let run = redis_entra(&["--no-raw", "INCR", "alist"], &vars);
    assert_eq!(run.code(), Some(0));
    assert!(
        run.stdout.starts_with("(error) WRONGTYPE "),
        "{:?}",
        run.stdout
    );
    // With --json, stdout stays parseable: the error goes to stderr.
    let run = redis_entra(&["--json", "INCR", "alist"], &vars);
    assert_eq!(run.code(), Some(0));
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("(error) WRONGTYPE"), "{}", run.stderr);

    // 2: a bad variable, named in the message.
    let bad_port = cache.env_with(&[("AZURE_REDIS_PORT", Some("abc"))]);
    let run = redis_entra(&["GET", "k"], &bad_port);
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("AZURE_REDIS_PORT"), "{}", run.stderr);
    // 2: redis-cli's password flags are refused, with the reason, without echoing the value.
    for flags in [
        &["-a", "hunter2-pw"][..],
        &["--user", "bob"],
        &["--pass", "hunter2-pw"],
    ] {
        let mut args = flags.to_vec();
        args.extend(["GET", "k"]);
        let run = redis_entra(&args, &vars);
        assert_eq!(run.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("not supported"), "{}", run.stderr);
        assert!(run.stderr.contains("token"), "{}", run.stderr);
        assert!(!run.stderr.contains("hunter2-pw"), "{}", run.stderr);
    }
    // 2: AUTH typed as the command.
    let run = redis_entra(&["AUTH", "someone", "something"], &vars);
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("AUTH is not needed"), "{}", run.stderr);
    // 2: a bad flag.
    assert_eq!(
        redis_entra(&["--no-such-flag", "GET", "k"], &vars).code(),
        Some(2)
    );

    // 3: the credential cannot get a token.
    let wrong_secret = cache.env_with(&[
        ("AZURE_CLIENT_SECRET", Some("not-the-secret")),
        ("AZURE_REDIS_CLIENTSECRET", Some("not-the-secret")),
    ]);
    let run = redis_entra(&["GET", "k"], &wrong_secret);
    assert_eq!(run.code(), Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("AADSTS7000215"), "{}", run.stderr);
    assert!(run.stderr.contains("redis-entra doctor"), "{}", run.stderr);
    no_secret(&run, "a wrong secret");

    // 4: nothing listens on the port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("an address").port()
    };
    let run = redis_entra(&["-p", &closed.to_string(), "GET", "k"], &vars);
    assert_eq!(run.code(), Some(4), "{}", run.stderr);
    no_secret(&run, "a closed port");

    // -c against a cache without clustering talks to that node, as redis-cli does (the
    // cluster itself: tests/cluster_command.rs).
    redis_entra(&["SET", "k", "v"], &vars).ok("SET");
    let run = redis_entra(&["-c", "GET", "k"], &vars).ok("-c GET");
    assert_eq!(run.stdout, "v\n");
}

#[test]
fn help_documents_the_exit_codes() {
    let run = redis_entra(&["--help"], &[]).ok("--help");
    for text in [
        "Exit codes",
        "0  success",
        "1  with -e, the command returned a Redis error reply",
        "2  usage or configuration error",
        "3  authentication or token failure",
        "4  connection or TLS failure",
        "--json",
        "-c",
    ] {
        assert!(
            run.stdout.contains(text),
            "--help lacks {text:?}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn subscribe_streams_messages_like_redis_cli_across_token_expiry_until_ctrl_c() {
    // Tokens live 5 s; messages are published over more than two lifetimes.
    let cache = Cache::with_tokens_living(Duration::from_secs(5));
    let vars = cache.env_with(&[]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis-entra"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["--log", "error", "SUBSCRIBE", "news", "alerts"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("redis-entra SUBSCRIBE runs");
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<std::io::Result<Output>>();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    // Publish until the subscriber is there (PUBLISH answers how many received it), then
    // once a second for 12 s.
    let publish = |message: &str| -> String {
        redis_entra(&["PUBLISH", "news", message], &vars)
            .ok("PUBLISH")
            .stdout
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while publish("hello") != "1\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber never subscribed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..12 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            publish(&format!("m{i}")),
            "1\n",
            "message {i} reached no subscriber"
        );
    }
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status();
    let out = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(out)) => out,
        _ => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("SUBSCRIBE did not exit after Ctrl-C");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "Ctrl-C exits 0; stderr:\n{stderr}"
    );
    // Raw (stdout is a pipe): redis-cli's lines, confirmations first.
    assert!(
        stdout.starts_with("subscribe\nnews\n1\nsubscribe\nalerts\n2\n"),
        "{stdout}"
    );
    assert!(stdout.contains("message\nnews\nhello\n"), "{stdout}");
    for i in 0..12 {
        assert!(
            stdout.contains(&format!("message\nnews\nm{i}\n")),
            "message m{i} missing:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("connection lost"),
        "the subscription should be re-authenticated in place, not reconnected:\n{stderr}"
    );
}
