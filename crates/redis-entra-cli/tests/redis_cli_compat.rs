//! redis-cli 7's behaviour, flag by flag, side by side: the same command through `redis-cli`
//! (signed in with `--user <oid> --pass <token>`) and through `redis-entra`, against the same
//! emulator, must print the same bytes and exit with the same code.

mod common;

use common::side::SideBySide;

#[test]
fn an_error_reply_exits_0_unless_e_is_given() {
    let s = SideBySide::start();
    s.entra(&["RPUSH", "alist", "x"]).ok("RPUSH");
    for proto in ["-2", "-3"] {
        for format in [None, Some("--raw"), Some("--no-raw")] {
            let mut args = vec![proto];
            args.extend(format);
            args.extend(["INCR", "alist"]);
            let run = s.same(&args);
            assert_eq!(run.code(), Some(0), "{args:?}");
            args.insert(0, "-e");
            let run = s.same(&args);
            assert_eq!(run.code(), Some(1), "{args:?}");
        }
    }
    // An unknown command is an error reply too.
    s.same(&["NOSUCHCOMMAND", "x"]);
    s.same(&["-e", "NOSUCHCOMMAND", "x"]);
    // With -e, a reply that is no error exits 0.
    s.same(&["-e", "GET", "nokey"]);
}

#[test]
fn x_reads_the_last_argument_from_stdin() {
    let s = SideBySide::start();
    for proto in ["-2", "-3"] {
        s.same_stdin(&[proto, "-x", "SET", "fromstdin"], b"line 1\nline \"2\"\n");
        s.same(&[proto, "--no-raw", "GET", "fromstdin"]);
        // Empty input is an empty argument.
        s.same_stdin(&[proto, "-x", "ECHO"], b"");
        s.same_stdin(&[proto, "-x", "--no-raw", "ECHO"], b"a\x00b\xff");
    }
    let run = s.entra(&["GET", "fromstdin"]);
    assert_eq!(run.stdout, "line 1\nline \"2\"\n\n");
}

#[test]
fn r_repeats_and_i_waits() {
    let s = SideBySide::start();
    for proto in ["-2", "-3"] {
        let run = s.same_after(&["DEL", "n"], &[proto, "-r", "3", "INCR", "n"]);
        assert_eq!(run.stdout, "1\n2\n3\n");
        s.same_after(
            &["DEL", "n"],
            &[proto, "-r", "2", "-i", "0.01", "--no-raw", "INCR", "n"],
        );
        s.same(&[proto, "-r", "0", "PING"]);
        // An error reply each time without -e; the first one ends it with -e.
        s.entra(&["RPUSH", "alist", "x"]).ok("RPUSH");
        let run = s.same(&[proto, "-r", "2", "INCR", "alist"]);
        assert_eq!(run.code(), Some(0));
        let run = s.same(&[proto, "-r", "2", "-e", "INCR", "alist"]);
        assert_eq!(run.code(), Some(1));
    }
}

#[test]
fn csv_like_redis_cli() {
    let s = SideBySide::start();
    s.entra(&["RPUSH", "l", "a", "b,c", "d\"e", "f\ng"])
        .ok("RPUSH");
    s.entra(&["HSET", "h", "f1", "v1", "f2", "2"]).ok("HSET");
    s.entra(&["ZADD", "z", "1.5", "m1", "2", "m2"]).ok("ZADD");
    for proto in ["-2", "-3"] {
        for args in [
            vec!["GET", "nokey"],
            vec!["SET", "k", "v"],
            vec!["GET", "k"],
            vec!["INCR", "counter"],
            vec!["LRANGE", "l", "0", "-1"],
            vec!["LRANGE", "nokey", "0", "-1"],
            vec!["HGETALL", "h"],
            vec!["ZRANGE", "z", "0", "-1", "WITHSCORES"],
            vec!["ZSCORE", "z", "m1"],
            vec!["INCR", "l"],
            vec!["EXISTS", "k", "nokey"],
        ] {
            let mut full = vec![proto, "--csv"];
            full.extend(args.iter().copied());
            if args[0] == "INCR" && args[1] == "counter" {
                s.same_after(&["DEL", "counter"], &full);
            } else {
                s.same(&full);
            }
        }
        s.same(&[proto, "--csv", "-e", "INCR", "l"]);
    }
}

#[test]
fn u_takes_a_uri_and_never_prints_its_key() {
    let s = SideBySide::start();
    let port = s.port();
    for proto in ["-2", "-3"] {
        let db1 = format!("rediss://localhost:{port}/1");
        s.same(&[proto, "-u", &db1, "SET", "in-db-1", "yes"]);
        s.same(&[proto, "-n", "1", "GET", "in-db-1"]);
        s.same(&[proto, "-n", "0", "EXISTS", "in-db-1"]);
    }
    // An access key in the URI, as Service Connector writes AZURE_REDIS_CONNECTIONSTRING.
    let key = s.cache.emulator().primary_key();
    let encoded: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    // With the user named (`default`), redis-cli and redis-entra alike.
    let with_user = format!("rediss://default:{encoded}@localhost:{port}/0");
    let mut whoami = String::new();
    for extra in [&[][..], &["--no-auth-warning"][..]] {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["-u", &with_user, "ACL", "WHOAMI"]);
        let cli = s.cli_plain(&args);
        let entra = s.entra(&args);
        common::side::assert_same(&args, &cli, &entra);
        assert_eq!(cli.code(), Some(0), "{}", cli.all());
        whoami = entra.stdout;
    }
    // Service Connector's form, `rediss://:<key>@host`: redis-cli 7.0 reads the empty user as
    // a user named "" (`AUTH "" <key>`, WRONGPASS); redis-entra signs in as `default`.
    let uri = format!("rediss://:{encoded}@localhost:{port}/0");
    let cli = s.cli_plain(&["-u", &uri, "ACL", "WHOAMI"]);
    assert!(
        cli.stderr.contains("AUTH failed: WRONGPASS"),
        "{}",
        cli.all()
    );
    let entra = s
        .entra(&["-u", &uri, "ACL", "WHOAMI"])
        .ok("-u with Service Connector's form");
    assert_eq!(entra.stdout, whoami);
    // Wrong or refused URIs: exit 2, the key never printed.
    for bad in [
        format!("redis://:{encoded}@localhost:{port}"),
        format!("rediss://bob:{encoded}@localhost:{port}"),
        format!("rediss://:{encoded}%zz@localhost:{port}"),
        format!("http://:{encoded}@localhost:{port}"),
    ] {
        let run = s.entra(&["-u", &bad, "PING"]);
        assert_eq!(run.code(), Some(2), "{}", run.stderr);
        assert!(
            !run.all().contains(&key) && !run.all().contains(&encoded),
            "{}",
            run.all()
        );
    }
    let run = s.entra(&[
        "-u",
        &format!("rediss://:wrong@localhost:{port}"),
        "--log",
        "debug",
        "PING",
    ]);
    assert_eq!(run.code(), Some(3), "{}", run.all());
    assert!(!run.all().contains(":wrong@"), "{}", run.all());
}

#[test]
fn scan_lists_keys() {
    let s = SideBySide::start();
    s.entra(&["MSET", "a:1", "1", "a:2", "2", "b:1", "3", "a\"q", "4"])
        .ok("MSET");
    s.entra(&["HSET", "a:h", "f", "v"]).ok("HSET");
    // The same lines, exit code and stderr; the order of the lines may differ between two
    // runs, as Redis' incremental rehashing moves keys between two SCANs.
    let same_lines = |args: &[&str]| {
        let (cli, entra) = (s.cli(args), s.entra(args));
        let sorted = |t: &str| {
            let mut l: Vec<String> = t.lines().map(str::to_string).collect();
            l.sort();
            l
        };
        assert_eq!(
            (cli.code(), sorted(&cli.stdout), &cli.stderr),
            (entra.code(), sorted(&entra.stdout), &entra.stderr),
            "{args:?}"
        );
        assert_eq!(cli.stdout.ends_with('\n'), entra.stdout.ends_with('\n'));
    };
    for proto in ["-2", "-3"] {
        same_lines(&[proto, "--scan"]);
        same_lines(&[proto, "--scan", "--pattern", "a:*"]);
        same_lines(&[proto, "--no-raw", "--scan", "--pattern", "a*"]);
        same_lines(&[proto, "--scan", "--pattern", "nomatch*"]);
        same_lines(&[proto, "--scan", "-i", "0.01", "--pattern", "b*"]);
    }
    // --count (redis-cli 7.2) and --type (SCAN's TYPE): the same keys, in any order.
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let all = s.cli(&["--scan", "--pattern", "a*"]);
    let counted = s
        .entra(&["--scan", "--count", "1000", "--pattern", "a*"])
        .ok("--count");
    assert_eq!(sorted(&all.stdout), sorted(&counted.stdout));
    let hashes = s.entra(&["--scan", "--type", "hash"]).ok("--type");
    assert_eq!(hashes.stdout, "a:h\n");
    let bad = s.entra(&["--scan", "--count", "0"]);
    assert_eq!(bad.code(), Some(1));
    assert!(bad.stderr.starts_with("SCAN error: ERR"), "{}", bad.stderr);
}

#[test]
fn eval_runs_a_script_file() {
    let s = SideBySide::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.lua");
    std::fs::write(&script, "return {KEYS[1], KEYS[2], ARGV[1], #ARGV}\n").unwrap();
    let failing = dir.path().join("f.lua");
    std::fs::write(&failing, "return redis.call('INCR', KEYS[1])").unwrap();
    let script = script.display().to_string();
    let failing = failing.display().to_string();
    s.entra(&["RPUSH", "alist", "x"]).ok("RPUSH");
    for proto in ["-2", "-3"] {
        s.same(&[proto, "--eval", &script, "k1", "k2", ",", "a1", "a2"]);
        s.same(&[
            proto, "--no-raw", "--eval", &script, "k1", ",", "a1", ",", "a2",
        ]);
        s.same(&[proto, "--eval", &script]);
        s.same(&[proto, "--eval", &failing, "alist"]);
        s.same(&[proto, "-e", "--eval", &failing, "alist"]);
        s.same(&[proto, "-r", "2", "--eval", &script, "k", ",", "a"]);
    }
    let missing = dir.path().join("missing.lua").display().to_string();
    let run = s.same(&["--eval", &missing, "k"]);
    assert_eq!(run.code(), Some(1));
}

#[test]
fn pipe_mass_inserts() {
    let s = SideBySide::start();
    let mut resp = Vec::new();
    for i in 0..2500 {
        let (k, v) = (format!("p:{i}"), format!("v{i}"));
        resp.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
    }
    let reset = ["FLUSHDB"];
    s.entra(&reset).ok("FLUSHDB");
    let run = s.same_stdin_after(&reset, &["--pipe"], &resp);
    assert_eq!(
        run.stdout,
        "All data transferred. Waiting for the last reply...\nLast reply received from server.\nerrors: 0, replies: 2500\n"
    );
    s.same(&["DBSIZE"]);
    // Errors, inline commands, both protocols.
    let mixed = b"RPUSH l x\r\nINCR l\r\nSET a \"b c\"\r\n\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\nINCR l\nNOSUCHCOMMAND\n";
    for proto in ["-2", "-3"] {
        let run = s.same_stdin_after(&reset, &[proto, "--pipe"], mixed);
        assert_eq!(run.code(), Some(1));
        assert!(
            run.stdout.ends_with("errors: 3, replies: 6\n"),
            "{}",
            run.stdout
        );
    }
    s.same_stdin(&["--pipe"], b"");
}

#[test]
fn refused_flags_say_why_and_help_lists_them() {
    let s = SideBySide::start();
    for args in [
        &["--rdb", "/tmp/dump.rdb"][..],
        &["-s", "/tmp/redis.sock", "PING"][..],
        &["--cluster", "create", "127.0.0.1:7000"][..],
        &["--cert", "c.pem", "PING"][..],
        &["--hotkeys"][..],
    ] {
        let run = s.entra(args);
        assert_eq!(run.code(), Some(2), "{args:?}: {}", run.all());
        assert!(
            run.stderr.contains("is not supported by redis-entra: "),
            "{args:?}: {}",
            run.stderr
        );
    }
    let help = s.entra(&["--help"]).ok("--help");
    for flag in [
        "-x",
        "-r <n>",
        "--csv",
        "-u <uri>",
        "--scan",
        "--pattern",
        "--count",
        "--type",
        "--eval",
        "-t <timeout>",
        "--pipe",
        "--rdb",
        "--replica",
        "-s:",
        "--cluster",
    ] {
        assert!(
            help.stdout.contains(flag),
            "--help lacks {flag}:\n{}",
            help.stdout
        );
    }
    let bad = s.entra(&["-t", "soon", "PING"]);
    assert_eq!(bad.code(), Some(2), "{}", bad.all());
    let ok = s.entra(&["-t", "2.5", "PING"]).ok("-t 2.5");
    assert_eq!(ok.stdout, "PONG\n");
    // -t bounds the connection: a server that accepts TCP but never answers TLS (a listener
    // nobody accepts on) fails after -t, not after the default 10 s.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = silent.local_addr().expect("an address").port().to_string();
    let started = std::time::Instant::now();
    let run = s.entra(&["-h", "127.0.0.1", "-p", &port, "-t", "0.3", "PING"]);
    assert_eq!(run.code(), Some(4), "{}", run.all());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[test]
fn raw_replies_join_elements_as_redis_cli() {
    let s = SideBySide::start();
    s.entra(&["HSET", "h", "f1", "v1", "f2", "2"]).ok("HSET");
    s.entra(&["RPUSH", "l", "a", "", "b"]).ok("RPUSH");
    for proto in ["-2", "-3"] {
        for args in [
            vec!["HGETALL", "h"],
            vec!["LRANGE", "l", "0", "-1"],
            vec!["LRANGE", "nokey", "0", "-1"],
            vec!["EVAL", "return {1, {}, {2, 'x'}, false}", "0"],
            vec!["EVAL", "return {}", "0"],
            vec!["GET", "nokey"],
        ] {
            let mut full = vec![proto];
            full.extend(args.iter().copied());
            s.same(&full);
        }
    }
}

#[test]
fn tagged_stdin_delimiters_and_text_replies() {
    let s = SideBySide::start();
    s.entra(&["RPUSH", "l", "a", "b", "c"]).ok("RPUSH");
    s.entra(&["SET", "k", "v"]).ok("SET");
    for proto in ["-2", "-3"] {
        s.same_stdin(
            &[proto, "-X", "TAG", "SET", "tagged", "TAG"],
            b"from stdin\n",
        );
        s.same(&[proto, "GET", "tagged"]);
        s.same_stdin(&[proto, "-X", "NOPE", "SET", "tagged", "x"], b"ignored");
        s.same(&[proto, "-d", ",", "LRANGE", "l", "0", "-1"]);
        s.same(&[proto, "-D", "", "--raw", "GET", "k"]);
        s.same(&[proto, "-d", "|", "-D", "#", "LRANGE", "l", "0", "-1"]);
        // INFO's text as it is, in every format.
        for format in [None, Some("--no-raw"), Some("--csv"), Some("--json")] {
            let mut args = vec![proto];
            args.extend(format);
            args.extend(["INFO", "keyspace"]);
            s.same(&args);
        }
    }
}

#[test]
fn raw_output_keeps_binary_values_byte_for_byte() {
    let s = SideBySide::start();
    s.entra_stdin(&["-x", "SET", "bin"], b"a\x00b\xff\xfe\r\nz")
        .ok("SET binary");
    // redis-cli's own example: DUMP with -D "" --raw, RESTORE with -X.
    let mut cmd = common::clean_command(common::bin(), &s.vars);
    cmd.args(["-D", "", "--raw", "DUMP", "bin"]);
    let dumped = cmd.output().expect("DUMP runs");
    assert!(dumped.status.success());
    let mut cli = common::clean_command("redis-cli", &[]);
    cli.args(["--tls", "--cacert"])
        .arg(s.cache.emulator().ca_file())
        .args(["-h", "localhost", "-p", &s.port().to_string()])
        .args(s.cli_auth())
        .args(["-D", "", "--raw", "DUMP", "bin"]);
    let theirs = cli.output().expect("redis-cli DUMP runs");
    assert_eq!(
        dumped.stdout, theirs.stdout,
        "DUMP's bytes, as redis-cli writes them"
    );
    s.entra_stdin(&["-X", "T", "RESTORE", "bin2", "0", "T"], &dumped.stdout)
        .ok("RESTORE from the dump");
    let a = s.entra(&["--no-raw", "GET", "bin"]);
    let b = s.entra(&["--no-raw", "GET", "bin2"]);
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.stdout, "\"a\\x00b\\xff\\xfe\\r\\nz\"\n");
    // Arguments need not be UTF-8 either.
    use std::os::unix::ffi::OsStrExt as _;
    let mut cmd = common::clean_command(common::bin(), &s.vars);
    cmd.args(["SET", "latin1"])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    assert!(cmd.output().expect("SET runs").status.success());
    let run = s.entra(&["--no-raw", "GET", "latin1"]);
    assert_eq!(run.stdout, "\"caf\\xe9\"\n");
}

#[test]
fn quoted_input_and_patterns() {
    let s = SideBySide::start();
    for proto in ["-2", "-3"] {
        s.same(&[proto, "--quoted-input", "SET", "\"q\\x00k\"", "'it''s'"]);
        s.same(&[proto, "--quoted-input", "SET", "\"q\\x00k\"", "\"a b\\n\""]);
        s.same(&[proto, "--no-raw", "--quoted-input", "GET", "\"q\\x00k\""]);
        s.same(&[proto, "--quoted-input", "GET", "\"unbalanced"]);
        s.same(&[proto, "--quoted-input", "GET", "two words"]);
        s.same(&[
            proto,
            "--no-raw",
            "--scan",
            "--quoted-pattern",
            "\"q\\x00*\"",
        ]);
        s.same(&[proto, "--scan", "--quoted-pattern", "\"bad"]);
    }
}
