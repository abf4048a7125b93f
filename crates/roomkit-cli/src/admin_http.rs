//! The admin API client: `GET` requests over plain `http://`, sent with hyper's client.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::{body::Bytes, header, Request, Uri};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use roomkit_protocol::Code;

use crate::Failure;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// `GET base + path` with the admin key; returns the answer's `data` on code 0.
pub(crate) async fn get(base: &str, path: &str, admin_key: &str) -> Result<serde_json::Value, Failure> {
    let uri = admin_uri(base, path)?;
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {admin_key}"))
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "roomkit-cli")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::plain(format!("--admin-key: {e}")))?;
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let (status, body) = tokio::time::timeout(TIMEOUT, async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    })
    .await
    .map_err(|_| Failure::new(Code::TIMEOUT, format!("no answer from {base} within {TIMEOUT:?}")))?
    .map_err(|e| Failure::new(Code::CONNECTION_CLOSED, format!("talking to {base}: {e}")))?;
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        Failure::plain(format!(
            "{base}{path} answered HTTP {status} with a body that is not JSON: {}",
            String::from_utf8_lossy(&body).chars().take(200).collect::<String>()
        ))
    })?;
    let code = answer["code"].as_u64().and_then(|c| u32::try_from(c).ok()).map(Code);
    match code {
        Some(code) if code.is_success() => Ok(answer["data"].clone()),
        Some(code) => Err(Failure::new(code, answer["msg"].as_str().unwrap_or("failed").to_string())),
        None => Err(Failure::plain(format!("{base}{path} answered HTTP {status} without a code"))),
    }
}

/// `http://host[:port][/prefix]` + `path` → the request URI (a trailing slash of the prefix
/// dropped).
fn admin_uri(base: &str, path: &str) -> Result<Uri, Failure> {
    let rest = base.strip_prefix("http://").ok_or_else(|| {
        Failure::plain(format!("--admin `{base}`: use an http:// URL such as http://127.0.0.1:7701"))
    })?;
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() {
        return Err(Failure::plain(format!("--admin `{base}`: no host")));
    }
    let prefix = prefix.trim_end_matches('/');
    let prefix = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
    format!("http://{authority}{prefix}{path}")
        .parse()
        .map_err(|e| Failure::plain(format!("--admin `{base}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let uri = |base| admin_uri(base, "/v1/rooms").map(|u| u.to_string());
        assert_eq!(uri("http://127.0.0.1:7701").unwrap(), "http://127.0.0.1:7701/v1/rooms");
        assert_eq!(uri("http://admin.local/api/").unwrap(), "http://admin.local/api/v1/rooms");
        assert!(uri("https://x").is_err());
        assert!(uri("http:///x").is_err());
        assert!(uri("http://a b").is_err());
    }
}
