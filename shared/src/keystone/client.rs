//! Keystone's HTTP client: the connector under the AWS SDK clients ([`crate::https`]), so a function
//! binary carries one HTTP client stack, not a second one for Keystone. Redirects are not followed: a
//! token goes to the configured Keystone and nowhere else.

use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_types::error::display::DisplayErrorContext;
use std::time::Duration;

/// What Keystone answered: the status, the `X-Subject-Token` header and the body.
pub(crate) struct Reply {
    pub status: u16,
    pub subject_token: Option<String>,
    pub body: bytes::Bytes,
}

pub(crate) struct KeystoneHttp {
    connector: crate::https::Connector,
    /// The whole exchange, body included.
    timeout: Duration,
}

impl KeystoneHttp {
    pub(crate) fn new(timeout: Duration) -> Self {
        let connector = crate::https::Connector::new(Some(timeout.min(Duration::from_secs(2))));
        KeystoneHttp { connector, timeout }
    }

    /// One request; `Err` says why no answer came (never with the URL or a header in it).
    pub(crate) async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        json: Option<Vec<u8>>,
    ) -> Result<Reply, String> {
        let mut request = http::Request::builder().method(method).uri(url).header("accept", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if json.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(json.map(SdkBody::from).unwrap_or_else(SdkBody::empty))
            .map_err(|_| "the request could not be built (is ZAQAR_KEYSTONE_URL a URL?)".to_string())?;
        let request = HttpRequest::try_from(request).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.connector.call(request).await.map_err(|e| DisplayErrorContext(e).to_string())?;
            let status = response.status().as_u16();
            let subject_token = response.headers().get("x-subject-token").map(str::to_string);
            let body = ByteStream::new(response.into_body()).collect().await.map_err(|e| e.to_string())?;
            Ok(Reply { status, subject_token, body: body.into_bytes() })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| "timed out".to_string())?
    }
}
