//! The terminal's one error type, and the exit code each kind ends the program with.
//!
//! Contract: every message is one line a person can act on; no error ever prints a stack
//! trace. Exit codes: 1 the server refused, answered what cannot be read, or a local file
//! failed; 2 usage; 3 the token was refused (missing, wrong, expired, or the wrong role); 4
//! the API could not be reached.

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// What the user typed (or has not set up) cannot work.
    #[error("{0}")]
    Usage(String),
    /// A file of the terminal's own.
    #[error("{0}")]
    Local(String),
    /// 401 / 403 from the API.
    #[error("{message} (HTTP {status}): check the token with `slotcast login`")]
    Auth { status: u16, message: String },
    /// Any other error answer from the API.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// An answer this terminal cannot read (a field missing or of another kind): another
    /// version of the API, or not slotcast's API at all.
    #[error("the API's answer to {request} does not read: {field}: {message}")]
    Answer {
        request: String,
        field: String,
        message: String,
    },
    /// No answer (connection refused, timeout, DNS).
    #[error("cannot reach the API at {api}: {why}")]
    Unreachable { api: String, why: String },
    /// Publishing could not go on (live).
    #[error("{0}")]
    Live(String),
}

impl TerminalError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Api { .. } | Self::Answer { .. } | Self::Local(_) | Self::Live(_) => 1,
            Self::Usage(_) => 2,
            Self::Auth { .. } => 3,
            Self::Unreachable { .. } => 4,
        }
    }
}
