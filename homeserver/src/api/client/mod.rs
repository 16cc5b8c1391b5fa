//! Client-Server API handlers, one module per area of the spec.

pub mod account;
pub mod account_data;
pub mod devices;
pub mod discovery;
pub mod profile;
pub mod session;

use std::sync::Arc;

use axum::Router;

use super::ruma::RouterExt;
use crate::services::Services;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(discovery::versions)
        .ruma(discovery::well_known_client)
        .ruma(discovery::well_known_server)
        .ruma(discovery::capabilities)
        .ruma(session::login_types)
        .ruma(session::login)
        .ruma(session::logout)
        .ruma(session::logout_all)
        .ruma(account::register)
        .ruma(account::username_available)
        .ruma(account::registration_token_validity)
        .ruma(account::whoami)
        .ruma(account::change_password)
        .ruma(account::deactivate)
        .ruma(devices::list)
        .ruma(devices::get)
        .ruma(devices::update)
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
}
