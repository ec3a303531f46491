//! Errors as the Docker API reports them: an HTTP status and `{"message": "..."}`.

use hyper::StatusCode;

/// What the engine behind the API reports when a call fails; each kind carries Docker's status.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// 404, with Docker's wording (`docker` and docker-py match on it).
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// 404.
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    /// 404; `docker run` pulls the image and retries on this one.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// 404, with Docker's wording.
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    /// 404, with Docker's wording.
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    /// 403, as Docker answers removing a network in use or a predefined one.
    #[error("{0}")]
    Forbidden(String),
    /// 409: a name in use, a running container removed without force, …
    #[error("{0}")]
    Conflict(String),
    /// 400: a request the engine cannot act on as given.
    #[error("{0}")]
    InvalidArgument(String),
    /// 304 with an empty body: start of a running container, stop of a stopped one.
    #[error("container already in the requested state")]
    NotModified,
    /// 501: the call exists in the API but skiff's engine does not do it yet.
    #[error("{0} is not implemented yet in skiffd")]
    NotImplemented(&'static str),
    /// 500: anything else; the text is shown to the client.
    #[error("{0}")]
    Internal(String),
}

impl BackendError {
    pub fn status(&self) -> StatusCode {
        match self {
            BackendError::NoSuchContainer(_)
            | BackendError::NoSuchExec(_)
            | BackendError::NoSuchImage(_)
            | BackendError::NoSuchVolume(_)
            | BackendError::NoSuchNetwork(_) => StatusCode::NOT_FOUND,
            BackendError::Forbidden(_) => StatusCode::FORBIDDEN,
            BackendError::Conflict(_) => StatusCode::CONFLICT,
            BackendError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            BackendError::NotModified => StatusCode::NOT_MODIFIED,
            BackendError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer of the API: its status and the text of `{"message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found_page() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "page not found")
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        ApiError::new(e.status(), e.to_string())
    }
}
