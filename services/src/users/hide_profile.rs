//! Who the user directory leaves out, as the state's messenger does it (Tchap's "red list"): an
//! agent who set the global account data `im.vector.hide_profile` to `{"hide_profile": true}`,
//! and accounts that expired (`[account_validity]`) or were deactivated. Only this node's accounts
//! are judged here; another node's agents are hidden by their own node.

use ruma::UserId;

use crate::{error::Result, services::Services};

/// The account data type Tchap's clients set.
pub const ACCOUNT_DATA_TYPE: &str = crate::users::discovery::state::HIDE_PROFILE;

/// Whether `user` is to be left out of user directory results.
pub fn hidden(services: &Services, user: &UserId) -> Result<bool> {
    if !services.users.is_local(user) {
        return Ok(false);
    }
    if !services.users.is_active(user)? {
        return Ok(true);
    }
    let asked = services
        .account_data
        .get(user, None, ACCOUNT_DATA_TYPE)?
        .is_some_and(|content| content.get("hide_profile").and_then(|v| v.as_bool()) == Some(true));
    if asked {
        return Ok(true);
    }
    Ok(services.account_validity.is_expired(user)? && !crate::users::account_validity::exempt(services, user)?)
}
