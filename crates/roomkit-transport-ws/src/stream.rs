//! A WebSocket stream as a roomkit [`Connection`].

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use roomkit_core::transport::{CloseReason, Connection, Frame, FrameSink, FrameStream, TransportError};
use roomkit_protocol::Code;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    tungstenite::{
        error::CapacityError,
        protocol::{frame::coding::CloseCode, CloseFrame},
        Error as WsError, Message, Utf8Bytes,
    },
    WebSocketStream,
};

/// Wraps any established WebSocket stream, client or server side.
pub fn ws_connection<S>(ws: WebSocketStream<S>, peer: String) -> Connection
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    Connection {
        sink: Box::new(WsSink { sink, closed: false }),
        stream: Box::new(WsStream { stream, closed: None }),
        peer,
    }
}

struct WsSink<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    closed: bool,
}

fn to_transport(e: WsError) -> TransportError {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed(None),
        other => TransportError::Io(other.to_string()),
    }
}

#[async_trait]
impl<S> FrameSink for WsSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn send(&mut self, frames: &[Frame]) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::Closed(None));
        }
        for frame in frames {
            if frame.is_ping() {
                self.sink.feed(Message::Ping(Bytes::new())).await.map_err(to_transport)?;
                continue;
            }
            let text = Utf8Bytes::try_from(frame.payload())
                .map_err(|_| TransportError::Io("frames must be UTF-8 JSON".into()))?;
            self.sink.feed(Message::Text(text)).await.map_err(to_transport)?;
        }
        self.sink.flush().await.map_err(to_transport)
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        let frame = close_frame(&reason);
        let _ = self.sink.send(Message::Close(Some(frame))).await;
        let _ = self.sink.close().await;
        Ok(())
    }
}

/// The WebSocket close status for a roomkit close code: 1000 (success), 1001 (server
/// shutting down), 1009 (frame too large), 1011 (internal error), else 4000.
pub(crate) fn close_code(code: Code) -> u16 {
    match code {
        Code::SUCCESS => 1000,
        Code::SERVER_SHUTTING_DOWN => 1001,
        Code::FRAME_TOO_LARGE => 1009,
        Code::INTERNAL => 1011,
        _ => 4000,
    }
}

/// A close frame's reason text for a roomkit close reason: `"<code> <reason>"`, cut to the
/// 123 bytes a close frame allows.
pub(crate) fn close_text(reason: &CloseReason) -> String {
    let mut text = format!("{} {}", reason.code.0, reason.reason);
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The close frame for a roomkit close reason.
fn close_frame(reason: &CloseReason) -> CloseFrame {
    CloseFrame { code: CloseCode::from(close_code(reason.code)), reason: close_text(reason).into() }
}

/// Reads a roomkit close reason back from a close frame: `"<code> <reason>"` in the reason
/// text, or the WebSocket close code when the text carries none.
pub fn close_reason_from_frame(frame: &CloseFrame) -> CloseReason {
    close_reason_from_parts(frame.code.into(), frame.reason.as_str())
}

/// [`close_reason_from_frame`] from a close frame's status and reason text.
pub(crate) fn close_reason_from_parts(status: u16, text: &str) -> CloseReason {
    if let Some((num, rest)) = text.split_once(' ') {
        if let Ok(code) = num.parse::<u32>() {
            return CloseReason::new(Code(code), rest);
        }
    }
    let code = match status {
        1000 => Code::SUCCESS,
        1001 => Code::SERVER_SHUTTING_DOWN,
        1009 => Code::FRAME_TOO_LARGE,
        _ => Code::CONNECTION_CLOSED,
    };
    CloseReason::new(code, text)
}

struct WsStream<S> {
    stream: SplitStream<WebSocketStream<S>>,
    closed: Option<Option<CloseReason>>,
}

#[async_trait]
impl<S> FrameStream for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        loop {
            if let Some(frame) = self.next(false).await? {
                return Ok(frame);
            }
        }
    }

    async fn recv_or_alive(&mut self) -> Result<Option<Bytes>, TransportError> {
        self.next(true).await
    }
}

impl<S> WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// The next message, or with `alive`, `None` for a ping or a pong. (The library answers a
    /// ping by itself, on the next read or write.)
    async fn next(&mut self, alive: bool) -> Result<Option<Bytes>, TransportError> {
        if let Some(reason) = &self.closed {
            return Err(TransportError::Closed(reason.clone()));
        }
        loop {
            let reason = match self.stream.next().await {
                Some(Ok(Message::Text(text))) => return Ok(Some(Bytes::from(text))),
                Some(Ok(Message::Binary(_))) => {
                    return Err(TransportError::Rejected(CloseReason::new(
                        Code::UNSUPPORTED_FRAME,
                        "binary frames are not accepted: send JSON in text frames",
                    )))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) if alive => return Ok(None),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => frame.as_ref().map(close_reason_from_frame),
                Some(Err(WsError::Capacity(e))) => {
                    self.closed = Some(None);
                    let msg = match e {
                        CapacityError::MessageTooLong { size, max_size } => {
                            format!("frame of {size} bytes is over the limit of {max_size} bytes")
                        }
                        other => other.to_string(),
                    };
                    return Err(TransportError::Violation(CloseReason::new(Code::FRAME_TOO_LARGE, msg)));
                }
                Some(Err(WsError::Utf8(_))) => {
                    self.closed = Some(None);
                    return Err(TransportError::Violation(CloseReason::new(
                        Code::MALFORMED_FRAME,
                        "text frame is not valid UTF-8",
                    )));
                }
                Some(Err(_)) | None => None,
            };
            self.closed = Some(reason.clone());
            return Err(TransportError::Closed(reason));
        }
    }
}
