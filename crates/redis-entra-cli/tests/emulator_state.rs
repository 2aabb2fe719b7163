//! `redis-entra emulator --state DIR --well-known --ca-file PATH` as a user runs it: the env
//! file names the well-known identities, the CA survives a restart, and a broken state folder
//! is a clear error.

mod common;

use common::{redis_entra, EmulatorProcess};
use redis_entra_emulator::state::{files, well_known};

#[test]
fn state_well_known_and_ca_file_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ca_file = dir.path().join("emulator-ca.pem");
    let args = [
        "--state",
        state.to_str().unwrap(),
        "--well-known",
        "--ca-file",
        ca_file.to_str().unwrap(),
    ];
    let first = EmulatorProcess::start(&args);
    assert_eq!(first.var("AZURE_TENANT_ID"), well_known::TENANT_ID);
    assert_eq!(
        first.var("AZURE_CLIENT_ID"),
        well_known::SERVICE_PRINCIPAL_CLIENT_ID
    );
    assert_eq!(
        first.var("AZURE_CLIENT_SECRET"),
        well_known::SERVICE_PRINCIPAL_SECRET
    );
    let ca = std::fs::read_to_string(&ca_file).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ca_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the CA file is public");
    }
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(std::fs::read_to_string(files::ca_file(&state)).unwrap(), ca);
    // The env file's CA and the --ca-file are the same certificate.
    assert_eq!(
        std::fs::read_to_string(first.var("SSL_CERT_FILE")).unwrap(),
        ca
    );
    let run = redis_entra(&["ACL", "WHOAMI"], &first.vars);
    run.assert_success("redis-entra ACL WHOAMI");
    assert_eq!(run.stdout.trim(), well_known::SERVICE_PRINCIPAL_OBJECT_ID);
    drop(first);

    std::fs::remove_file(&ca_file).unwrap();
    let second = EmulatorProcess::start(&args);
    assert_eq!(std::fs::read_to_string(&ca_file).unwrap(), ca, "the CA");
    let run = redis_entra(&["PING"], &second.vars);
    run.assert_success("redis-entra PING after a restart");
    assert_eq!(run.stdout.trim(), "PONG");
}

#[test]
fn a_corrupt_state_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    files::open(&state, false).unwrap();
    let broken = state.join(files::STATE_FILE);
    std::fs::write(&broken, "{ half written").unwrap();
    let run = redis_entra(&["emulator", "--state", state.to_str().unwrap()], &[]);
    assert!(!run.status.success(), "it started:\n{}", run.all());
    assert!(
        run.stderr.contains(broken.to_str().unwrap()) && run.stderr.contains("delete the folder"),
        "the error does not name the file and what to do:\n{}",
        run.stderr
    );
    assert!(
        !run.all().contains("panicked") && !run.stdout.contains("ready"),
        "{}",
        run.all()
    );
}
