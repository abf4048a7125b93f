//! A raw WebSocket client for wire-level tests: sends any text or binary message, and
//! reports what comes back as it is — JSON frames, close frames, or the connection ending.
//!
//! Unlike [`RawClient`](crate::RawClient), it does not go through the WebSocket transport
//! crate, so it sees exactly what the server put on the wire (close codes included).

use futures_util::{SinkExt, StreamExt};
use roomkit_protocol::Code;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};

use crate::{within, DEV_TOKEN};

/// What the server sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A text message holding a JSON document.
    Json(Value),
    /// A close frame (`None`: a close frame without code and reason).
    Close(Option<CloseFrame>),
    /// The connection ended without a close frame: the text of the error, or `"end of stream"`.
    Ended(String),
}

/// A raw WebSocket client connected to a roomkit server.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: Vec<Value>,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient").field("next_id", &self.next_id).finish_non_exhaustive()
    }
}

impl WsClient {
    /// Connects to `url` (`ws://127.0.0.1:PORT/v1`).
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = within("a raw WebSocket connection", tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Self { ws, next_id: 1, events: Vec::new() }
    }

    /// Sends one text message as is.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        within("a raw send", self.ws.send(Message::text(text))).await.expect("raw text send");
    }

    /// Sends one binary message.
    pub async fn send_binary(&mut self, bytes: impl Into<bytes::Bytes>) {
        within("a raw send", self.ws.send(Message::binary(bytes))).await.expect("raw binary send");
    }

    /// Sends any message, raw frames included (`Message::Frame`, masked as a client must).
    pub async fn send_message(&mut self, message: Message) {
        within("a raw send", self.ws.send(message)).await.expect("raw send");
    }

    /// Sends `frame` as one text message.
    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(frame.to_string()).await;
    }

    /// The next thing the server sent (pings and pongs skipped).
    pub async fn next(&mut self) -> Received {
        loop {
            match within("a frame from the server", self.ws.next()).await {
                Some(Ok(Message::Text(text))) => {
                    let value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("the server sent non-JSON text {text:?}: {e}"));
                    return Received::Json(value);
                }
                Some(Ok(Message::Close(frame))) => return Received::Close(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(b))) => {
                    panic!("the server sent a binary message of {} bytes", b.len())
                }
                Some(Err(e)) => return Received::Ended(e.to_string()),
                None => return Received::Ended("end of stream".into()),
            }
        }
    }

    /// The next JSON frame; panics if the connection closes instead.
    pub async fn recv_json(&mut self) -> Value {
        match self.next().await {
            Received::Json(v) => v,
            other => panic!("expected a frame, the connection ended: {other:?}"),
        }
    }

    /// The next response (a frame without `event`), keeping events received before it.
    pub async fn response(&mut self) -> Value {
        loop {
            let frame = self.recv_json().await;
            if frame.get("event").is_some() {
                self.events.push(frame);
            } else {
                return frame;
            }
        }
    }

    /// Sends `frame` (a JSON object with `op`) with the next id; returns its response,
    /// checking that the id is echoed.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        frame.as_object_mut().expect("a JSON object").insert("id".into(), id.into());
        self.send_json(&frame).await;
        let response = self.response().await;
        assert_eq!(response["id"], json!(id), "response to the wrong request: {response}");
        response
    }

    /// Sends `frame` like [`request`](Self::request) and asserts it succeeded.
    pub async fn request_ok(&mut self, frame: Value) -> Value {
        let what = frame.to_string();
        let response = self.request(frame).await;
        assert_eq!(code_of(&response), Code::SUCCESS, "{what} failed: {response}");
        response
    }

    /// Logs in as `account` with `token`, asserting success.
    pub async fn login_with(&mut self, account: &str, token: &str) {
        self.request_ok(json!({"op": "login", "account_id": account, "token": token})).await;
    }

    /// Logs in as `account` with [`DEV_TOKEN`].
    pub async fn login(&mut self, account: &str) {
        self.login_with(account, DEV_TOKEN).await;
    }

    /// Events received so far while waiting for responses.
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// Reads until the connection ends; returns the JSON frames read and how it ended
    /// ([`Received::Close`] or [`Received::Ended`]).
    pub async fn read_to_close(&mut self) -> (Vec<Value>, Received) {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Received::Json(v) => frames.push(v),
                end => return (frames, end),
            }
        }
    }

    /// Closes the connection from this side (best effort).
    pub async fn close(mut self) {
        let _ = within("a raw close", self.ws.close(None)).await;
    }
}

/// The `code` of a response frame.
pub fn code_of(response: &Value) -> Code {
    let code = response["code"].as_u64().unwrap_or_else(|| panic!("a response without a code: {response}"));
    Code(u32::try_from(code).expect("a code fits u32"))
}

/// The `msg` of a response frame.
pub fn msg_of(response: &Value) -> &str {
    response["msg"].as_str().unwrap_or_default()
}
