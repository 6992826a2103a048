//! A small blocking HTTP/1.1 client for netd's unix socket.
//!
//! The CNI plugin runs once per attachment and must start fast, so it
//! does not carry an async runtime or an HTTP stack: one request per
//! connection, `Connection: close`, body framed by Content-Length (or
//! chunked, which is decoded too).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::code;
use crate::{ApiError, API_VERSION, API_VERSION_HEADER};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// netd is not listening (no socket, connection refused, or it went
    /// away mid-request).
    #[error("netd is not reachable at {path}: {source}")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The socket refused this user (EACCES/EPERM on connect): netd's
    /// API is root's, and read-only for the group of --api-read-group.
    #[error("permission denied on netd's socket {path}: run as root, or as a member of the group netd's --api-read-group names (read-only views)")]
    PermissionDenied { path: PathBuf },
    /// netd answered with an error document.
    #[error("{0}")]
    Api(ApiError),
    /// netd speaks another API version.
    #[error("netd at {path} speaks API version {server}, this client speaks {client}; upgrade the older of the two")]
    VersionMismatch {
        path: PathBuf,
        server: String,
        client: u32,
    },
    /// The answer could not be understood.
    #[error("bad response from netd at {path}: {msg}")]
    Protocol { path: PathBuf, msg: String },
}

impl ClientError {
    /// The error as CNI/API error document: unreachable netd maps to
    /// "try again later" (11), which runtimes retry.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            ClientError::Api(e) => e.clone(),
            ClientError::Unreachable { .. } => ApiError::new(code::TRY_AGAIN, self.to_string())
                .with_details("start netd (or check the socket path in the CNI config's \"socket\" field) and retry"),
            ClientError::PermissionDenied { .. } => ApiError::new(code::PERMISSION_DENIED, self.to_string()),
            ClientError::VersionMismatch { .. } => ApiError::new(code::NOT_AVAILABLE, self.to_string()),
            ClientError::Protocol { .. } => ApiError::new(code::INTERNAL, self.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

/// A raw response: status, body bytes and the API version header.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub api_version: Option<String>,
    pub content_type: Option<String>,
}

impl Client {
    pub fn new(path: impl AsRef<Path>) -> Self {
        Client {
            path: path.as_ref().to_path_buf(),
            timeout: Duration::from_secs(120),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get<R: DeserializeOwned>(&self, route: &str) -> Result<R, ClientError> {
        let raw = self.request("GET", route, None)?;
        self.decode(raw)
    }

    pub fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| self.protocol(format!("encoding request: {e}")))?;
        let raw = self.request("POST", route, Some(&body))?;
        self.decode(raw)
    }

    pub fn put<B: Serialize, R: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| self.protocol(format!("encoding request: {e}")))?;
        let raw = self.request("PUT", route, Some(&body))?;
        self.decode(raw)
    }

    pub fn delete<R: DeserializeOwned>(&self, route: &str) -> Result<R, ClientError> {
        let raw = self.request("DELETE", route, None)?;
        self.decode(raw)
    }

    /// Fetches a non-JSON document (the metrics page).
    pub fn get_text(&self, route: &str) -> Result<String, ClientError> {
        let raw = self.request("GET", route, None)?;
        self.check_version(&raw)?;
        if raw.status >= 400 {
            return Err(self.error_from(&raw));
        }
        String::from_utf8(raw.body).map_err(|_| self.protocol("response is not UTF-8".into()))
    }

    fn decode<R: DeserializeOwned>(&self, raw: RawResponse) -> Result<R, ClientError> {
        self.check_version(&raw)?;
        if raw.status >= 400 {
            return Err(self.error_from(&raw));
        }
        serde_json::from_slice(&raw.body)
            .map_err(|e| self.protocol(format!("decoding response: {e}")))
    }

    fn check_version(&self, raw: &RawResponse) -> Result<(), ClientError> {
        match raw.api_version.as_deref() {
            Some(v) if v == API_VERSION.to_string() => Ok(()),
            Some(v) => Err(ClientError::VersionMismatch {
                path: self.path.clone(),
                server: v.to_string(),
                client: API_VERSION,
            }),
            None => Err(ClientError::VersionMismatch {
                path: self.path.clone(),
                server: "unknown (no version header: is this netd?)".into(),
                client: API_VERSION,
            }),
        }
    }

    fn error_from(&self, raw: &RawResponse) -> ClientError {
        match serde_json::from_slice::<ApiError>(&raw.body) {
            Ok(e) => ClientError::Api(e),
            Err(_) => ClientError::Api(ApiError::new(
                code::INTERNAL,
                format!(
                    "netd answered HTTP {}: {}",
                    raw.status,
                    String::from_utf8_lossy(&raw.body).trim()
                ),
            )),
        }
    }

    fn protocol(&self, msg: String) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            msg,
        }
    }

    fn unreachable(&self, source: std::io::Error) -> ClientError {
        ClientError::Unreachable {
            path: self.path.clone(),
            source,
        }
    }

    /// Sends one request and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        route: &str,
        body: Option<&[u8]>,
    ) -> Result<RawResponse, ClientError> {
        let mut stream = UnixStream::connect(&self.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::PermissionDenied {
                    path: self.path.clone(),
                }
            } else {
                self.unreachable(e)
            }
        })?;
        stream.set_read_timeout(Some(self.timeout)).ok();
        stream.set_write_timeout(Some(self.timeout)).ok();
        let body = body.unwrap_or(&[]);
        let mut req = format!(
            "{method} {route} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str("\r\n");
        let written = stream
            .write_all(req.as_bytes())
            .and_then(|_| stream.write_all(body));
        let mut buf = Vec::with_capacity(4096);
        match written {
            Ok(()) => {
                stream
                    .read_to_end(&mut buf)
                    .map_err(|e| self.unreachable(e))?;
            }
            // netd may answer (a 403, say) and close before reading the
            // whole body: its answer is still there to read.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                let _ = stream.read_to_end(&mut buf);
                if buf.is_empty() {
                    return Err(self.unreachable(e));
                }
            }
            Err(e) => return Err(self.unreachable(e)),
        }
        if buf.is_empty() {
            return Err(self.unreachable(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response (netd exited?)",
            )));
        }
        parse_response(&buf).map_err(|msg| self.protocol(msg))
    }
}

fn parse_response(buf: &[u8]) -> Result<RawResponse, String> {
    let head_end = find(buf, b"\r\n\r\n").ok_or("response has no header terminator")?;
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "response header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty response")?;
    let mut parts = status_line.splitn(3, ' ');
    let proto = parts.next().unwrap_or("");
    if !proto.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut api_version = None;
    let mut content_type = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-type" => content_type = Some(value.to_string()),
            n if n == API_VERSION_HEADER => api_version = Some(value.to_string()),
            _ => {}
        }
    }
    let rest = &buf[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = content_length {
        if rest.len() < n {
            return Err(format!("body truncated: {} of {n} bytes", rest.len()));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(RawResponse {
        status,
        body,
        api_version,
        content_type,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("chunk size line missing")?;
        let size_str = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_str = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| format!("bad chunk size {size_str:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("chunk truncated".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_response() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-furrow-api-version: 1\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{}");
        assert_eq!(r.api_version.as_deref(), Some("1"));
    }

    #[test]
    fn parses_chunked_response() {
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK").is_err());
    }

    #[test]
    fn unreachable_socket_maps_to_try_again() {
        let c = Client::new("/nonexistent/furrow-test.sock");
        let err = c.get::<serde_json::Value>("/v1/status").unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }));
        assert_eq!(err.to_api_error().code, code::TRY_AGAIN);
    }
}
