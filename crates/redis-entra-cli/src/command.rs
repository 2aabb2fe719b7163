//! `redis-entra COMMAND [ARG...]`: one command, printed as redis-cli prints it (see
//! [`crate::format`]); `SUBSCRIBE`, `PSUBSCRIBE` and `SSUBSCRIBE` stream until Ctrl-C.

use std::process::ExitCode;

use crate::session::{self, Route};
use crate::settings::ConnectionArgs;
use crate::{subscribe, Outcome};

/// Runs one command.
pub async fn run(args: &ConnectionArgs, words: Vec<String>) -> Outcome {
    let config = args.config()?;
    let options = config.connect_options();
    let words: Vec<Vec<u8>> = words.into_iter().map(String::into_bytes).collect();
    if words.is_empty() {
        return Err(session::refusal("no command given".into()).into());
    }
    let output = args.output();
    match session::route(&words) {
        Route::Refuse(message) => return Err(session::refusal(message).into()),
        Route::Subscribe(kind, channels) => {
            let manager = session::manager(&config)?;
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
    let manager = session::manager(&config)?;
    let mut conn = session::connect(&options, &manager, args.cluster).await?;
    let result = session::execute(&mut conn, &words).await;
    let code = session::print_result(result, &words, output, args.exit_on_error)?;
    Ok(ExitCode::from(code))
}
