//! The services of one server, built once at start-up and shared through axum state as an `Arc`:
//! no global singletons, so tests and the CLI can open their own.

use std::sync::Arc;

use crate::{
    config::Config,
    db::{Database, DbError},
    ephemeral::{presence::Presence, receipts::Receipts, to_device::ToDevice, typing::Typing},
    error::Error,
    keys::{backup::Backups, Keys},
    media::Media,
    ratelimit::RateLimiter,
    rooms::Rooms,
    server_keys::ServerKeys,
    stream::Writer,
    uia::Uia,
    users::{account_data::AccountData, filters::Filters, profile::Profiles, Users},
};

pub struct Services {
    pub config: Arc<Config>,
    pub db: Arc<Database>,
    pub users: Users,
    pub keys: Keys,
    pub backups: Backups,
    pub profiles: Arc<Profiles>,
    pub rooms: Rooms,
    pub typing: Typing,
    pub receipts: Receipts,
    pub to_device: ToDevice,
    pub presence: Presence,
    /// Per-connection memory of simplified sliding sync.
    pub sliding_connections: crate::sync::sliding::state::Connections,
    pub account_data: AccountData,
    pub filters: Filters,
    pub uia: Uia,
    pub rate_limiter: RateLimiter,
    pub server_keys: Arc<ServerKeys>,
    pub media: Media,
    pub federation: crate::federation::Federation,
    pub reports: crate::reports::Reports,
    pub audit: crate::audit::Audit,
    pub registration_tokens: Arc<crate::users::registration_tokens::RegistrationTokens>,
    /// Room shutdowns started through the admin API since start-up (Synapse keeps them in memory
    /// too): delete id → (room, status).
    pub room_deletions: std::sync::Mutex<std::collections::HashMap<String, (ruma::OwnedRoomId, serde_json::Value)>>,
    /// History purges started through the admin API since start-up: purge id → status.
    pub history_purges: std::sync::Mutex<std::collections::HashMap<String, serde_json::Value>>,
    /// Redactions of a user's events started through the admin API: redact id → status.
    pub user_redactions: std::sync::Mutex<std::collections::HashMap<String, serde_json::Value>>,
    pub push: crate::push::evaluate::state::Evaluator,
    pub push_sender: crate::push::sender::state::PushSender,
    pub search: crate::search::state::Search,
    pub threepids: crate::users::threepid::Threepids,
    pub appservices: crate::appservice::Registry,
    pub appservice_sender: crate::appservice::sender::state::AppserviceSender,
    pub metrics: crate::metrics::state::Metrics,
    /// Expiring accounts (`[account_validity]`).
    pub account_validity: Arc<crate::users::account_validity::state::AccountValidity>,
    /// The discovery room every agent joins, so other nodes' directories find them.
    pub discovery: Arc<crate::users::discovery::state::Discovery>,
    /// The ministry network's settings and email-domain map (docs/network.md).
    pub network: Arc<crate::network::Network>,
    /// Start time and probes for the status document other nodes ask for (network/status.rs).
    pub network_status: crate::network::state::NetworkStatus,
    /// Admins' second factor for dangerous actions (users/totp.rs).
    pub totp: crate::users::totp::Totp,
    /// Delayed events (MSC4140): scheduled events and their one timer.
    pub delayed_events: crate::rooms::delayed::state::DelayedEvents,
    /// The built-in LiveKit authorisation service, when `[matrix_rtc.livekit]` is set.
    pub livekit: Option<crate::rtc::state::LiveKit>,
    /// The OAuth 2.0 authorization server (`[oauth]`).
    pub oauth: crate::oauth::Oauth,
    /// The upstream OpenID Connect providers of `[[oauth.upstream]]`.
    pub upstreams: crate::oauth::state::Upstreams,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("{0}")]
    Other(#[from] Error),
}

impl Services {
    /// Opens the database and builds every service on it.
    pub fn open(config: Config) -> Result<Arc<Self>, OpenError> {
        let db = Arc::new(Database::open_with_budget(&config.database.path, config.database.cache_mb)?);
        let server_keys = Arc::new(
            ServerKeys::load_or_generate(&db, config.server_name.clone())?
                .with_validity(config.federation.key_validity_ms()),
        );
        let config = Arc::new(config);
        let directory = match config.ldap.enabled {
            true => Some(
                hemicycle_bridges::ldap::Directory::new(Arc::new(config.ldap.clone()))
                    .map_err(|e| Error::Internal(e.to_string()))?,
            ),
            false => None,
        };
        let profiles = Arc::new(Profiles::new(db.clone()));
        let registration_tokens = Arc::new(crate::users::registration_tokens::RegistrationTokens::new(db.clone()));
        let pending = Arc::new(std::sync::Mutex::new(crate::rooms::overlay::Pending::default()));
        let writer = Arc::new(Writer::start(db.clone(), pending.clone()));
        let discovery = Arc::new(crate::users::discovery::state::Discovery::new(
            config.directory.discovery_room(),
            config.directory.discovery_passive_rooms.clone(),
            db.clone(),
            writer.notifier.clone(),
        )?);
        let account_validity = Arc::new(crate::users::account_validity::state::AccountValidity::new(
            db.clone(),
            config.account_validity.clone(),
            config.email.smtp_host.is_some(),
            discovery.clone(),
        )?);
        let network = Arc::new(crate::network::Network::new(&config.server_name, &config.network)?);
        let appservices = crate::appservice::Registry::load(&config.appservices.registrations, &config.server_name)?;
        let services = Arc::new(Self {
            users: Users::new(db.clone(), writer.clone(), config.server_name.clone())
                .with_directory(directory)
                .with_password_policy(crate::users::password_policy::PasswordPolicy::new(
                    config.password_policy.clone(),
                ))
                .with_validity(account_validity.clone())
                .with_discovery(discovery.clone()),
            account_validity,
            keys: Keys::new(db.clone(), writer.clone()).with_key_count_watch(appservices.key_count_watch(db.clone())),
            backups: Backups::new(db.clone()),
            rooms: Rooms::new(
                db.clone(),
                config.server_name.clone(),
                server_keys.clone(),
                profiles.clone(),
                writer.clone(),
                pending,
            )
            .with_network(network.clone()),
            network,
            network_status: Default::default(),
            totp: crate::users::totp::Totp::new(db.clone()),
            account_data: AccountData::new(db.clone(), writer.clone()).with_discovery(discovery.clone()),
            discovery,
            typing: Typing::new(db.clone(), writer.notifier.clone()),
            receipts: Receipts::new(db.clone(), writer.clone()),
            to_device: ToDevice::new(db.clone(), writer.clone()),
            presence: Presence::new(db.clone(), writer.clone()),
            sliding_connections: Default::default(),
            profiles,
            filters: Filters::new(db.clone()),
            uia: Uia::new(config.registration.token.clone(), registration_tokens.clone()),
            registration_tokens,
            room_deletions: Default::default(),
            history_purges: Default::default(),
            user_redactions: Default::default(),
            rate_limiter: RateLimiter::new(config.rate_limits.clone()),
            server_keys: server_keys.clone(),
            media: Media::open(db.clone(), config.server_name.clone(), &config)?,
            federation: crate::federation::Federation::new(config.clone(), db.clone(), server_keys.clone())?,
            reports: crate::reports::Reports::new(db.clone()),
            audit: crate::audit::Audit::new(db.clone()),
            push: crate::push::evaluate::state::Evaluator::new(&db),
            push_sender: Default::default(),
            search: crate::search::state::Search::open(&config.database.path.join("search"))?,
            threepids: crate::users::threepid::Threepids::new(db.clone(), config.clone()),
            appservices,
            appservice_sender: Default::default(),
            metrics: Default::default(),
            delayed_events: crate::rooms::delayed::state::DelayedEvents::new(db.clone(), config.delayed_events.clone()),
            livekit: config.matrix_rtc.livekit.as_ref().map(crate::rtc::state::LiveKit::new).transpose()?,
            oauth: crate::oauth::Oauth::new(db.clone(), config.oauth.clone()),
            upstreams: crate::oauth::state::Upstreams::new(&config.oauth.upstream)?,
            db,
            config,
        });
        services.rooms.index_visibility_history()?;
        Ok(services)
    }
}

/// What unit tests of the services share: a store in a temporary folder.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use ruma::{OwnedRoomId, OwnedUserId};

    use super::Services;
    use crate::{config::Config, rooms::create::CreateRoom};

    /// Services on a new store (kept while the folder lives), the default configuration changed
    /// by `more`.
    pub(crate) fn open(more: impl FnOnce(&mut Config)) -> (tempfile::TempDir, Arc<Services>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.database.path = dir.path().join("db");
        more(&mut config);
        let services = Services::open(config).expect("services");
        (dir, services)
    }

    /// Users alice, bob and carol, and a public room of alice's that bob joined.
    pub(crate) async fn three_users_in(services: &Services) -> ([OwnedUserId; 3], OwnedRoomId) {
        let alice = services.users.create("alice", None, false).await.expect("alice");
        let bob = services.users.create("bob", None, false).await.expect("bob");
        let carol = services.users.create("carol", None, false).await.expect("carol");
        let room = services
            .rooms
            .create_room(&alice, CreateRoom { public: true, ..Default::default() }, &ruma::RoomVersionId::V12)
            .await
            .expect("room");
        services.rooms.join(&room, &bob, None).await.expect("join");
        ([alice, bob, carol], room)
    }

    /// [`open`] with the defaults, then [`three_users_in`].
    pub(crate) async fn three_users_and_a_room() -> (tempfile::TempDir, Arc<Services>, [OwnedUserId; 3], OwnedRoomId) {
        let (dir, services) = open(|_| {});
        let (users, room) = three_users_in(&services).await;
        (dir, services, users, room)
    }
}
