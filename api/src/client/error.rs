//! What can go wrong talking to the daemon: not reaching it, its error answers (Docker's status
//! and `{"message": …}`), and answers or streams that are not what the API promises.

use hyper::StatusCode;

use crate::daemon::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the address (no socket, connection refused, …).
    #[error("cannot connect to skiffd at {host}: {error}; is skiffd running?")]
    Connect { host: String, error: std::io::Error },
    /// The daemon answered with an error status; the text is Docker's wording.
    #[error("Error response from daemon: {}", .0.message)]
    Api(ApiError),
    /// The connection failed after it was made.
    #[error("talking to skiffd: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("cannot decode skiffd's answer to {what}: {error}")]
    Decode {
        what: String,
        error: serde_json::Error,
    },
    /// An answer that breaks the API's rules (no 101 to an upgrade, a bad frame header, …).
    #[error("{0}")]
    Protocol(String),
    /// Reading or writing a hijacked connection.
    #[error("on the attached stream: {0}")]
    Stream(#[from] std::io::Error),
}

impl ClientError {
    /// The daemon's status, for errors the daemon answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api(e) => Some(e.status),
            _ => None,
        }
    }

    /// The daemon's message, for errors the daemon answered.
    pub fn message(&self) -> Option<&str> {
        match self {
            ClientError::Api(e) => Some(&e.message),
            _ => None,
        }
    }

    /// A 404 whose message is Docker's "No such image: …" (`docker run` pulls and retries).
    pub fn is_no_such_image(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
            && self
                .message()
                .is_some_and(|m| m.starts_with("No such image"))
    }
}
