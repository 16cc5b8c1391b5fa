//! Running the server: listeners, the admin socket, graceful shutdown.

use std::{future::IntoFuture, io::Write, net::SocketAddr};

use tokio::net::TcpListener;

use crate::{admin, api, config::Config, services::Services};

/// Serves until SIGTERM or SIGINT, then lets in-flight requests finish and flushes the database.
pub async fn run(config: Config) -> Result<(), String> {
    run_with(config, || {}).await
}

/// [`run`], calling `started` once the server answers (every listener bound, every background
/// task started), before it serves its first request.
pub async fn run_with(mut config: Config, started: impl FnOnce()) -> Result<(), String> {
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
    crate::users::directory::spawn_periodic(services.clone());
    crate::users::account_validity::start(services.clone()).await.map_err(|e| format!("account validity: {e}"))?;
    crate::rooms::delayed::start(services.clone());
    crate::rtc::delegation::start(services.clone());
    crate::users::discovery::start(services.clone());
    crate::oauth::sweep::start(services.clone());
    services.presence.load_active().map_err(|e| e.to_string())?;
    let presence = services.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            if let Err(error) = presence.presence.expire(crate::time::now_ms()).await {
                tracing::warn!(%error, "presence idle timer failed");
            }
        }
    });
    let admin_socket = config.admin_socket_path();
    let admin_task = admin::listen(services.clone(), &admin_socket)
        .map_err(|e| format!("cannot open the admin socket {}: {e}", admin_socket.display()))?;
    let federation_task = match config.listen.federation {
        Some(address) => Some(serve_federation(services.clone(), address).await?),
        None => None,
    };
    let metrics_task = match config.listen.metrics {
        Some(address) => Some(serve_metrics(services.clone(), address).await?),
        None => None,
    };
    crate::federation::sender::start(services.clone());
    crate::federation::threepid::start(services.clone());
    crate::network::status::start(services.clone());
    crate::api::admin_room::start(services.clone());
    crate::push::evaluate::start(services.clone());
    crate::push::sender::start(services.clone());
    crate::search::start(services.clone());
    crate::retention::start(services.clone());
    crate::appservice::sender::start(services.clone()).await.map_err(|e| format!("appservices: {e}"))?;
    tracing::info!(server_name = %config.server_name, key_id = %services.server_keys.key_id(), "client API on http://{addr}");
    // Tests and scripts read this line to learn the bound port (listen.client may use port 0).
    println!("hemicycle listening on http://{addr}");
    let _ = std::io::stdout().flush();
    started();

    let app = api::router(services.clone());
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(());
        })
        .into_future();
    let served = tokio::select! {
        served = serving => served,
        () = drain_deadline(stopping_rx) => Ok(()),
    };
    admin_task.abort();
    for task in [federation_task, metrics_task].into_iter().flatten() {
        task.abort();
    }
    let _ = std::fs::remove_file(&admin_socket);
    services.db.flush().map_err(|e| format!("flushing the database failed: {e}"))?;
    tracing::info!("stopped");
    served.map_err(|e| e.to_string())
}

/// Serves Prometheus' `/metrics` on its own plain-HTTP listener (`listen.metrics`).
async fn serve_metrics(
    services: std::sync::Arc<Services>,
    address: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener =
        TcpListener::bind(address).await.map_err(|e| format!("cannot listen on {address} (listen.metrics): {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests and scripts read this line to learn the port (listen.metrics may use port 0).
    println!("hemicycle metrics on http://{bound}/metrics");
    let _ = std::io::stdout().flush();
    let app = crate::metrics::router(services);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics listener stopped");
        }
    }))
}

/// Serves the federation API over HTTPS (rustls, `tls.cert` / `tls.key`) on its own listener.
async fn serve_federation(
    services: std::sync::Arc<Services>,
    address: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let config = &services.config;
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        return Err("listen.federation needs tls.cert and tls.key".into());
    };
    let acceptor = tls_acceptor(cert, key)?;
    let listener =
        TcpListener::bind(address).await.map_err(|e| format!("cannot listen on {address} (listen.federation): {e}"))?;
    let app = api::federation_router(services.clone());
    println!("hemicycle federation on https://{address}");
    let _ = std::io::stdout().flush();
    Ok(serve_https(listener, acceptor, app))
}

/// A TLS acceptor (rustls, HTTP/2 and 1.1) for a PEM certificate chain and key.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read tls.cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert {} is not PEM certificates: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read tls.key {}: {e}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert and tls.key do not make a usable certificate: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls)))
}

/// Serves `app` over HTTPS on `listener` until the task is aborted (the federation listener, and
/// test peers that speak federation).
pub fn serve_https(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls_stream)) =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await
                else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let mut request = request.map(axum::body::Body::new);
                    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    let mut app = app.clone();
                    async move { tower::Service::call(&mut app, request).await }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls_stream), service)
                    .await;
            });
        }
    })
}

/// How long in-flight requests may take to finish once a stop is asked for. Long-polling syncs
/// and slow uploads would otherwise hold a stop (and a service manager's restart) for as long as
/// their clients like; past this, the remaining connections are dropped — their writes were either
/// acknowledged (and are durable) or not — and the database is flushed.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves when draining must end: `DRAIN_LIMIT` after the first stop signal, or at once on a
/// second one (an operator pressing Ctrl-C twice means "now").
async fn drain_deadline(stopping: tokio::sync::oneshot::Receiver<()>) {
    if stopping.await.is_err() {
        // The server ended on its own before any signal: nothing to bound.
        return std::future::pending().await;
    }
    tokio::select! {
        () = tokio::time::sleep(DRAIN_LIMIT) => {
            tracing::warn!(limit_s = DRAIN_LIMIT.as_secs(), "in-flight requests did not finish in time: closing them");
        }
        () = shutdown_signal() => tracing::warn!("second stop signal: closing in-flight requests now"),
    }
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
