//! Running the server: listeners, the admin socket, graceful shutdown.

use std::{io::Write, net::SocketAddr};

use tokio::net::TcpListener;

use crate::{admin, api, config::Config, services::Services};

/// Serves until SIGTERM or SIGINT, then lets in-flight requests finish and flushes the database.
pub async fn run(mut config: Config) -> Result<(), String> {
    let listener = TcpListener::bind(config.listen.client)
        .await
        .map_err(|e| format!("cannot listen on {} (listen.client): {e}", config.listen.client))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // With port 0 the real port is known only now; everything downstream (well-known) uses it.
    config.listen.client = addr;
    let services = Services::open(config).map_err(|e| e.to_string())?;
    let config = services.config.clone();
    let resuming = services.clone();
    tokio::spawn(async move {
        if let Err(error) = crate::users::deactivation::resume(&resuming).await {
            tracing::error!(%error, "finishing interrupted deactivations failed");
        }
    });
    services.presence.load_active().map_err(|e| e.to_string())?;
    let presence = services.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            if let Err(error) = presence.presence.expire(crate::users::now_ms()).await {
                tracing::warn!(%error, "presence idle timer failed");
            }
        }
    });
    let admin_socket = config.admin_socket_path();
    let admin_task = admin::listen(services.clone(), &admin_socket)
        .map_err(|e| format!("cannot open the admin socket {}: {e}", admin_socket.display()))?;
    if config.listen.federation.is_some() {
        tracing::warn!("listen.federation is set, but the federation API is not served yet");
    }
    tracing::info!(server_name = %config.server_name, key_id = %services.server_keys.key_id(), "client API on http://{addr}");
    // Tests and scripts read this line to learn the bound port (listen.client may use port 0).
    println!("hemicycle listening on http://{addr}");
    let _ = std::io::stdout().flush();

    let app = api::router(services.clone());
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await;
    admin_task.abort();
    let _ = std::fs::remove_file(&admin_socket);
    services.db.flush().map_err(|e| format!("flushing the database failed: {e}"))?;
    tracing::info!("stopped");
    served.map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
