//! The frontend's errors: each names the Dockerfile line it comes from where there is one.

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The text cannot be read as a Dockerfile (BuildKit's wording).
    #[error("dockerfile parse error on line {line}: {message}")]
    Parse { line: usize, message: String },
    /// An instruction that parses but cannot be evaluated (a `${VAR:?}` error, a bad port,
    /// an unknown stage, ...).
    #[error("Dockerfile line {line}: {message}")]
    Instruction { line: usize, message: String },
    #[error("target stage \"{0}\" could not be found")]
    UnknownTarget(String),
    /// A COPY/ADD source that cannot be taken from the build context (`reason` names it).
    #[error("{reason}")]
    Context { path: String, reason: String },
}

impl Error {
    /// The 1-based Dockerfile line, when the error is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Parse { line, .. } | Error::Instruction { line, .. } => Some(*line),
            _ => None,
        }
    }

    pub(crate) fn at(line: usize, message: impl Into<String>) -> Error {
        Error::Instruction {
            line,
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
