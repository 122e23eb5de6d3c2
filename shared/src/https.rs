//! The HTTP client under every AWS SDK client of the service, and under Keystone's requests.
//!
//! The SDK's own client (aws-smithy-http-client) always links HTTP/2 (h2) and an HTTP proxy layer;
//! DynamoDB, Secrets Manager, SES and Keystone are reached over HTTP/1.1 without a proxy from a Lambda
//! function, and the two were about 0.4 MB of every function binary (bench/SIZES.md). This is the
//! same stack without them: hyper-util's pooled client over HTTP/1.1, rustls over ring (the crypto
//! the rest of the workspace links), the system's trust roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` are
//! honoured), the cipher suites the SDK allows, and the SDK's classification of failures, so its
//! retries behave as with its own client. `HTTPS_PROXY`/`HTTP_PROXY` are not honoured.
//!
//! The SDK sets the connect timeout per client ([`HttpConnectorSettings`]); here it bounds the TCP
//! connect. Name resolution, the TLS handshake and a slow answer are bounded by the attempt and
//! operation timeouts of [`crate::timeouts::StorageTimeouts`] (Keystone's and the credentials
//! endpoint's calls by their own deadline), so no separate read timeout is kept here.

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::client::legacy::Client;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Pool = Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>;

/// Idle pooled connections close after this long (the SDK's default): a warm Lambda container keeps
/// its DynamoDB connection between requests.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The SDK client over HTTP/1.1 + rustls; one pool per connect timeout, shared by every SDK client
/// built from the same [`SharedHttpClient`].
pub fn sdk_http_client() -> SharedHttpClient {
    SharedHttpClient::new(Https::default())
}

#[derive(Debug, Default)]
struct Https {
    /// The SDK asks for a connector on every attempt: hand out the same pool each time.
    pools: Mutex<Vec<(Option<Duration>, SharedHttpConnector)>>,
}

impl HttpClient for Https {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        let key = settings.connect_timeout();
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, pool)) = pools.iter().find(|(k, _)| *k == key) {
            return pool.clone();
        }
        let pool = SharedHttpConnector::new(Connector::new(key));
        pools.push((key, pool.clone()));
        pool
    }
}

/// One pool of HTTP/1.1 connections.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    pool: Pool,
}

impl Connector {
    pub(crate) fn new(connect_timeout: Option<Duration>) -> Self {
        Connector::with_tls(connect_timeout, system_tls_config())
    }

    fn with_tls(connect_timeout: Option<Duration>, tls: rustls::ClientConfig) -> Self {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let pool = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(tls);
        Connector { pool }
    }
}

/// An answer read whole: the small JSON answers of Keystone and of the credentials endpoint.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: aws_smithy_runtime_api::http::Headers,
    pub body: bytes::Bytes,
}

impl Connector {
    /// One request and its whole answer within `deadline` (connect, TLS, answer and body). `Err` says why
    /// no answer came, the cause's chain included, without the request's headers.
    pub(crate) async fn exchange(&self, request: http::Request<SdkBody>, deadline: Duration) -> Result<Reply, String> {
        use aws_smithy_types::byte_stream::ByteStream;
        let request = HttpRequest::try_from(request).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .call(request)
                .await
                .map_err(|e| aws_smithy_types::error::display::DisplayErrorContext(e).to_string())?;
            let (status, headers) = (response.status().as_u16(), response.headers().clone());
            let body = ByteStream::new(response.into_body()).collect().await.map_err(|e| e.to_string())?;
            Ok(Reply { status, headers, body: body.into_bytes() })
        };
        tokio::time::timeout(deadline, exchange).await.map_err(|_| "timed out".to_string())?
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let sent = self.pool.request(request);
        HttpConnectorFuture::new(async move {
            match sent.await {
                Ok(response) => HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(classify(e)),
            }
        })
    }
}

/// The TLS settings with the system's trust roots, built once: loading them reads files.
fn system_tls_config() -> rustls::ClientConfig {
    static CONFIG: std::sync::LazyLock<rustls::ClientConfig> = std::sync::LazyLock::new(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::warn!(errors = ?found.errors, "some trust roots could not be loaded");
        }
        let (valid, _) = roots.add_parsable_certificates(found.certs);
        if valid == 0 {
            tracing::warn!("no trust roots found: HTTPS connections will fail");
        }
        tls_config(roots)
    });
    CONFIG.clone()
}

/// TLS 1.2 and 1.3 over ring with the suites the SDK's own client allows (AES-GCM and ChaCha20 with
/// forward secrecy), trusting `roots`. ALPN is the connector builder's to set (for HTTP/1.1 alone it
/// offers none, so a server cannot choose HTTP/2).
fn tls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    use rustls::CipherSuite::*;
    let allowed = [
        TLS13_AES_256_GCM_SHA384,
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let provider = rustls::crypto::ring::default_provider();
    let suites = provider.cipher_suites.iter().filter(|s| allowed.contains(&s.suite())).copied().collect();
    let provider = rustls::crypto::CryptoProvider { cipher_suites: suites, ..provider };
    rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// What the SDK's retry policy should make of a failed exchange, as its own client decides it: a
/// connection that failed or broke is retryable I/O, a timeout is a timeout, a request we could not
/// send is ours.
fn classify(e: hyper_util::client::legacy::Error) -> ConnectorError {
    if let Some(h) = find::<hyper::Error>(&e) {
        if h.is_timeout() {
            return ConnectorError::timeout(e.into());
        }
        if h.is_user() {
            return ConnectorError::user(e.into());
        }
        if h.is_closed() || h.is_canceled() || find::<std::io::Error>(h).is_some() {
            return ConnectorError::io(e.into());
        }
        if h.is_incomplete_message() {
            return ConnectorError::other(e.into(), Some(ErrorKind::TransientError));
        }
    }
    if let Some(io) = find::<std::io::Error>(&e) {
        if io.kind() == std::io::ErrorKind::TimedOut {
            return ConnectorError::timeout(e.into());
        }
    }
    if e.is_connect() || find::<std::io::Error>(&e).is_some() {
        return ConnectorError::io(e.into());
    }
    ConnectorError::other(e.into(), None)
}

fn find<'a, E: Error + 'static>(e: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str) -> HttpRequest {
        HttpRequest::try_from(http::Request::get(url).body(SdkBody::empty()).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable_io() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        let err = Connector::new(Some(Duration::from_secs(1))).call(get("http://127.0.0.1:9/")).await.unwrap_err();
        assert!(err.is_io(), "{err:?}");
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_answer_is_retryable_io() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            drop(socket);
        });
        let err = Connector::new(None).call(get(&url)).await.unwrap_err();
        assert!(err.is_io() || err.as_other() == Some(ErrorKind::TransientError), "{err:?}");
    }

    #[tokio::test]
    async fn answers_come_back_whole_over_one_pooled_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for _ in 0..2 {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed the connection");
                    seen.extend_from_slice(&buf[..n]);
                }
                socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello").await.unwrap();
            }
        });
        let connector = Connector::new(None);
        for _ in 0..2 {
            let resp = connector.call(get(&url)).await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            assert_eq!(resp.headers().get("x-a"), Some("b"));
            let body = aws_smithy_types::byte_stream::ByteStream::new(resp.into_body()).collect().await.unwrap();
            assert_eq!(body.into_bytes().as_ref(), b"hello");
        }
        server.await.unwrap();
    }

    #[test]
    fn tls_offers_no_weak_suites() {
        let config = system_tls_config();
        assert!(!config.crypto_provider().cipher_suites.is_empty());
        assert!(config.crypto_provider().cipher_suites.iter().all(|s| !format!("{:?}", s.suite()).contains("CBC")));
    }

    /// A TLS server on loopback for `localhost` with a certificate made here; the client trusts it alone.
    async fn tls_server(answer: &'static [u8]) -> (String, rustls::RootCertStore, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        // The server would rather speak HTTP/2: it gets it if the client offers it.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://localhost:{}/", listener.local_addr().unwrap().port());
        let served = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(socket).await.unwrap();
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default();
            let (mut seen, mut buf) = (Vec::new(), [0u8; 1024]);
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed the connection");
                seen.extend_from_slice(&buf[..n]);
            }
            tls.write_all(answer).await.unwrap();
            tls.shutdown().await.unwrap();
            alpn
        });
        (url, roots, served)
    }

    #[tokio::test]
    async fn https_answers_come_back_over_http1_with_tls() {
        let (url, roots, served) = tls_server(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let connector = Connector::with_tls(Some(Duration::from_secs(2)), tls_config(roots));
        let resp = connector.call(get(&url)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body = aws_smithy_types::byte_stream::ByteStream::new(resp.into_body()).collect().await.unwrap();
        assert_eq!(body.into_bytes().as_ref(), b"ok");
        // hyper-rustls offers no ALPN at all for an HTTP/1.1-only client: HTTP/2 is never negotiated.
        assert_ne!(served.await.unwrap(), b"h2");
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_refused() {
        let (url, _, _served) = tls_server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let connector = Connector::with_tls(Some(Duration::from_secs(2)), tls_config(rustls::RootCertStore::empty()));
        let err = connector.call(get(&url)).await.unwrap_err();
        let chain = format!("{:?}", aws_smithy_types::error::display::DisplayErrorContext(&err));
        assert!(chain.contains("certificate") || chain.contains("Certificate"), "{chain}");
    }
}
