//! `GET /_matrix/client/{v3,r0,unstable}/password_policy` (MSC2000): the rules a new password
//! must keep, so clients check as the user types; the server enforces them anyway.

use std::sync::Arc;

use crate::{api::ruma::Ruma, error::Result, services::Services};

/// The endpoint, declared with ruma's macros as the spec-shaped ones are (ruma has no MSC2000).
pub mod get_password_policy {
    use ruma::api::{auth_scheme::NoAuthentication, metadata, request, response};

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: NoAuthentication,
        history: {
            unstable => "/_matrix/client/unstable/password_policy",
            1.0 => "/_matrix/client/r0/password_policy",
            1.1 => "/_matrix/client/v3/password_policy",
        }
    }

    #[request]
    pub struct Request {}

    #[response]
    pub struct Response {
        /// `m.minimum_length`, `m.require_digit`, …; empty when no policy is enforced.
        #[ruma_api(body)]
        pub rules: serde_json::Map<String, serde_json::Value>,
    }
}

pub async fn get(
    services: Arc<Services>,
    _request: Ruma<get_password_policy::Request>,
) -> Result<get_password_policy::Response> {
    Ok(get_password_policy::Response { rules: services.users.password_policy().announced() })
}
