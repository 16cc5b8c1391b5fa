//! Client-Server API handlers, one module per area of the spec.

pub mod account;
pub mod account_data;
pub mod account_validity;
pub mod appservice;
pub mod delayed;
pub mod devices;
pub mod directory;
pub mod discovery;
pub mod endpoints;
pub mod ephemeral;
pub mod keys;
pub mod media;
pub mod media_proxy;
pub mod membership;
pub mod network;
pub mod password_policy;
pub mod presence;
pub mod profile;
pub mod push;
pub mod rooms;
pub mod rtc;
pub mod search;
pub mod session;
pub mod sliding;
pub mod spaces;
pub mod sync;
pub mod thirdparty;
pub mod threepid;

use std::sync::Arc;

use axum::Router;

use super::ruma::RouterExt;
use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = delayed::routes(rtc::routes(router));
    account_validity::routes(devices::route_update(sync::route(media_proxy::routes(media::routes(router)))))
        .ruma(discovery::versions)
        .ruma(discovery::well_known_server)
        .ruma(discovery::support)
        .ruma(discovery::turn_server)
        .ruma(discovery::capabilities)
        .ruma(session::login_types)
        .ruma(session::login)
        .ruma(session::logout)
        .ruma(session::refresh)
        .ruma(session::get_token)
        .ruma(session::logout_all)
        .ruma(account::register)
        .ruma(appservice::ping)
        .ruma(appservice::set_network_visibility)
        .ruma(account::username_available)
        .ruma(account::registration_token_validity)
        .ruma(account::whoami)
        .ruma(account::openid_token)
        .ruma(thirdparty::protocols)
        .ruma(thirdparty::protocol)
        .ruma(thirdparty::locations_of_protocol)
        .ruma(thirdparty::users_of_protocol)
        .ruma(thirdparty::locations_of_alias)
        .ruma(thirdparty::users_of_user_id)
        .ruma(discovery::policy_server)
        .ruma(threepid::list)
        .ruma(threepid::delete)
        .ruma(threepid::unbind)
        .ruma(threepid::add)
        .ruma(threepid::bind)
        .ruma(threepid::email_for_account)
        .ruma(threepid::msisdn_for_account)
        .ruma(threepid::email_for_password)
        .ruma(threepid::msisdn_for_password)
        .ruma(threepid::email_for_registration)
        .ruma(threepid::msisdn_for_registration)
        .route(
            "/_hemicycle/client/email/submit_token",
            axum::routing::get(threepid::submit_token_link).post(threepid::submit_token),
        )
        .ruma(account::change_password)
        .ruma(password_policy::get)
        .ruma(account::deactivate)
        .ruma(devices::list)
        .ruma(devices::get)
        .ruma(devices::delete)
        .ruma(devices::delete_many)
        .ruma(profile::get_all)
        .ruma(profile::get_field)
        .ruma(profile::set_field)
        .ruma(profile::delete_field)
        .ruma(account_data::get_global)
        .ruma(account_data::set_global)
        .ruma(account_data::get_room)
        .ruma(account_data::set_room)
        .ruma(account_data::create_filter)
        .ruma(account_data::get_filter)
        .ruma(account_data::get_tags)
        .ruma(account_data::create_tag)
        .ruma(account_data::delete_tag)
        .ruma(keys::upload)
        .ruma(keys::query)
        .ruma(keys::claim)
        .ruma(keys::changes)
        .ruma(keys::upload_signing)
        .ruma(keys::upload_signatures)
        .ruma(keys::create_backup)
        .ruma(keys::latest_backup)
        .ruma(keys::get_backup)
        .ruma(keys::update_backup)
        .ruma(keys::delete_backup)
        .ruma(keys::put_keys)
        .ruma(keys::put_room_keys)
        .ruma(keys::put_session_key)
        .ruma(keys::get_keys)
        .ruma(keys::get_room_keys)
        .ruma(keys::get_session_key)
        .ruma(keys::delete_keys)
        .ruma(keys::delete_room_keys)
        .ruma(keys::delete_session_key)
        .ruma(sliding::sync)
        .ruma(spaces::get)
        .ruma(spaces::summary)
        .ruma(rooms::timestamp_to_event)
        .ruma(rooms::report_event)
        .ruma(rooms::report_room)
        .ruma(profile::report_user)
        .ruma(devices::whois)
        .ruma(devices::is_locked)
        .ruma(devices::lock)
        .ruma(devices::is_suspended)
        .ruma(devices::suspend)
        .ruma(ephemeral::typing)
        .ruma(ephemeral::receipt)
        .ruma(ephemeral::read_markers)
        .ruma(ephemeral::send_to_device)
        .ruma(presence::set)
        .ruma(presence::get)
        .ruma(push::get_all)
        .ruma(push::get_global)
        .ruma(push::get)
        .ruma(push::set)
        .ruma(push::delete)
        .ruma(push::get_enabled)
        .ruma(push::set_enabled)
        .ruma(push::get_actions)
        .ruma(push::set_actions)
        .ruma(push::notifications)
        .ruma(push::get_pushers)
        .ruma(push::set_pusher)
        .ruma(rooms::create)
        .ruma(rooms::upgrade)
        .ruma(rooms::get_state_event)
        .ruma(rooms::get_state)
        .ruma(rooms::messages)
        .ruma(rooms::context)
        .ruma(rooms::get_event)
        .ruma(rooms::redact)
        .ruma(rooms::relations)
        .ruma(rooms::threads)
        .ruma(rooms::relations_with_type)
        .ruma(rooms::relations_with_type_and_event)
        .ruma(membership::join_by_id)
        .ruma(membership::join_by_id_or_alias)
        .ruma(membership::invite)
        .ruma(membership::leave)
        .ruma(membership::forget)
        .ruma(membership::kick)
        .ruma(membership::ban)
        .ruma(membership::unban)
        .ruma(membership::knock)
        .ruma(membership::joined)
        .ruma(membership::mutual_rooms)
        .ruma(membership::joined_members_of)
        .ruma(membership::members)
        .ruma(directory::create)
        .ruma(directory::get)
        .ruma(directory::delete)
        .ruma(directory::room_aliases)
        .ruma(directory::get_visibility)
        .ruma(directory::set_visibility)
        .ruma(directory::public_rooms)
        .ruma(directory::public_rooms_filtered)
        .ruma(directory::search)
        .ruma(search::search)
        .route("/_matrix/identity/api/v1/info", axum::routing::get(network::info))
        .route("/_matrix/identity/api/v1/internal-info", axum::routing::get(network::internal_info))
        .route("/_matrix/identity/v2/pubkey/ephemeral/isvalid", axum::routing::get(network::key_is_valid))
        .route("/_matrix/identity/v2/pubkey/isvalid", axum::routing::get(network::key_is_valid))
}
