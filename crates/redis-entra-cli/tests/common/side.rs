//! redis-cli and redis-entra side by side against one emulator: redis-cli signs in with
//! `--user <oid> --pass <token>` over TLS with the emulator's CA, redis-entra with the
//! emulator's variables; both outputs and exit codes are compared byte for byte.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::{
    clean_command, jwt_claims, redis_entra, run_with_timeout, Cache, Run, COMMAND_TIMEOUT,
};

/// An emulator, a token for redis-cli, and the variables for redis-entra.
pub struct SideBySide {
    pub cache: Cache,
    pub vars: Vec<(String, String)>,
    token: String,
    oid: String,
    port: u16,
    ca: String,
}

impl SideBySide {
    /// Starts an emulator and gets a token for redis-cli (with `redis-entra token`).
    pub fn start() -> Self {
        let cache = Cache::start();
        let vars = cache.env_with(&[]);
        let token = redis_entra(&["token", "--raw-token"], &vars)
            .ok("redis-entra token --raw-token")
            .stdout
            .trim()
            .to_string();
        let oid = jwt_claims(&token)["oid"]
            .as_str()
            .expect("the token has an oid")
            .to_string();
        let port = cache.emulator().gateway_addr().port();
        let ca = cache.emulator().ca_file().display().to_string();
        Self {
            cache,
            vars,
            token,
            oid,
            port,
            ca,
        }
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command("redis-cli", &[]);
        cmd.args(["--tls", "--cacert", &self.ca, "-h", "localhost"])
            .args(["-p", &self.port.to_string()])
            .args([
                "--user",
                &self.oid,
                "--pass",
                &self.token,
                "--no-auth-warning",
            ])
            .args(args);
        cmd
    }

    /// Runs redis-cli with TLS and the emulator's CA only (no host, port or credentials):
    /// for `-u` URIs that carry everything else.
    pub fn cli_plain(&self, args: &[&str]) -> Run {
        let mut cmd = clean_command("redis-cli", &[]);
        cmd.args(["--tls", "--cacert", &self.ca]).args(args);
        run_with_timeout(cmd, COMMAND_TIMEOUT)
    }

    /// redis-cli's sign-in flags: `--user <oid> --pass <token> --no-auth-warning`.
    pub fn cli_auth(&self) -> Vec<String> {
        vec![
            "--user".into(),
            self.oid.clone(),
            "--pass".into(),
            self.token.clone(),
            "--no-auth-warning".into(),
        ]
    }

    /// The gateway's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs redis-cli with `args` (stdin closed).
    pub fn cli(&self, args: &[&str]) -> Run {
        run_with_timeout(self.cli_command(args), COMMAND_TIMEOUT)
    }

    /// Runs redis-entra with `args` (stdin closed).
    pub fn entra(&self, args: &[&str]) -> Run {
        redis_entra(args, &self.vars)
    }

    /// Runs redis-cli with `args` and `input` on stdin.
    pub fn cli_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        with_stdin(self.cli_command(args), input)
    }

    /// Runs redis-entra with `args` and `input` on stdin.
    pub fn entra_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut cmd = clean_command(super::bin(), &self.vars);
        cmd.args(args);
        with_stdin(cmd, input)
    }

    /// Runs `args` with both and asserts the same stdout, stderr and exit code; returns
    /// redis-entra's run.
    pub fn same(&self, args: &[&str]) -> Run {
        let cli = self.cli(args);
        let entra = self.entra(args);
        assert_same(args, &cli, &entra);
        entra
    }

    /// As [`SideBySide::same`] for a command that writes: `reset` (a command, through
    /// redis-entra) runs before each of the two, so both start from the same data.
    pub fn same_after(&self, reset: &[&str], args: &[&str]) -> Run {
        self.entra(reset).ok("the reset command");
        let cli = self.cli(args);
        self.entra(reset).ok("the reset command");
        let entra = self.entra(args);
        assert_same(args, &cli, &entra);
        entra
    }

    /// As [`SideBySide::same_after`], with `input` on stdin.
    pub fn same_stdin_after(&self, reset: &[&str], args: &[&str], input: &[u8]) -> Run {
        self.entra(reset).ok("the reset command");
        let cli = self.cli_stdin(args, input);
        self.entra(reset).ok("the reset command");
        let entra = self.entra_stdin(args, input);
        assert_same(args, &cli, &entra);
        entra
    }

    /// As [`SideBySide::same`], with `input` on stdin.
    pub fn same_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let cli = self.cli_stdin(args, input);
        let entra = self.entra_stdin(args, input);
        assert_same(args, &cli, &entra);
        entra
    }
}

/// Asserts that two runs printed the same and exited the same.
pub fn assert_same(args: &[&str], cli: &Run, entra: &Run) {
    assert_eq!(
        (cli.code(), &cli.stdout, &cli.stderr),
        (entra.code(), &entra.stdout, &entra.stderr),
        "{args:?}: redis-cli (left) and redis-entra (right) differ"
    );
}

fn with_stdin(mut cmd: Command, input: &[u8]) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the command starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(Ok(out)) => out,
        _ => {
            super::signal(pid, "KILL");
            panic!("the command did not finish within {COMMAND_TIMEOUT:?}");
        }
    };
    let _ = writer.join();
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
