//! Zaqar-style JSON bodies for the errors hyper answers by itself.
//!
//! hyper parses each request head before any handler runs. A head it cannot parse (bad request line,
//! bad header field, conflicting framing headers, a URI over 64 KiB, header fields over its buffer)
//! gets an automatic `400`, `414` or `431` with an empty body, and the connection closes. hyper has no
//! hook for those responses, yet Zaqar clients read `{"title", "description"}` from every error. So
//! the connection is wrapped: when hyper writes one of those automatic responses, the wrapper writes a
//! Zaqar-style one instead. They are told apart from handler responses by the header every handler
//! response carries and they lack, `x-openstack-request-id`. The server turns off hyper's vectored
//! writes, so an automatic response reaches [`AsyncWrite::poll_write`] whole, in one buffer.

use http::StatusCode;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zaqar::ApiError;

/// A connection whose automatic hyper error responses are rewritten (see the module docs).
pub(crate) struct JsonHttpErrors<T> {
    inner: T,
    /// A rewritten response, and how much of it has reached `inner`.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> JsonHttpErrors<T> {
    pub(crate) fn new(inner: T) -> Self {
        JsonHttpErrors { inner, pending: Vec::new(), sent: 0 }
    }
}

impl<T: AsyncWrite + Unpin> JsonHttpErrors<T> {
    /// Writes what is left of a rewritten response.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonHttpErrors<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonHttpErrors<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        if let Some(status) = automatic_error(buf) {
            this.pending = zaqar_response(status, buf);
            // hyper's bytes are accounted for; the replacement goes out now or at the next flush.
            if let Poll::Ready(Err(e)) = this.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The header fields of a response head, as (name, value) pairs.
fn fields(head: &str) -> impl Iterator<Item = (&str, &str)> {
    head.split("\r\n").skip(1).filter_map(|line| line.split_once(':')).map(|(n, v)| (n.trim(), v.trim()))
}

/// The status of a buffer that is exactly one of hyper's automatic error responses: a `400`, `414` or
/// `431` head with `content-length: 0`, nothing after it, and no request id.
fn automatic_error(buf: &[u8]) -> Option<StatusCode> {
    let head = std::str::from_utf8(buf).ok()?;
    let status: StatusCode = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    if !matches!(status.as_u16(), 400 | 414 | 431) || head.find("\r\n\r\n")? + 4 != head.len() {
        return None;
    }
    let empty = fields(head).any(|(n, v)| n.eq_ignore_ascii_case("content-length") && v == "0");
    let handled = fields(head).any(|(n, _)| n.eq_ignore_ascii_case("x-openstack-request-id"));
    (empty && !handled).then_some(status)
}

/// The Zaqar-style response for an automatic one (its `date` kept), closing the connection as hyper
/// does after a parse error.
fn zaqar_response(status: StatusCode, automatic: &[u8]) -> Vec<u8> {
    let description = match status {
        StatusCode::URI_TOO_LONG => "The request URI is longer than this server accepts (64 KiB).",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "The request header fields are larger than this server accepts (100 fields, about 400 KiB)."
        }
        _ => "The request could not be parsed as HTTP/1.1: check the request line, header fields and framing.",
    };
    let resp = zaqar::transport::refused(ApiError::http(status, description));
    let id = resp.header_value("x-openstack-request-id").unwrap_or("-");
    tracing::info!(status = status.as_u16(), request_id = %id, "refused an unparsable request");
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", status.as_u16());
    for (name, value) in &resp.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let head = String::from_utf8_lossy(automatic);
    if let Some((_, date)) = fields(&head).find(|(n, _)| n.eq_ignore_ascii_case("date")) {
        out.push_str(&format!("date: {date}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", resp.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&resp.body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_automatic_errors_are_recognised() {
        let auto = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_error(auto), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        assert_eq!(
            automatic_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        for not_automatic in [
            // A handler's 400 carries a request id (and a body).
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-openstack-request-id: req-1\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"{\"title\": \"400 Bad Request\"}",
        ] {
            assert_eq!(automatic_error(not_automatic), None, "{}", String::from_utf8_lossy(not_automatic));
        }
    }

    #[test]
    fn the_replacement_is_a_zaqar_error() {
        let out = zaqar_response(StatusCode::URI_TOO_LONG, b"HTTP/1.1 414 URI Too Long\r\ndate: Tue\r\n\r\n");
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: application/json\r\n") && head.contains("\r\ndate: Tue\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["title"], "414 URI Too Long");
        assert!(json["description"].as_str().unwrap().contains("64 KiB"));
    }
}
