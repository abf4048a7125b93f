//! The web chat page, served on the client port next to the WebSocket endpoint.
//!
//! `GET /` is a chat client in plain HTML, CSS and JavaScript (embedded in the binary, no
//! build step) that speaks the protocol of `docs/protocol.md` to `/v1` on the same origin.
//!
//! | method and path | what it answers |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /app.js`, `/style.css`, `/favicon.svg` | its assets |
//! | `GET /config.json` | `{"dev": bool, "ws_path": "/v1", "protocol_version": 1}` |
//! | `GET` or `POST /dev/token?account=NAME` | development mode only: `{"token", "account", "expires_at"}` |
//!
//! The token route exists only when [`WebConfig::dev_tokens`] is set (the binary sets it
//! with `--dev`); otherwise it answers 404 like any unknown path.

use std::{collections::HashMap, time::Duration};

use axum::{
    extract::{Query, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use roomkit_protocol::{Code, PROTOCOL_VERSION};
use roomkit_token::{JwtAuthenticator, TokenRequest};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");
const FAVICON_SVG: &str = include_str!("../web/favicon.svg");

/// The page only talks to its own origin: scripts, styles and the WebSocket.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the web routes need.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Development mode: mint tokens for any account at `/dev/token` with this
    /// authenticator's secret. `None` (production) leaves the route out.
    pub dev_tokens: Option<JwtAuthenticator>,
    /// Lifetime of the tokens `/dev/token` mints.
    pub dev_token_ttl: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self { dev_tokens: None, dev_token_ttl: Duration::from_secs(3600) }
    }
}

/// The page's routes, to merge into [`crate::net::client_router`].
pub fn router(config: WebConfig) -> Router {
    let dev = config.dev_tokens.is_some();
    let mut router = Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML, true) }))
        .route("/index.html", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML, true) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS, false) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS, false) }))
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG, false) }))
        .route(
            "/config.json",
            get(move || async move {
                json(
                    StatusCode::OK,
                    serde_json::json!({ "dev": dev, "ws_path": "/v1", "protocol_version": PROTOCOL_VERSION }),
                )
            }),
        );
    if dev {
        router = router.route("/dev/token", get(dev_token).post(dev_token).with_state(config));
    }
    router
}

fn asset(content_type: &'static str, body: &'static str, is_page: bool) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response();
    if is_page {
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// `GET|POST /dev/token?account=NAME[&name=Display]`: a short-lived token for any account,
/// signed with the development secret through the same [`JwtAuthenticator::issue`] as every
/// other minter. Mounted only in development mode.
async fn dev_token(
    State(config): State<WebConfig>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(tokens) = &config.dev_tokens else {
        return json(StatusCode::NOT_FOUND, serde_json::json!({ "code": Code::FAILURE, "msg": "not found" }));
    };
    let account = query.get("account").cloned().unwrap_or_default();
    let request = TokenRequest {
        name: query.get("name").filter(|n| !n.trim().is_empty()).cloned(),
        ..TokenRequest::new(account, config.dev_token_ttl)
    };
    match tokens.issue(request) {
        Ok(issued) => json(
            StatusCode::OK,
            serde_json::json!({
                "token": issued.token,
                "account": issued.claims.sub,
                "expires_at": issued.claims.exp,
            }),
        ),
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "code": Code::BAD_REQUEST,
                "msg": format!("bad request: field `{}`: {}", e.field, e.reason),
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    async fn get(router: &Router, method: &str, uri: &str) -> (StatusCode, HeaderMapLite, String) {
        let request = axum::http::Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = HeaderMapLite(response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    struct HeaderMapLite(axum::http::HeaderMap);

    impl HeaderMapLite {
        fn get(&self, name: header::HeaderName) -> &str {
            self.0.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
        }
    }

    fn dev_router() -> (Router, JwtAuthenticator) {
        let jwt = JwtAuthenticator::new(b"dev secret").with_clock(crate::clock::now_secs);
        let config = WebConfig { dev_tokens: Some(jwt.clone()), ..WebConfig::default() };
        (router(config), jwt)
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets() {
        let router = router(WebConfig::default());
        let (status, headers, body) = get(&router, "GET", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get(header::CONTENT_TYPE).starts_with("text/html"));
        assert!(headers.get(header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
        assert!(body.contains("<script type=\"module\" src=\"/app.js\">"));
        let (status, headers, body) = get(&router, "GET", "/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get(header::CONTENT_TYPE).starts_with("text/javascript"));
        assert!(!body.contains("innerHTML"), "the page builds its DOM from text nodes only");
        let (status, _, _) = get(&router, "GET", "/style.css").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_token_route_exists_only_in_development_mode() {
        let production = router(WebConfig::default());
        let (_, _, body) = get(&production, "GET", "/config.json").await;
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["dev"], false);
        let (status, _, _) = get(&production, "GET", "/dev/token?account=alice").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (dev, jwt) = dev_router();
        let (_, _, body) = get(&dev, "GET", "/config.json").await;
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["dev"], true);
        for method in ["GET", "POST"] {
            let (status, headers, body) = get(&dev, method, "/dev/token?account=alice&name=Alice").await;
            assert_eq!(status, StatusCode::OK, "{method}");
            assert_eq!(headers.get(header::CACHE_CONTROL), "no-store");
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            let claims = jwt.verify(answer["token"].as_str().unwrap()).unwrap();
            assert_eq!(claims.sub, "alice");
            assert_eq!(claims.name, "Alice");
            let now = crate::clock::now_secs();
            assert!(claims.exp > now && claims.exp <= now + 3600);
        }
    }

    #[tokio::test]
    async fn a_bad_account_is_a_bad_request() {
        let (dev, _) = dev_router();
        for uri in ["/dev/token", "/dev/token?account=", "/dev/token?account=a%20b"] {
            let (status, _, body) = get(&dev, "POST", uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["code"], 1002);
            assert!(answer["msg"].as_str().unwrap().contains("account"));
        }
    }
}
