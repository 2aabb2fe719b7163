//! Every malformed variable or connection string of the shared table makes `redis-entra PING`
//! exit 2 with a one-line reason naming the variable, and never panics.

mod common;

use common::redis_entra;

#[test]
fn malformed_settings_exit_2_with_a_one_line_reason_naming_the_variable() {
    let table = include_str!("../../redis-entra/tests/fixtures/malformed_env.tsv");
    let mut cases = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut cols = line.split('\t');
        let name = cols.next().unwrap();
        let vars: Vec<(String, String)> = cols
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let run = redis_entra(&["PING"], &vars);
        cases += 1;
        assert_eq!(run.status.code(), Some(2), "{vars:?}: {}", run.all());
        assert!(!run.all().contains("panicked"), "{vars:?}: {}", run.all());
        let reason: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .collect();
        assert_eq!(reason.len(), 1, "{vars:?}: {}", run.stderr);
        assert!(
            reason[0].contains(name),
            "{vars:?}: {:?} does not name {name}",
            reason[0]
        );
    }
    assert!(cases >= 30, "{cases} cases");
}
