//! Client-Server endpoints only application services call.

use std::sync::Arc;

use ruma::api::client::{
    appservice::{request_ping, set_room_visibility},
    room::Visibility,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    services::Services,
};

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`: the server pings the appservice
/// (`POST /_matrix/app/v1/ping`) and says how long it took; only that appservice may ask.
pub async fn ping(
    services: Arc<Services>,
    request: Ruma<request_ping::v1::Request>,
) -> Result<request_ping::v1::Response> {
    let owner = request.sender()?;
    let service = owner
        .appservice
        .as_deref()
        .filter(|id| *id == request.body.appservice_id)
        .and_then(|id| services.appservices.get(id))
        .ok_or_else(|| Error::forbidden("only the application service itself may ask for its ping"))?;
    let txn = request.body.transaction_id.as_ref().map(|t| t.as_str());
    let duration = crate::appservice::sender::ping(&services, service, txn).await?;
    Ok(request_ping::v1::Response::new(duration))
}

/// `PUT /directory/list/appservice/{networkId}/{roomId}`: an appservice publishes (or hides) a
/// room of a third-party network it bridges, in that network's listing of the directory
/// (`/publicRooms` with `third_party_instance_id` `<appservice id>|<network id>`, or
/// `include_all_networks`), not in the server's own.
pub async fn set_network_visibility(
    services: Arc<Services>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let owner = request.sender()?;
    if owner.appservice.is_none() {
        return Err(Error::forbidden("only an application service may publish rooms for a network"));
    }
    if !services.rooms.exists(&request.body.room_id)? {
        return Err(Error::not_found("unknown room"));
    }
    let public = match request.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility must be public or private")),
    };
    tracing::info!(appservice = ?owner.appservice, network = %request.body.network_id, room = %request.body.room_id, public, "appservice room listing");
    let service = owner.appservice.as_deref().unwrap_or_default();
    let instance = format!("{service}|{}", request.body.network_id);
    services.rooms.set_published_in(&request.body.room_id, public, Some(&instance))?;
    Ok(set_room_visibility::v3::Response::new())
}
