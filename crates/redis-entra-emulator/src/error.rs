//! The emulator's error type.

/// Why the emulator could not start or do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Generating the CA, a certificate or a signing key failed.
    #[error("could not generate the emulator's keys and certificates: {0}")]
    Pki(String),
    /// `redis-server` could not be started or reached.
    #[error("Redis backend: {0}")]
    Backend(String),
    /// A listener could not be bound or a file could not be written.
    #[error("{context}: {source}")]
    Io {
        /// What the emulator was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A state folder (`--state`) or one of its files cannot be used: `path` names it,
    /// `problem` says what is wrong and what to do.
    #[error("emulator state {}: {problem}", path.display())]
    State {
        /// The folder or file.
        path: std::path::PathBuf,
        /// What is wrong, and what to do.
        problem: String,
    },
    /// The configuration is invalid.
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    /// A custom access policy was refused: a bad name, rules that are not permissions, or rules
    /// Redis does not understand (then the text is Redis' own, e.g. `ERR Error in ACL SETUSER
    /// modifier '+@nonexistent': Unknown command or category name in ACL`).
    #[error("{0}")]
    InvalidPolicy(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
