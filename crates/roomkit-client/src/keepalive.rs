//! Keep-alive from the client's side: a connection can die without closing (a cable pulled,
//! a NAT forgetting it), and then nothing tells the client. Once logged in, the client sends
//! `ping` every [`KeepAlivePolicy::interval`](crate::KeepAlivePolicy); a ping unanswered
//! within the timeout makes the connection count as lost, and the usual reconnect and resume
//! follow. Any answer will do, and so will the connection ending meanwhile (its own loss is
//! handled where it is noticed).

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
            match s.rpc.send(&Ping {}, CallOptions::default()).await {
                Ok(sent) => sent,
                Err(_) => continue, // the connection is already gone: its end is being handled
            }
        };
        let (rx, id) = answer;
        if tokio::time::timeout(policy.timeout, rx).await.is_ok() {
            continue;
        }
        let Some(s) = session.upgrade() else { return };
        s.rpc.forget(id);
        if !s.rpc.is_current(epoch) {
            return;
        }
        let msg = format!("the server did not answer a keep-alive ping within {:?}", policy.timeout);
        tracing::debug!(epoch, "{msg}: the connection counts as lost");
        // Its halves are dropped when the next connection takes over (or the session ends).
        s.connection_lost(epoch, Error::new(Code::TIMEOUT, msg));
        return;
    }
}
