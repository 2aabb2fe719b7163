//! The interactive prompt, driven through a real pseudo-terminal: tmux runs `redis-entra` with
//! no command, the test types lines with `send-keys` and reads the screen with `capture-pane`.
//! Needs tmux (scripts/setup installs it).

mod common;

use common::Cache;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap_or_else(|e| {
            panic!("tmux {args:?}: {e} (is tmux installed? scripts/setup installs it)")
        });
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `shell_command` in a detached session `name`, 200x60.
    fn start(socket: &Path, name: &str, shell_command: &str) -> Self {
        let tmux = Self {
            socket: socket.to_path_buf(),
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "200",
            "-y",
            "60",
            shell_command,
        ]);
        tmux
    }

    fn screen(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", name, "-S", "-500"])
    }

    /// Types `line` and Enter.
    fn type_line(&self, name: &str, line: &str) {
        self.run(&["send-keys", "-t", name, "-l", line]);
        self.run(&["send-keys", "-t", name, "Enter"]);
    }

    /// Waits until the screen satisfies `ready`; panics with the screen after 30 s.
    fn wait_for(&self, name: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen(name);
            if ready(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// `'value'` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn the_prompt_runs_commands_typed_on_a_terminal() {
    let cache = Cache::start();
    let home = tempfile::tempdir().expect("a temporary HOME");
    let port = cache.emulator().gateway_addr().port();

    // A clean environment: the emulator's variables, PATH, HOME and a terminal type.
    let mut vars = cache.emulator().env();
    vars.push(("HOME".into(), home.path().display().to_string()));
    vars.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
    vars.push(("TERM".into(), "xterm".into()));
    let assignments: Vec<String> = vars
        .iter()
        .map(|(k, v)| format!("{k}={}", sh_quote(v)))
        .collect();
    let command = format!(
        "env -i {} {} --log error; echo redis-entra-exited=$?; sleep 600",
        assignments.join(" "),
        sh_quote(env!("CARGO_BIN_EXE_redis-entra"))
    );
    let tmux = Tmux::start(&home.path().join("tmux.sock"), "prompt", &command);

    let prompt = format!("localhost:{port}> ");
    tmux.wait_for("prompt", "the prompt", |s| s.contains(&prompt));

    tmux.type_line("prompt", "SET a 1");
    tmux.wait_for("prompt", "OK after SET", |s| {
        s.contains(&format!("{prompt}SET a 1\nOK\n"))
    });
    tmux.type_line("prompt", "GET a");
    tmux.wait_for("prompt", "\"1\" after GET", |s| {
        s.contains(&format!("{prompt}GET a\n\"1\"\n"))
    });
    // Quoted arguments, as redis-cli splits them.
    // (Each line is typed after the previous reply, as a person does: rustyline drops what is
    // typed ahead while it sets the terminal up.)
    tmux.type_line("prompt", r#"SET "b c" "\x41\x42 d""#);
    tmux.wait_for("prompt", "OK after the quoted SET", |s| {
        s.contains(concat!(r#"\x41\x42 d""#, "\nOK\n"))
    });
    tmux.type_line("prompt", "GET 'b c'");
    tmux.wait_for("prompt", "the quoted value", |s| s.contains("\n\"AB d\"\n"));
    // An error reply: printed, and the prompt goes on.
    tmux.type_line("prompt", "INCR 'b c'");
    tmux.wait_for("prompt", "an error reply", |s| s.contains("(error) ERR"));
    // AUTH is refused: the token is managed.
    tmux.type_line("prompt", "AUTH someone not-a-token");
    tmux.wait_for("prompt", "AUTH refused", |s| {
        s.contains("AUTH is not needed")
    });

    tmux.type_line("prompt", "help");
    let screen = tmux.wait_for("prompt", "the help text", |s| {
        s.contains("Run `redis-entra --help`")
    });
    for text in [
        "refreshed automatically",
        "redis-entra token",
        "redis-entra doctor",
        "quit, exit",
    ] {
        assert!(screen.contains(text), "help lacks {text:?}:\n{screen}");
    }
    tmux.type_line("prompt", "help client list");
    tmux.wait_for("prompt", "a command's help", |s| {
        s.contains("https://redis.io/commands/client-list")
    });

    tmux.type_line("prompt", "quit");
    let screen = tmux.wait_for("prompt", "the process to exit", |s| {
        s.contains("redis-entra-exited=")
    });
    assert!(
        screen.contains("redis-entra-exited=0"),
        "the prompt did not exit 0:\n{screen}"
    );

    // The history keeps the commands, never the AUTH line.
    let history = std::fs::read_to_string(home.path().join(".redis-entra_history"))
        .expect("the history file is written");
    assert!(history.contains("SET a 1"), "{history}");
    assert!(history.contains("GET a"), "{history}");
    assert!(!history.contains("AUTH"), "{history}");
    assert!(!history.contains("not-a-token"), "{history}");
}

#[test]
fn commands_piped_to_stdin_run_without_a_prompt() {
    let cache = Cache::start();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis-entra"));
    cmd.env_clear()
        .envs(cache.emulator().env())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("redis-entra runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(b"SET x 42\nGET x\nAUTH a b\nGET \"unterminated\nINCR x\n")
            .expect("written");
    }
    let out = child.wait_with_output().expect("finished");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Raw, as redis-cli prints when stdout is not a terminal; no prompt.
    assert!(stdout.starts_with("OK\n42\n"), "{stdout}");
    assert!(stdout.contains("AUTH is not needed"), "{stdout}");
    assert!(stdout.ends_with("43\n"), "{stdout}");
    assert!(!stdout.contains("> "), "{stdout}");
    assert!(stderr.contains("Invalid argument(s)"), "{stderr}");
}

#[test]
fn an_idle_prompt_stays_signed_in_across_token_expiry() {
    // Tokens live 5 s; the prompt sits idle for more than two of them between two commands.
    let cache = Cache::with_tokens_living(Duration::from_secs(5));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis-entra"));
    cmd.env_clear()
        .envs(cache.emulator().env())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--log", "error"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("redis-entra runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(b"SET idle yes\n").expect("written");
        stdin.flush().expect("flushed");
        std::thread::sleep(Duration::from_secs(12));
        stdin.write_all(b"GET idle\n").expect("written");
    }
    let out = child.wait_with_output().expect("finished");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, "OK\nyes\n", "stderr:\n{stderr}");
    let closed = cache
        .emulator()
        .stats()
        .closed_at_expiry
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(closed, 0, "the idle connection was closed at token expiry");
}
