//! Hemicycle's workspace appservice (`hemicycle-workspace`): a room's document library, tasks and
//! calendar kept as room state written by the appservice's bot, so every member sees them from any Matrix client,
//! every server in the room replicates them, and other tools read them. It is registered like
//! any third-party appservice (a Synapse-format registration file), with no private shortcut
//! into the homeserver. See docs/appservices.md.

// matrix-sdk's sync future is deep: proving it `Send` (for `tokio::spawn`) needs more than the default.
#![recursion_limit = "256"]

pub mod bot;
pub mod calendar;
pub mod commands;
pub mod config;
pub mod e2ee;
pub mod http;
pub mod ics;
pub mod library;
pub mod matrix;
pub mod openid;
pub mod rights;
pub mod service;
pub mod store;
pub mod tasks;
pub mod widgets;

use std::sync::Arc;

/// Loads the configuration, reads the rooms the bot is in, then serves until killed.
pub async fn run(config: config::Config) -> Result<(), String> {
    let registration = config.registration()?;
    let store = store::Store::open(&config.data_dir)?;
    let sender = format!("@{}:{}", registration.sender_localpart, config.server_name);
    let localpart = config.user_localpart.as_deref().unwrap_or(&registration.sender_localpart);
    let bot = format!("@{localpart}:{}", config.server_name);
    let matrix = matrix::Matrix::new(&config.homeserver_url, &registration.as_token, &sender, bot);
    let listen = config.listen;
    let ws = Arc::new(service::Workspace::new(config, matrix, store, registration.hs_token.clone()));
    // The homeserver may still be starting: retry the first read for a while.
    let mut attempt = 0;
    let rooms = loop {
        let read = async {
            ws.matrix.register_bot().await?;
            ws.matrix.joined_rooms().await
        };
        match read.await {
            Ok(rooms) => break rooms,
            Err(e) if attempt < 30 => {
                tracing::warn!(error = %e, "homeserver not answering yet");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(format!("cannot list the bot's rooms: {e}")),
        }
    };
    for room in rooms {
        ws.load_room(&room).await.map_err(|e| format!("cannot read {room}: {e}"))?;
    }
    if ws.config.encryption {
        let device = e2ee::E2ee::open(&ws, &ws.config.data_dir).await?;
        if ws.e2ee.set(device).is_err() {
            return Err("the bot's device was opened twice".into());
        }
        tokio::spawn(e2ee::E2ee::run(ws.clone()));
    }
    tokio::spawn(bot::reminders(ws.clone()));
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!("hemicycle-workspace listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
    // Tell the homeserver we are up: it pings back and retries what it holds for us at once
    // rather than at the end of its backoff.
    let pinger = ws.clone();
    tokio::spawn(async move {
        let path = format!("/_matrix/client/v1/appservice/{}/ping", matrix::segment(&registration.id));
        if let Err(error) =
            pinger.matrix.call_as_service(reqwest::Method::POST, &path, Some(&serde_json::json!({}))).await
        {
            tracing::warn!(%error, "the homeserver did not answer the start-up ping");
        }
    });
    axum::serve(listener, http::router(ws)).await.map_err(|e| e.to_string())
}
