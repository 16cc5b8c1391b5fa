//! Errors of the services, in Matrix terms but free of HTTP: the API layer maps each kind to its
//! status code and error body.

use std::time::Duration;

use crate::db::DbError;

/// The 401 body of user-interactive authentication that tells the client which stages remain.
#[derive(Debug)]
pub struct UiaChallenge {
    pub body: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidParam(String),
    #[error("{0}")]
    MissingParam(String),
    #[error("{0}")]
    BadJson(String),
    #[error("{0}")]
    InvalidUsername(String),
    #[error("user id already taken")]
    UserInUse,
    #[error("guest access is not allowed on this server")]
    GuestAccessForbidden,
    #[error("the access token is unknown or expired")]
    UnknownToken,
    /// A third-party id (email, phone) this server will not validate.
    #[error("{0}")]
    ThreepidDenied(String),
    /// A third-party id validation session that does not exist or was not completed.
    #[error("{0}")]
    ThreepidAuthFailed(String),
    #[error("this address is already in use")]
    ThreepidInUse,
    #[error("no account has this address")]
    ThreepidNotFound,
    /// The account is locked by an admin.
    #[error("this account is locked")]
    UserLocked,
    /// The account is suspended by an admin.
    #[error("this account is suspended: it may read and leave rooms, not act in them")]
    UserSuspended,
    /// A new password that breaks `[password_policy]` (`400`, MSC2000's errcode of the rule).
    #[error("{message}")]
    PasswordRefused { errcode: &'static str, message: String },
    /// The account is past its expiry (`403 ORG_MATRIX_EXPIRED_ACCOUNT`): only renewing and
    /// logging out remain possible.
    #[error("this account has expired; renew it with the link sent by email")]
    ExpiredAccount,
    /// An access token past its lifetime: the client refreshes it (`soft_logout: true`).
    #[error("the access token has expired")]
    ExpiredToken,
    #[error("too many requests")]
    LimitExceeded { retry_after: Duration },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unrecognized(String),
    #[error("{0}")]
    UnsupportedRoomVersion(String),
    #[error("{0}")]
    RoomInUse(String),
    /// `createRoom`'s alias is taken: `400 M_ROOM_IN_USE` there (the alias API says 409).
    #[error("{0}")]
    AliasTakenAtCreation(String),
    #[error("{0}")]
    BadAlias(String),
    /// A request the spec answers with plain `M_UNKNOWN` and 400 (e.g. forgetting a joined room).
    #[error("{0}")]
    BadState(String),
    /// A refusal Synapse answers with `403 M_UNKNOWN` and that clients of a ministry network know
    /// by its message ("Not allowed to publish room").
    #[error("{0}")]
    Refused(String),
    /// A user id or alias in a namespace an application service holds exclusively.
    #[error("{0}")]
    Exclusive(String),
    /// An application service did not answer a ping as it should (`M_URL_NOT_SET`,
    /// `M_CONNECTION_FAILED`, `M_CONNECTION_TIMEOUT`, `M_BAD_STATUS`).
    #[error("{message}")]
    AppserviceUnreachable { status: u16, errcode: &'static str, message: String, extra: Option<serde_json::Value> },
    /// The LDAP directory cannot be reached or did not answer within `ldap.timeout_ms`
    /// (`503 M_UNKNOWN`: retry later).
    #[error("{0}")]
    DirectoryUnavailable(String),
    /// Something needs another server, which this server cannot reach yet (`502 M_UNKNOWN`).
    #[error("{0}")]
    RemoteUnreachable(String),
    /// Account data the server manages through its own API (`405 M_BAD_JSON`, as the spec says).
    #[error("{0}")]
    ServerManaged(String),
    /// Content was already uploaded to this media id (`PUT /media/v3/upload/{server}/{id}`).
    #[error("{0}")]
    CannotOverwriteMedia(String),
    /// The media id was reserved with `/media/v1/create` but nothing was uploaded in time.
    #[error("{0}")]
    NotYetUploaded(String),
    /// A user-interactive authentication step is (still) required; carries the spec's UIA body.
    #[error("user-interactive authentication required")]
    Uia(Box<UiaChallenge>),
    /// A key backup write names a version that is not the user's current one.
    #[error("{message}")]
    WrongRoomKeysVersion { message: String, current: Option<String> },
    #[error("{0}")]
    Database(#[from] DbError),
    /// A federation request without a valid X-Matrix signature (`401 M_UNAUTHORIZED`).
    #[error("{0}")]
    Unauthorized(String),
    /// The room's version is not one the other server supports (`400 M_INCOMPATIBLE_ROOM_VERSION`).
    #[error("room version {0} is not supported by the joining server")]
    IncompatibleRoomVersion(String),
    /// A file the antivirus found infected (`403 MCS_MEDIA_NOT_CLEAN`, as matrix-content-scanner
    /// answers): served to nobody.
    #[error("{0}")]
    NotClean(String),
    /// A file whose sniffed MIME type the antivirus policy forbids (`403 MCS_MIME_TYPE_FORBIDDEN`).
    #[error("{0}")]
    MimeTypeForbidden(String),
    /// The antivirus could not give a verdict and the policy refuses unscanned files
    /// (`503 MCS_SCANNER_UNAVAILABLE`: try again later).
    #[error("{0}")]
    ScannerUnavailable(String),
    /// An encrypted attachment that does not decrypt with the key given (`400
    /// MCS_MEDIA_FAILED_TO_DECRYPT`).
    #[error("{0}")]
    FailedToDecrypt(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::Forbidden(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
    pub fn invalid_param(msg: impl Into<String>) -> Self {
        Self::InvalidParam(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
