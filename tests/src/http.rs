//! HTTP requests to the admin API and the client port's plain routes, sent with hyper's
//! client (`hyper_util::client::legacy`) and read whole. The tests that speak raw bytes on
//! purpose (malformed heads, half-open connections) use sockets directly instead.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::within;

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (decoded from chunked transfer encoding if it was).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

/// A request to send with [`send`].
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: &'a str,
    /// The path and query, e.g. `/v1/rooms`.
    pub path: &'a str,
    /// Extra headers (name, value).
    pub headers: Vec<(&'a str, String)>,
    /// The body, sent with `Content-Length` (and `Content-Type: application/json`) when given.
    pub body: Option<Vec<u8>>,
}

impl<'a> Request<'a> {
    /// A request without body.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self { method, path, headers: Vec::new(), body: None }
    }

    /// Adds `Authorization: Bearer <key>`.
    pub fn bearer(mut self, key: &str) -> Self {
        self.headers.push(("Authorization", format!("Bearer {key}")));
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets a JSON body.
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }

    /// Sets a raw body (sent as `application/json` all the same).
    pub fn raw_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
}

/// Sends `request` to `addr` and reads the whole response; panics on failure or after the
/// test time bound.
pub async fn send(addr: SocketAddr, request: Request<'_>) -> Response {
    let what = format!("{} {}", request.method, request.path);
    within(&format!("the response to {what}"), try_send(addr, request))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Sends `request` to `addr` and reads the whole response, without a time bound and without
/// panicking: for probing a server that may not be up yet.
pub async fn try_send(addr: SocketAddr, request: Request<'_>) -> std::io::Result<Response> {
    let mut builder =
        hyper::Request::builder().method(request.method).uri(format!("http://{addr}{}", request.path));
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    if request.body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
    let http_request = builder.body(body).map_err(std::io::Error::other)?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(http_request).await.map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect();
    let body = response.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes().to_vec();
    Ok(Response { status, headers, body })
}

/// `GET path` without headers.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    send(addr, Request::new("GET", path)).await
}
