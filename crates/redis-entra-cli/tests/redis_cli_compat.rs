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
