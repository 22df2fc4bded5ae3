//! The error codes of the protocol (docs/protocol.md), shared by every layer.
//!
//! The Lua library raises the domain codes in upper case (`NOT_FOUND ...`);
//! the socket protocol shows them in lower case (`not_found`). This module
//! only names them: it does no I/O and depends on nothing of ours.

use std::fmt;

/// An error code a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Syntax, arity, or a value out of range.
    BadRequest,
    /// A command the daemon does not know.
    UnknownCommand,
    /// No such user, meeting or instance.
    NotFound,
    /// The instance is not active (or the meeting has no active instance).
    Inactive,
    /// A private meeting, and the user's e-mail is not in its audience.
    NotAllowed,
    /// The user is in the instance already.
    AlreadyJoined,
    /// The user is not in the instance.
    NotJoined,
    /// An admin command from a peer that is not an admin.
    PermissionDenied,
    /// A request line over the limit.
    TooLarge,
    /// Redis could not be reached: the request was not applied, and
    /// sending it again is safe.
    Unavailable,
    /// The request was sent to Redis and no reply came in time: it may or
    /// may not have been applied (a POST sent again with its `ID` is
    /// applied at most once).
    InDoubt,
    /// A bug or an unexpected reply: never the client's fault.
    Internal,
}

impl Code {
    /// Every code, in the order of docs/protocol.md.
    pub const ALL: [Code; 12] = [
        Code::BadRequest,
        Code::UnknownCommand,
        Code::NotFound,
        Code::Inactive,
        Code::NotAllowed,
        Code::AlreadyJoined,
        Code::NotJoined,
        Code::PermissionDenied,
        Code::TooLarge,
        Code::Unavailable,
        Code::InDoubt,
        Code::Internal,
    ];

    /// The code as the protocol writes it: `not_found`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::UnknownCommand => "unknown_command",
            Code::NotFound => "not_found",
            Code::Inactive => "inactive",
            Code::NotAllowed => "not_allowed",
            Code::AlreadyJoined => "already_joined",
            Code::NotJoined => "not_joined",
            Code::PermissionDenied => "permission_denied",
            Code::TooLarge => "too_large",
            Code::Unavailable => "unavailable",
            Code::InDoubt => "in_doubt",
            Code::Internal => "internal",
        }
    }

    /// The code of an error reply of the Lua library (`NOT_FOUND`), if it is
    /// one the library raises.
    pub fn from_library(code: &str) -> Option<Code> {
        Some(match code {
            "BAD_REQUEST" => Code::BadRequest,
            "NOT_FOUND" => Code::NotFound,
            "INACTIVE" => Code::Inactive,
            "NOT_ALLOWED" => Code::NotAllowed,
            "ALREADY_JOINED" => Code::AlreadyJoined,
            "NOT_JOINED" => Code::NotJoined,
            "INTERNAL" => Code::Internal,
            _ => return None,
        })
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
