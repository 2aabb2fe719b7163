//! The interactive prompt: `redis-entra` without a command.
//!
//! On a terminal it reads lines with rustyline (`host:port[db]> `, history in
//! `$HOME/.redis-entra_history` or `$REDIS_ENTRA_HISTFILE`, never recording `AUTH`, `HELLO` or
//! other lines that carry a password); when stdin is not a terminal it reads commands line by line
//! without a prompt, as redis-cli does. Lines are split into arguments as redis-cli splits them
//! ([`crate::split`]) and replies printed as in one-shot mode. The connection is a
//! [`Connection`]: an `EntraConnection`, or with `-c` an `EntraClusterConnection` that follows
//! redirections; either stays authenticated across token expiry while the prompt is idle.
//!
//! Handled here rather than sent: `help [command]`, `quit`/`exit`, `clear`, `SELECT n` (reconnects
//! to database n so that reconnections keep it), the subscriptions (stream until Ctrl-C, then back
//! to the prompt) and the refused commands (`AUTH`, `HELLO`, `RESET`, `MONITOR`). Ctrl-C while a
//! command runs abandons it and opens a fresh connection (a blocked `BLPOP` would otherwise hold
//! the connection); Ctrl-C or Ctrl-D at the prompt leaves.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use redis::Value;
use redis_entra::{ConnectOptions, TokenManager};
use tokio::io::AsyncBufReadExt;

use crate::session::{self, print_stdout, Connection, Route};
use crate::settings::{ConnectionArgs, Output};
use crate::{format, split, subscribe, Outcome};

/// The history file: `$REDIS_ENTRA_HISTFILE`, else `$HOME/.redis-entra_history`; `None` when
/// neither is known or the variable says `/dev/null`.
pub fn history_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REDIS_ENTRA_HISTFILE") {
        if path.is_empty() || path == "/dev/null" {
            return None;
        }
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".redis-entra_history"))
}

/// Whether a line carries a password or token and must stay out of the history (redis-cli's
/// list: AUTH, HELLO … AUTH, ACL SETUSER, MIGRATE … AUTH, CONFIG SET of a password).
pub fn is_sensitive(words: &[Vec<u8>]) -> bool {
    let up: Vec<String> = words
        .iter()
        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
        .collect();
    match up.first().map(String::as_str) {
        Some("AUTH" | "HELLO") => true,
        Some("ACL") => up.get(1).is_some_and(|s| s == "SETUSER"),
        Some("MIGRATE") => up.iter().any(|w| w == "AUTH" || w == "AUTH2"),
        Some("CONFIG") => {
            up.get(1).is_some_and(|s| s == "SET")
                && up.iter().skip(2).any(|w| {
                    matches!(
                        w.as_str(),
                        "MASTERAUTH"
                            | "MASTERUSER"
                            | "REQUIREPASS"
                            | "TLS-KEY-FILE-PASS"
                            | "TLS-CLIENT-KEY-FILE-PASS"
                    )
                })
        }
        _ => false,
    }
}

/// The prompt: `host:port> `, or `host:port[db]> ` off database 0.
pub fn prompt_text(options: &ConnectOptions) -> String {
    if options.db == 0 {
        format!("{}:{}> ", options.host, options.port)
    } else {
        format!("{}:{}[{}]> ", options.host, options.port, options.db)
    }
}

/// The text of `help`: how the prompt works, and the command's own subcommands.
pub fn help_text(options: &ConnectOptions, username: Option<&str>) -> String {
    let mut out = format!(
        "redis-entra {}: a redis-cli that signs in with Microsoft Entra ID\n",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(&format!(
        "Connected to {}:{} (TLS){}.\n\n",
        options.host,
        options.port,
        username
            .map(|u| format!(" as {u}, the oid of the signed-in identity"))
            .unwrap_or_default()
    ));
    out.push_str(
        "Type a Redis command and its arguments, e.g. SET key value. Quote arguments with \"...\"\n\
         (escapes \\n \\t \\\" \\xHH) or '...'.\n\
         \x20 help              this text\n\
         \x20 help <command>    where to read about a Redis command\n\
         \x20 quit, exit        leave (Ctrl-D too)\n\
         \x20 clear             clear the screen\n\n\
         Tokens are refreshed automatically: the Entra ID token is renewed before it expires and the\n\
         connection re-authenticated in place, so the prompt can stay open. AUTH and HELLO are\n\
         not needed and refused; SUBSCRIBE streams until Ctrl-C.\n\n\
         From the shell, redis-entra also runs:\n",
    );
    let cli = crate::Cli::command();
    for sub in cli.get_subcommands() {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let first = about
            .split(" (")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        out.push_str(&format!("  redis-entra {:<10} {first}\n", sub.get_name()));
    }
    out.push_str("Run `redis-entra --help` for the flags and exit codes.\n");
    out
}

/// The URL of a command's documentation: `client list` → `…/commands/client-list`.
pub fn command_url(words: &[Vec<u8>]) -> String {
    let name: Vec<String> = words
        .iter()
        .map(|w| String::from_utf8_lossy(w).to_ascii_lowercase())
        .collect();
    format!("https://redis.io/commands/{}", name.join("-"))
}

/// The summary `COMMAND DOCS` gives for a command, if the server answers.
async fn command_summary(conn: &mut Connection, words: &[Vec<u8>]) -> Option<String> {
    let name = words.first()?;
    let docs = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg(name.as_slice())
        .query_async::<Value>(conn)
        .await
        .ok()?;
    fn find(v: &Value, key: &str) -> Option<String> {
        let pairs: Vec<(&Value, &Value)> = match v {
            Value::Map(p) => p.iter().map(|(k, v)| (k, v)).collect(),
            Value::Array(items) => items
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| (&c[0], &c[1]))
                .collect(),
            _ => return None,
        };
        for (k, val) in pairs {
            let is_key = match k {
                Value::BulkString(b) => b.eq_ignore_ascii_case(key.as_bytes()),
                Value::SimpleString(s) => s.eq_ignore_ascii_case(key),
                _ => false,
            };
            if is_key {
                match val {
                    Value::BulkString(s) => return Some(String::from_utf8_lossy(s).into_owned()),
                    Value::SimpleString(s) => return Some(s.clone()),
                    Value::VerbatimString { text, .. } => return Some(text.clone()),
                    _ => {}
                }
            }
            if let Some(found) = find(val, key) {
                return Some(found);
            }
        }
        None
    }
    find(&docs, "summary")
}

/// Where lines come from: rustyline on a terminal (on its own thread, since it blocks), or
/// stdin's lines.
enum Input {
    Editor(Editor),
    Lines(tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>),
}

/// What reading a line gave.
enum Line {
    Text(String),
    Eof,
}

struct Editor {
    requests: std::sync::mpsc::Sender<EditorRequest>,
    replies: tokio::sync::mpsc::UnboundedReceiver<Option<String>>,
}

enum EditorRequest {
    Read(String),
    Remember(String),
}

impl Editor {
    fn start(history: Option<PathBuf>) -> anyhow::Result<Self> {
        let (req_tx, req_rx) = std::sync::mpsc::channel::<EditorRequest>();
        let (reply_tx, replies) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("redis-entra-prompt".into())
            .spawn(move || {
                let config = rustyline::Config::builder()
                    .max_history_size(1000)
                    .and_then(|b| b.history_ignore_dups(true))
                    .map(|b| b.auto_add_history(false).build());
                let editor = config.and_then(rustyline::DefaultEditor::with_config);
                let mut editor = match editor {
                    Ok(e) => {
                        let _ = ready_tx.send(Ok(()));
                        e
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                if let Some(path) = &history {
                    let _ = editor.load_history(path);
                }
                while let Ok(request) = req_rx.recv() {
                    match request {
                        EditorRequest::Read(prompt) => {
                            let line = match editor.readline(&prompt) {
                                Ok(line) => Some(line),
                                Err(rustyline::error::ReadlineError::Interrupted)
                                | Err(rustyline::error::ReadlineError::Eof) => None,
                                Err(e) => {
                                    eprintln!("error: reading the line: {e}");
                                    None
                                }
                            };
                            if reply_tx.send(line).is_err() {
                                return;
                            }
                        }
                        EditorRequest::Remember(line) => {
                            let _ = editor.add_history_entry(line.as_str());
                            if let Some(path) = &history {
                                save_history(&mut editor, path);
                            }
                        }
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                requests: req_tx,
                replies,
            }),
            Ok(Err(e)) => Err(anyhow::anyhow!("cannot start the line editor: {e}")),
            Err(_) => Err(anyhow::anyhow!("the line editor stopped")),
        }
    }
}

fn save_history(editor: &mut rustyline::DefaultEditor, path: &std::path::Path) {
    if let Err(e) = editor.save_history(path) {
        tracing::debug!(error = %e, path = %path.display(), "cannot save the history");
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

impl Input {
    async fn read(&mut self, prompt: &str) -> Line {
        match self {
            Input::Editor(editor) => {
                if editor
                    .requests
                    .send(EditorRequest::Read(prompt.to_string()))
                    .is_err()
                {
                    return Line::Eof;
                }
                match editor.replies.recv().await {
                    Some(Some(text)) => Line::Text(text),
                    _ => Line::Eof,
                }
            }
            Input::Lines(lines) => match lines.next_line().await {
                Ok(Some(text)) => Line::Text(text),
                _ => Line::Eof,
            },
        }
    }

    fn remember(&self, line: &str) {
        if let Input::Editor(editor) = self {
            let _ = editor
                .requests
                .send(EditorRequest::Remember(line.to_string()));
        }
    }
}

/// The prompt's state: where it is connected and how it prints.
struct Prompt {
    options: ConnectOptions,
    manager: TokenManager,
    conn: Connection,
    /// `-c`: the connection follows cluster redirections.
    cluster: bool,
    output: Output,
}

impl Prompt {
    fn print_error(&self, text: &str) {
        print_stdout(&format::error(text, self.output));
    }

    /// Handles one line; `false` means leave.
    async fn handle(&mut self, words: Vec<Vec<u8>>) -> bool {
        let first = String::from_utf8_lossy(&words[0]).to_ascii_lowercase();
        match first.as_str() {
            "quit" | "exit" if words.len() == 1 => return false,
            "help" | "?" => {
                if words.len() == 1 {
                    let username = self.manager.current().map(|c| c.username().to_string());
                    print_stdout(&help_text(&self.options, username.as_deref()));
                } else {
                    let topic = &words[1..];
                    let summary = command_summary(&mut self.conn, topic).await;
                    let name = topic
                        .iter()
                        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
                        .collect::<Vec<_>>()
                        .join(" ");
                    let mut text = format!("\n  {name}");
                    if let Some(s) = summary {
                        text.push_str(&format!(": {s}"));
                    }
                    text.push_str(&format!("\n  see {}\n\n", command_url(topic)));
                    print_stdout(&text);
                }
                return true;
            }
            "clear" if words.len() == 1 => {
                print_stdout("\x1b[H\x1b[2J");
                return true;
            }
            _ => {}
        }
        match session::route(&words) {
            Route::Refuse(message) => self.print_error(&message),
            Route::Select(db) => {
                let mut options = self.options.clone();
                options.db = db;
                match session::connect(&options, &self.manager, self.cluster).await {
                    Ok(conn) => {
                        self.conn = conn;
                        self.options = options;
                        print_stdout(&format::reply(&Value::Okay, self.output));
                    }
                    Err(e) => self.print_error(&describe(&e)),
                }
            }
            Route::Subscribe(kind, channels) => {
                let done = subscribe::run(
                    &self.options,
                    &self.manager,
                    kind,
                    &channels,
                    self.output,
                    subscribe::ctrl_c(),
                )
                .await;
                if let Err(e) = done {
                    self.print_error(&describe(&e));
                }
            }
            Route::Send => {
                let result = tokio::select! {
                    r = session::execute(&mut self.conn, &words) => Some(r),
                    _ = subscribe::ctrl_c() => None,
                };
                match result {
                    Some(result) => {
                        if let Err(e) = session::print_result(result, &words, self.output, false) {
                            self.print_error(&describe(&e));
                        }
                    }
                    None => {
                        eprintln!("(interrupted: opening a fresh connection)");
                        match session::connect(&self.options, &self.manager, self.cluster).await {
                            Ok(conn) => self.conn = conn,
                            Err(e) => self.print_error(&describe(&e)),
                        }
                    }
                }
            }
        }
        true
    }
}

/// An error in one line, without the chain's repetition.
fn describe(e: &anyhow::Error) -> String {
    if let Some(r) = e
        .chain()
        .find_map(|c| c.downcast_ref::<redis::RedisError>())
    {
        if r.code().is_some() {
            return format::error_text(r);
        }
    }
    format!("{e:#}")
}

/// Runs the prompt until `quit`, Ctrl-D or the end of stdin.
pub async fn run(args: &ConnectionArgs) -> Outcome {
    let config = args.config()?;
    let options = args.connect_options_for(&config);
    let manager = session::manager(args, &config)?;
    let conn = session::connect(&options, &manager, args.cluster).await?;
    let interactive = std::io::stdin().is_terminal();
    let mut input = if interactive {
        Input::Editor(Editor::start(history_file())?)
    } else {
        Input::Lines(tokio::io::BufReader::new(tokio::io::stdin()).lines())
    };
    let mut prompt = Prompt {
        options,
        manager,
        conn,
        cluster: args.cluster,
        output: args.output(),
    };
    loop {
        let line = match input.read(&prompt_text(&prompt.options)).await {
            Line::Text(text) => text,
            Line::Eof => break,
        };
        if line.trim().is_empty() {
            continue;
        }
        let words = match split::split(&line) {
            Ok(words) if !words.is_empty() => words,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("{e}");
                continue;
            }
        };
        if !is_sensitive(&words) {
            input.remember(&line);
        }
        if !prompt.handle(words).await {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(line: &str) -> Vec<Vec<u8>> {
        split::split(line).unwrap()
    }

    #[test]
    fn keeps_passwords_out_of_the_history() {
        assert!(is_sensitive(&w("auth user token")));
        assert!(is_sensitive(&w("HELLO 3 AUTH u p")));
        assert!(is_sensitive(&w("acl setuser bob on >pw")));
        assert!(is_sensitive(&w("config set requirepass x")));
        assert!(is_sensitive(&w("MIGRATE h 1 k 0 5 AUTH pw")));
        assert!(!is_sensitive(&w("SET auth 1")));
        assert!(!is_sensitive(&w("config get maxmemory")));
    }

    #[test]
    fn prompt_and_urls() {
        let mut o = ConnectOptions::new("localhost", 6380);
        assert_eq!(prompt_text(&o), "localhost:6380> ");
        o.db = 2;
        assert_eq!(prompt_text(&o), "localhost:6380[2]> ");
        assert_eq!(
            command_url(&w("CLIENT LIST")),
            "https://redis.io/commands/client-list"
        );
    }
}
