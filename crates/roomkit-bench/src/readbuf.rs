//! The receiving members' read buffer, one per connection, the same for roomkit's members
//! (`wsraw.rs`) and redis's subscribers (`redis.rs`), so that the generator reads both
//! systems the same way.
//!
//! Each read lands at the buffer's start once the frames of the last are taken (what is left
//! of a frame cut by a read moves there first). A reader whose reads went on down a larger
//! buffer (as a `BytesMut` does) copied each event into memory not touched since that
//! buffer's last pass, at 1,000 members 16 MB of it, a cache miss a line.

use tokio::io::{AsyncRead, AsyncReadExt};

/// A buffer's size, grown only for a frame larger than it: the SDK's (see
/// [`crate::client_config`]).
pub(crate) const READ_BUFFER: usize = 4 * 1024;

/// Bytes read from a connection and not yet taken: `buf[start..end]`.
pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    pub(crate) fn new() -> Self {
        Self { buf: vec![0; READ_BUFFER], start: 0, end: 0 }
    }

    /// The bytes read and not yet taken.
    pub(crate) fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Takes the first `n` unread bytes.
    pub(crate) fn take(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
    }

    /// The buffer's size.
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.buf.len()
    }

    /// Reads what `read` has after the unread bytes, moved to the buffer's start first. When
    /// the frame they start is known to need `missing` more bytes, the buffer grows to hold it
    /// whole; a full buffer doubles. Fails when the connection ends.
    pub(crate) async fn fill(
        &mut self,
        read: &mut (impl AsyncRead + Unpin),
        missing: Option<usize>,
    ) -> Result<(), String> {
        self.buf.copy_within(self.start..self.end, 0);
        (self.start, self.end) = (0, self.end - self.start);
        if let Some(need) = missing.and_then(|n| n.checked_add(self.end)) {
            if need > self.buf.len() {
                self.buf.resize(need, 0);
            }
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match read.read(&mut self.buf[self.end..]).await {
            Ok(0) => Err("connection closed".into()),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}
