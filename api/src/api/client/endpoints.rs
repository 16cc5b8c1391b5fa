//! Request types of spec endpoints ruma 0.16 lacks or reads differently from the spec, declared
//! with ruma's own macros so handlers still take ruma types.

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`, with `include` optional as the spec has it
/// (ruma 0.16 refuses a request without it).
pub mod get_threads {
    use ruma::{
        api::{auth_scheme::AccessToken, metadata, request, response},
        events::AnyTimelineEvent,
        serde::Raw,
        OwnedRoomId, UInt,
    };

    metadata! {
        method: GET,
        rate_limited: false,
        authentication: AccessToken,
        history: {
            unstable => "/_matrix/client/unstable/org.matrix.msc3856/rooms/{room_id}/threads",
            1.4 => "/_matrix/client/v1/rooms/{room_id}/threads",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub from: Option<String>,
        /// `all` (the default) or `participated`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub include: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub limit: Option<UInt>,
    }

    #[response]
    pub struct Response {
        pub chunk: Vec<Raw<AnyTimelineEvent>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub next_batch: Option<String>,
    }
}

/// `GET /_matrix/client/v1/mutual_rooms` (stable in the spec; ruma 0.16 has only MSC2666's unstable path).
pub mod mutual_rooms {
    use ruma::{
        api::{auth_scheme::AccessToken, metadata, request, response},
        OwnedRoomId, OwnedUserId,
    };

    metadata! {
        method: GET,
        rate_limited: true,
        authentication: AccessToken,
        history: {
            unstable => "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms",
            1.18 => "/_matrix/client/v1/mutual_rooms",
        }
    }

    #[request]
    pub struct Request {
        #[ruma_api(query)]
        pub user_id: OwnedUserId,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub from: Option<String>,
        /// The unstable endpoint's name for `from`.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub batch_token: Option<String>,
    }

    #[response]
    pub struct Response {
        pub joined: Vec<OwnedRoomId>,
        pub count: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub next_batch: Option<String>,
    }
}

/// `POST /_matrix/client/v3/search`, answering with every list the spec describes even when it
/// is empty (ruma 0.16 leaves out an empty `results`, which clients then fail to read).
pub mod search_events {
    use std::collections::BTreeMap;

    use ruma::{
        api::{
            auth_scheme::AccessToken,
            client::search::search_events::v3::{Categories, ResultGroup, SearchResult},
            metadata, request, response,
        },
        events::AnyStateEvent,
        serde::Raw,
        OwnedRoomId, UInt,
    };
    use serde::Serialize;

    metadata! {
        method: POST,
        rate_limited: true,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/search",
            1.1 => "/_matrix/client/v3/search",
        }
    }

    #[request]
    pub struct Request {
        #[serde(skip_serializing_if = "Option::is_none")]
        #[ruma_api(query)]
        pub next_batch: Option<String>,
        pub search_categories: Categories,
    }

    #[response]
    pub struct Response {
        pub search_categories: ResultCategories,
    }

    #[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
    pub struct ResultCategories {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub room_events: Option<RoomEvents>,
    }

    #[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
    pub struct RoomEvents {
        pub count: UInt,
        pub highlights: Vec<String>,
        pub results: Vec<SearchResult>,
        /// Grouping key (`room_id`, `sender`) → group value → group.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub groups: BTreeMap<String, BTreeMap<String, ResultGroup>>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub state: BTreeMap<OwnedRoomId, Vec<Raw<AnyStateEvent>>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub next_batch: Option<String>,
    }
}

/// `POST /_matrix/client/v3/user_directory/search` answered with one field more than ruma's
/// response has: `user_type: "external"` on users of the network's external servers (the field and
/// value the admin API shows them with), so a client need not know the servers' list to mark them.
pub mod search_users {
    use ruma::{
        api::{auth_scheme::AccessToken, metadata, request, response},
        OwnedUserId, UInt,
    };
    use serde::{Deserialize, Serialize};

    metadata! {
        method: POST,
        rate_limited: true,
        authentication: AccessToken,
        history: {
            1.0 => "/_matrix/client/r0/user_directory/search",
            1.1 => "/_matrix/client/v3/user_directory/search",
        }
    }

    #[request]
    pub struct Request {
        pub search_term: String,
        #[serde(default = "default_limit")]
        pub limit: UInt,
    }

    fn default_limit() -> UInt {
        UInt::from(10u32)
    }

    #[response]
    pub struct Response {
        pub results: Vec<User>,
        pub limited: bool,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct User {
        pub user_id: OwnedUserId,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub display_name: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub avatar_url: Option<String>,
        /// `external` for a user of one of `network.external_servers`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub user_type: Option<String>,
    }
}
