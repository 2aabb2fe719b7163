//! `redis-entra COMMAND [ARG...]`: one command, printed as redis-cli prints it (see
//! [`crate::format`]); `SUBSCRIBE`, `PSUBSCRIBE` and `SSUBSCRIBE` stream until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use crate::modes::ModeArgs;
use crate::session::{self, Route};
use crate::settings::ConnectionArgs;
use crate::{exit, subscribe, Outcome};

/// Runs one command, or the mode `modes` asks for.
pub async fn run(
    args: &ConnectionArgs,
    modes: &ModeArgs,
    words: Vec<std::ffi::OsString>,
) -> Outcome {
    let config = args.config()?;
    let options = args.connect_options_for(&config);
    let mut words: Vec<Vec<u8>> = words
        .into_iter()
        .map(std::os::unix::ffi::OsStringExt::into_vec)
        .collect();
    if modes.pattern().is_err() {
        eprintln!("Invalid quoted string specified for --quoted-pattern.");
        return Ok(ExitCode::from(exit::ERROR_REPLY));
    }
    if args.quoted_input {
        let unquoted: Option<Vec<Vec<u8>>> = words
            .iter()
            .map(|w| crate::modes::unquote(&String::from_utf8_lossy(w)))
            .collect();
        match unquoted {
            Some(u) => words = u,
            None => {
                // redis-cli says so on stdout.
                session::print_stdout("Invalid quoted string\n");
                return Ok(ExitCode::from(exit::ERROR_REPLY));
            }
        }
    }
    if modes.eval.is_none() && modes.any() {
        // As redis-cli, these modes run instead of a command given with them, in its order.
        let manager = session::manager(args, &config)?;
        let mut conn = session::connect(&options, &manager, args.cluster).await?;
        let pause = interval(args.interval);
        return if modes.latency || modes.latency_history {
            crate::modes::latency::run(&mut conn, args.output(), modes.latency_history, pause).await
        } else if modes.pipe {
            crate::modes::pipe::run(&mut conn, modes.pipe_timeout).await
        } else if modes.bigkeys {
            crate::modes::bigkeys::run(&mut conn, modes, false, pause).await
        } else if modes.memkeys || modes.memkeys_samples.is_some() {
            crate::modes::bigkeys::run(&mut conn, modes, true, pause).await
        } else if modes.stat {
            crate::modes::stat::run(&mut conn, pause).await
        } else {
            crate::modes::scan::run(&mut conn, args, modes).await
        };
    }
    if let Some(file) = &modes.eval {
        match crate::modes::eval::read_script(file) {
            Ok(script) => words = crate::modes::eval::eval_words(script, &words),
            Err(message) => {
                eprintln!("{message}");
                return Ok(ExitCode::from(exit::ERROR_REPLY));
            }
        }
    }
    // As redis-cli, -x and -X apply to a command, not to --eval's arguments.
    if args.stdin_last_arg && modes.eval.is_none() && !words.is_empty() {
        words.push(read_stdin_arg().await?);
    } else if let (Some(tag), None) = (&args.stdin_tag, &modes.eval) {
        match words.iter().position(|w| w == tag.as_bytes()) {
            Some(i) => words[i] = read_stdin_arg().await?,
            None => {
                eprintln!("Using -X option but stdin tag not match.");
                return Ok(ExitCode::from(exit::ERROR_REPLY));
            }
        }
    }
    if words.is_empty() {
        return Err(session::refusal("no command given".into()).into());
    }
    let output = args.output();
    match session::route(&words) {
        Route::Refuse(message) => return Err(session::refusal(message).into()),
        Route::Subscribe(kind, channels) => {
            let manager = session::manager(args, &config)?;
            let code = subscribe::run(
                &options,
                &manager,
                kind,
                &channels,
                output,
                subscribe::ctrl_c(),
            )
            .await?;
            return Ok(ExitCode::from(code));
        }
        Route::Select(_) | Route::Send => {}
    }
    let manager = session::manager(args, &config)?;
    let mut conn = session::connect(&options, &manager, args.cluster).await?;
    // As redis-cli: -r N runs it N times (a negative N: until interrupted), waiting -i seconds
    // after each run; the first error reply ends it with -e.
    let repeat = args.repeat.unwrap_or(1);
    let interval = interval(args.interval);
    let mut done: i64 = 0;
    while repeat < 0 || done < repeat {
        done = done.saturating_add(1);
        let result = session::execute(&mut conn, &words).await;
        let code = session::print_result(result, &words, output, args.exit_on_error)?;
        if code != exit::SUCCESS {
            return Ok(ExitCode::from(code));
        }
        if let Some(pause) = interval {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `-i`'s pause: none for 0 or less (or not a number), at most a day.
pub fn interval(seconds: Option<f64>) -> Option<Duration> {
    seconds
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
}

/// The largest argument `-x` reads: Redis' own limit on a string (512 MiB).
const MAX_STDIN_ARG: u64 = 512 * 1024 * 1024;

/// Standard input, all of it, as `-x`'s argument.
async fn read_stdin_arg() -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    tokio::io::stdin()
        .take(MAX_STDIN_ARG + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| session::refusal(format!("-x: cannot read standard input: {e}")))?;
    if buf.len() as u64 > MAX_STDIN_ARG {
        return Err(session::refusal(
            "-x: standard input is larger than 512 MiB, the largest string Redis accepts".into(),
        ));
    }
    Ok(buf)
}
