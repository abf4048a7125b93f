//! A WebSocket stream as a roomkit [`Connection`].

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use roomkit_core::transport::{CloseReason, Connection, FrameSink, FrameStream, TransportError};
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
    async fn send(&mut self, frames: &[Bytes]) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::Closed(None));
        }
        for frame in frames {
            let text = Utf8Bytes::try_from(frame.clone())
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

/// The close frame for a roomkit close reason.
fn close_frame(reason: &CloseReason) -> CloseFrame {
    let code = match reason.code {
        Code::SUCCESS => CloseCode::Normal,
        Code::SERVER_SHUTTING_DOWN => CloseCode::Away,
        Code::FRAME_TOO_LARGE => CloseCode::Size,
        Code::INTERNAL => CloseCode::Error,
        _ => CloseCode::Library(4000),
    };
    // A close reason is at most 123 bytes.
    let mut text = format!("{} {}", reason.code.0, reason.reason);
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    CloseFrame { code, reason: text.into() }
}

/// Reads a roomkit close reason back from a close frame: `"<code> <reason>"` in the reason
/// text, or the WebSocket close code when the text carries none.
pub fn close_reason_from_frame(frame: &CloseFrame) -> CloseReason {
    let text = frame.reason.as_str();
    if let Some((num, rest)) = text.split_once(' ') {
        if let Ok(code) = num.parse::<u32>() {
            return CloseReason::new(Code(code), rest);
        }
    }
    let code = match frame.code {
        CloseCode::Normal => Code::SUCCESS,
        CloseCode::Away => Code::SERVER_SHUTTING_DOWN,
        CloseCode::Size => Code::FRAME_TOO_LARGE,
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
        if let Some(reason) = &self.closed {
            return Err(TransportError::Closed(reason.clone()));
        }
        loop {
            let reason = match self.stream.next().await {
                Some(Ok(Message::Text(text))) => return Ok(Bytes::from(text)),
                Some(Ok(Message::Binary(_))) => {
                    return Err(TransportError::Rejected(CloseReason::new(
                        Code::UNSUPPORTED_FRAME,
                        "binary frames are not accepted: send JSON in text frames",
                    )))
                }
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
