//! Role credentials from a container credentials endpoint, for execution environments that do not put
//! them in `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (Lambda SnapStart does so, as ECS and EKS do).
//!
//! The endpoint is `AWS_CONTAINER_CREDENTIALS_FULL_URI` (or `http://169.254.170.2` +
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`), asked with the token of
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read on every fetch: it rotates) or
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`, and answers `AccessKeyId`, `SecretAccessKey`, `Token` and
//! `Expiration`. As the AWS SDKs require, a plain-HTTP endpoint must be on loopback or one of the
//! link-local addresses the container agents use, so the token never crosses a network in clear text.
//! The SDK's identity cache asks again before the credentials expire.

use crate::vars::{ConfigError, Vars};
use aws_sdk_dynamodb::config::Credentials;
use aws_smithy_types::body::SdkBody;
use std::net::IpAddr;
use std::time::Duration;

/// The ECS agent's address for `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const ECS_HOST: &str = "http://169.254.170.2";
/// A fetch that takes longer fails (the SDK retries the operation that needed credentials).
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct ContainerCredentials {
    uri: String,
    token: Token,
    connector: crate::https::Connector,
}

#[derive(Debug)]
enum Token {
    None,
    Value(String),
    File(String),
}

impl ContainerCredentials {
    /// The provider `vars` configure, if they name an endpoint; an endpoint the rules above refuse is
    /// an error.
    pub(crate) fn from_vars(vars: &Vars) -> Result<Option<Self>, ConfigError> {
        let uri = match (
            vars.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            vars.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        ) {
            (Some(relative), _) => format!("{ECS_HOST}{relative}"),
            (None, Some(full)) => {
                if !allowed_endpoint(full) {
                    let expected = "an https URL, or an http URL on loopback or the container agent's address";
                    return Err(ConfigError::new("AWS_CONTAINER_CREDENTIALS_FULL_URI", full, expected));
                }
                full.to_string()
            }
            (None, None) => return Ok(None),
        };
        let token =
            match (vars.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"), vars.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
                (Some(file), _) => Token::File(file.to_string()),
                (None, Some(value)) => Token::Value(value.to_string()),
                (None, None) => Token::None,
            };
        Ok(Some(ContainerCredentials { uri, token, connector: crate::https::Connector::new(Some(FETCH_TIMEOUT)) }))
    }

    async fn fetch(&self) -> Result<Credentials, String> {
        let mut request = http::Request::get(&self.uri).header("accept", "application/json");
        let token = match &self.token {
            Token::None => None,
            Token::Value(v) => Some(v.clone()),
            Token::File(path) => Some(
                std::fs::read_to_string(path).map_err(|e| format!("cannot read the authorization token file: {e}"))?,
            ),
        };
        if let Some(token) = token {
            let token = token.trim();
            // A header value cannot carry a line break; one would let the token file inject headers.
            if token.contains(['\r', '\n']) {
                return Err("the authorization token has a line break".into());
            }
            request = request.header("authorization", token);
        }
        let request = request.body(SdkBody::empty()).map_err(|_| "the endpoint is not a valid URL".to_string())?;
        let reply = self.connector.exchange(request, FETCH_TIMEOUT).await?;
        if reply.status != 200 {
            return Err(format!("the endpoint answered {}", reply.status));
        }
        parse(&reply.body)
    }
}

impl aws_credential_types::provider::ProvideCredentials for ContainerCredentials {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            self.fetch().await.map_err(|reason| {
                tracing::warn!(%reason, "no credentials from the container credentials endpoint");
                aws_credential_types::provider::error::CredentialsError::provider_error(reason)
            })
        })
    }
}

/// The endpoint's answer; never echoes its content (it holds the secret key).
fn parse(body: &[u8]) -> Result<Credentials, String> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_string())?;
    let field = |name: &str| doc.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(key_id), Some(secret)) = (field("AccessKeyId"), field("SecretAccessKey")) else {
        return Err("the answer has no AccessKeyId or SecretAccessKey".into());
    };
    let expiry = match field("Expiration") {
        Some(text) => {
            let at = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| "the answer's Expiration is not an RFC 3339 time".to_string())?;
            Some(std::time::SystemTime::from(at))
        }
        None => None,
    };
    Ok(Credentials::new(key_id, secret, field("Token"), expiry, "container"))
}

/// https anywhere; plain http only to loopback and the ECS and EKS agents' link-local addresses.
fn allowed_endpoint(uri: &str) -> bool {
    let Ok(url) = url::Url::parse(uri) else { return false };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => agent_or_loopback(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => agent_or_loopback(IpAddr::V6(ip)),
            None => false,
        },
        _ => false,
    }
}

fn agent_or_loopback(ip: IpAddr) -> bool {
    const AGENTS: [&str; 3] = ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"];
    ip.is_loopback() || AGENTS.iter().any(|a| a.parse::<IpAddr>().ok() == Some(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::ProvideCredentials;

    #[test]
    fn plain_http_reaches_loopback_and_the_agents_only() {
        for ok in [
            "http://127.0.0.1:8080/creds",
            "http://127.1.2.3/x",
            "http://[::1]:9/x",
            "http://localhost/x",
            "http://169.254.170.2/v2/credentials/abc",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "https://creds.example.com/x",
        ] {
            assert!(allowed_endpoint(ok), "{ok}");
        }
        for refused in [
            "http://10.0.0.1/x",
            "http://169.254.169.254/latest",
            "http://example.com/x",
            "ftp://127.0.0.1/x",
            "nonsense",
        ] {
            assert!(!allowed_endpoint(refused), "{refused}");
        }
        let vars: Vars = [("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.1/creds")].into_iter().collect();
        let err = ContainerCredentials::from_vars(&vars).unwrap_err();
        assert_eq!(err.name, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
        assert!(ContainerCredentials::from_vars(&Vars::default()).unwrap().is_none());
    }

    #[test]
    fn answers_parse_without_echoing_secrets() {
        let creds = parse(
            br#"{"AccessKeyId":"AKID","SecretAccessKey":"s3cr3t","Token":"tok","Expiration":"2030-01-02T03:04:05Z"}"#,
        )
        .unwrap();
        assert_eq!(
            (creds.access_key_id(), creds.secret_access_key(), creds.session_token()),
            ("AKID", "s3cr3t", Some("tok"))
        );
        let expiry = creds.expiry().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(expiry, 1_893_553_445);
        let err = parse(br#"{"SecretAccessKey":"s3cr3t"}"#).unwrap_err();
        assert!(!err.contains("s3cr3t"));
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"AccessKeyId":"A","SecretAccessKey":"s","Expiration":"soon"}"#).is_err());
    }

    /// Serves one answer on loopback and returns the request it got.
    async fn endpoint(answer: String) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/creds", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (mut seen, mut buf) = (Vec::new(), [0u8; 1024]);
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
            }
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&seen).to_lowercase()
        });
        (url, served)
    }

    #[tokio::test]
    async fn credentials_come_from_the_endpoint_with_the_token_of_the_file() {
        let body =
            r#"{"AccessKeyId":"AKID","SecretAccessKey":"s3cr3t","Token":"tok","Expiration":"2030-01-02T03:04:05Z"}"#;
        let (url, served) = endpoint(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len())).await;
        let dir = std::env::temp_dir().join(format!("zaqar-creds-{}", rand::random::<u32>()));
        std::fs::write(&dir, "file-token\n").unwrap();
        let vars: Vars = [
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.as_str()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "value-token"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", dir.to_str().unwrap()),
        ]
        .into_iter()
        .collect();
        let provider = ContainerCredentials::from_vars(&vars).unwrap().unwrap();
        let creds = provider.provide_credentials().await.unwrap();
        std::fs::remove_file(&dir).ok();
        assert_eq!((creds.access_key_id(), creds.secret_access_key()), ("AKID", "s3cr3t"));
        let request = served.await.unwrap();
        assert!(request.starts_with("get /creds "), "{request}");
        assert!(request.contains("authorization: file-token\r\n"), "{request}");
    }

    #[tokio::test]
    async fn a_refusal_is_a_provider_error() {
        let (url, _served) = endpoint("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".into()).await;
        let vars: Vars = [("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.as_str())].into_iter().collect();
        let provider = ContainerCredentials::from_vars(&vars).unwrap().unwrap();
        let err = provider.provide_credentials().await.unwrap_err();
        assert!(format!("{err:?}").contains("403"), "{err:?}");
    }
}
