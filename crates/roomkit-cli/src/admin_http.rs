//! A small HTTP/1.1 client for the admin API: one `GET` per connection, plain `http://`.

use std::time::Duration;

use roomkit_protocol::Code;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::Failure;

const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// `GET base + path` with the admin key; returns the answer's `data` on code 0.
pub(crate) async fn get(base: &str, path: &str, admin_key: &str) -> Result<serde_json::Value, Failure> {
    let (host, prefix) = split_url(base)?;
    let request = format!(
        "GET {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {admin_key}\r\n\
         Accept: application/json\r\nUser-Agent: roomkit-cli\r\nConnection: close\r\n\r\n"
    );
    let raw = tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(&host).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    })
    .await
    .map_err(|_| Failure::new(Code::TIMEOUT, format!("no answer from {base} within {TIMEOUT:?}")))?
    .map_err(|e| Failure::new(Code::CONNECTION_CLOSED, format!("talking to {base}: {e}")))?;
    let (status, body) = parse_response(&raw).map_err(|e| Failure::plain(format!("{base}: {e}")))?;
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

/// `http://host:port/prefix` → (`host:port`, `/prefix` without a trailing slash).
fn split_url(base: &str) -> Result<(String, String), Failure> {
    let rest = base.strip_prefix("http://").ok_or_else(|| {
        Failure::plain(format!("--admin `{base}`: use an http:// URL such as http://127.0.0.1:7701"))
    })?;
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() {
        return Err(Failure::plain(format!("--admin `{base}`: no host")));
    }
    let host = if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let prefix = prefix.trim_end_matches('/');
    let prefix = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
    Ok((host, prefix))
}

/// Splits a whole HTTP/1.1 response into its status and (de-chunked) body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("the answer is not HTTP")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the answer's head is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = &raw[end + 4..];
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk")?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size `{size_text}`"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(split_url("http://127.0.0.1:7701").unwrap(), ("127.0.0.1:7701".into(), String::new()));
        assert_eq!(split_url("http://admin.local/api/").unwrap(), ("admin.local:80".into(), "/api".into()));
        assert!(split_url("https://x").is_err());
        assert!(split_url("http:///x").is_err());
    }

    #[test]
    fn responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{}".to_vec()));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, b"{\"a\":1}".to_vec()));
        assert!(parse_response(b"garbage").is_err());
    }
}
