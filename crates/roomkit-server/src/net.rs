//! The network front: HTTP/1.1 on TCP, with WebSocket upgrade to the roomkit protocol.
//!
//! The client port serves `GET /v1` (WebSocket upgrade → a roomkit connection),
//! `GET /healthz`, and whatever extra routes the binary adds (the web page). The admin port
//! serves [`crate::admin::router`]. Both run the same accept loop: every connection must
//! send its request head within `header_timeout`, so a half-open client is dropped.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use roomkit_transport_ws::{socket_connection, ws_connection, QueueSender, WsConfig};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_tungstenite::{
    tungstenite::{handshake::derive_accept_key, protocol::Role},
    WebSocketStream,
};
use tower::ServiceExt;

/// What the `/v1` route needs.
#[derive(Clone)]
struct Upgrade {
    config: WsConfig,
    sender: QueueSender,
}

/// Routes of the client port: the WebSocket path ([`WsConfig::path`], `/v1` by default) and
/// `/healthz`. Merge more routes into it as needed.
pub fn client_router(config: WsConfig, sender: QueueSender) -> Router {
    Router::new()
        .route(&config.path.clone(), get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Upgrade { config, sender })
}

fn header_is(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
}

/// Whether a browser page from the request's `Origin` may open a WebSocket: no `Origin` (not a
/// browser), no list (every origin), the server's own origin (the `Host` the request names),
/// or an origin on the list.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    if allowed.is_empty() {
        return true;
    }
    let Ok(origin) = origin.to_str() else { return false };
    let origin = origin.trim().trim_end_matches('/');
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    authority.eq_ignore_ascii_case(host.trim())
        || allowed.iter().any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
}

async fn upgrade(
    State(st): State<Upgrade>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    if !origin_allowed(&st.config.allowed_origins, headers) {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("?");
        tracing::debug!(%peer, origin, "WebSocket upgrade from an origin not allowed");
        return (StatusCode::FORBIDDEN, format!("origin {origin} may not connect here\n")).into_response();
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_upgrade =
        header_is(headers, header::CONNECTION, "upgrade") && header_is(headers, header::UPGRADE, "websocket");
    let version_ok = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let (Some(key), true, true) = (key, is_upgrade, version_ok) else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, "websocket")],
            "roomkit speaks WebSocket (version 13) at /v1\n",
        )
            .into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                // The server frames its own WebSocket on the bare TCP socket (see
                // `roomkit_transport_ws::socket_connection`); any other stream goes through
                // the WebSocket library.
                let connection = match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => {
                        socket_connection(parts.io.into_inner(), parts.read_buf, &st.config, peer.to_string())
                    }
                    Err(upgraded) => {
                        let io = TokioIo::new(upgraded);
                        let config = Some(st.config.websocket());
                        let ws = WebSocketStream::from_raw_socket(io, Role::Server, config).await;
                        ws_connection(ws, peer.to_string())
                    }
                };
                let _ = st.sender.send(connection).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
    });
    let accept = derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header"),
        )
        .body(Body::empty())
        .expect("static response parts are valid")
}

/// Serves `router` on `listener` until `stop` turns true. Each connection must send its
/// request head within `header_timeout`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (socket, peer) = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let router = router.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(req.map(Body::new))
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}
