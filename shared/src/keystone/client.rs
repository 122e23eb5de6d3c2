//! Keystone's HTTP client: the connector under the AWS SDK clients ([`crate::https`]), so a function
//! binary carries one HTTP client stack, not a second one for Keystone. Redirects are not followed: a
//! token goes to the configured Keystone and nowhere else.

use crate::https::{Connector, Reply};
use aws_smithy_types::body::SdkBody;
use std::time::Duration;

pub(crate) struct KeystoneHttp {
    connector: Connector,
    /// The whole exchange, body included.
    timeout: Duration,
}

impl KeystoneHttp {
    pub(crate) fn new(timeout: Duration) -> Self {
        KeystoneHttp { connector: Connector::new(Some(timeout.min(Duration::from_secs(2)))), timeout }
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
        self.connector.exchange(request, self.timeout).await
    }
}
