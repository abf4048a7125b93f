//! Keep-alive from the client's side: a connection can die without closing (a cable pulled,
//! a NAT forgetting it), and then nothing tells the client. Once logged in, the client sends
//! `ping` every [`KeepAlivePolicy::interval`](crate::KeepAlivePolicy); when neither its
//! answer nor any other frame from the server arrives within the timeout, the connection
//! counts as lost, and the usual reconnect and resume follow. Any frame will do (on a slow
//! link the answer can wait behind a backlog of events the client is still receiving), and
//! so will the connection ending meanwhile (its own loss is handled where it is noticed).

use std::sync::Weak;

use roomkit_protocol::{ops::Ping, Code};

use crate::{rpc::CallOptions, session::Session, Error};

/// Pings the connection of `epoch` until it is no longer current or the session is gone.
pub(crate) async fn run(session: Weak<Session>, epoch: u64) {
    let Some(policy) = session.upgrade().map(|s| s.config.keep_alive.clone()) else { return };
    loop {
        tokio::time::sleep(policy.interval).await;
        let answer = {
            let Some(s) = session.upgrade() else { return };
            if !s.rpc.is_current(epoch) || s.closed_error().is_some() {
                return;
            }
            if s.credentials().is_none() {
                continue; // not logged in yet: the login itself shows whether the server is there
            }
            let heard = s.rpc.heard();
            match s.rpc.send(&Ping {}, CallOptions::default()).await {
                Ok((rx, id)) => (rx, id, heard),
                Err(_) => continue, // the connection is already gone: its end is being handled
            }
        };
        let (rx, id, heard) = answer;
        if tokio::time::timeout(policy.timeout, rx).await.is_ok() {
            continue;
        }
        let Some(s) = session.upgrade() else { return };
        s.rpc.forget(id);
        if !s.rpc.is_current(epoch) {
            return;
        }
        if s.rpc.heard() != heard {
            continue; // the answer is late, but the server is there: other frames arrived
        }
        let msg = format!(
            "nothing from the server (no answer to a keep-alive ping, no other frame) within {:?}",
            policy.timeout
        );
        tracing::debug!(epoch, "{msg}: the connection counts as lost");
        // Its halves are dropped when the next connection takes over (or the session ends).
        s.connection_lost(epoch, Error::new(Code::TIMEOUT, msg));
        return;
    }
}
