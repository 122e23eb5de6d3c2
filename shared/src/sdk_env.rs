//! The AWS SDK configuration of a function, read from its environment alone.
//!
//! Lambda gives a function everything its SDK clients need as variables: the region (`AWS_REGION`), the
//! execution role's credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; an
//! environment without them names a container credentials endpoint instead, as SnapStart does) and, on
//! the local stack, the emulator's address (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`).
//! aws-config's default chains would also read profile files, SSO, web identity through STS and IMDS:
//! none of them applies to a function, and linking them made each function binary about 0.4 MB bigger
//! (bench/SIZES.md). So the functions, the local server and `zaqar-table` build their configuration
//! here, and a missing variable stops start-up with a message that names it. Tests and benches keep
//! aws-config's whole chain through [`crate::app::sdk_loader`].

use crate::vars::{ConfigError, Vars};
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

/// The SDK configuration for `vars`: region, credentials, endpoint overrides, the workspace's
/// HTTPS client ([`crate::app::https_client`]) and the latest behaviour version. Deadlines and retries
/// are the storage's own ([`crate::timeouts::StorageTimeouts`]).
pub fn sdk_config(vars: &Vars) -> Result<aws_config::SdkConfig, ConfigError> {
    let region = vars
        .get("AWS_REGION")
        .or_else(|| vars.get("AWS_DEFAULT_REGION"))
        .ok_or_else(|| ConfigError::new("AWS_REGION", "", "the AWS region (Lambda sets it)"))?;
    Ok(aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .credentials_provider(credentials(vars)?)
        .http_client(crate::app::https_client())
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .time_source(aws_smithy_async::time::SystemTimeSource::new())
        .service_config(EndpointVars::new(vars))
        .build())
}

/// The role's credentials: from `AWS_ACCESS_KEY_ID` and its companions when set (Lambda sets them, and
/// they last as long as the execution environment: nothing to refresh), else from a container
/// credentials endpoint ([`crate::container_credentials`]).
fn credentials(vars: &Vars) -> Result<SharedCredentialsProvider, ConfigError> {
    let expected = "the execution role's credentials (Lambda sets them)";
    if let Some(key_id) = vars.get("AWS_ACCESS_KEY_ID") {
        let secret =
            vars.get("AWS_SECRET_ACCESS_KEY").ok_or_else(|| ConfigError::new("AWS_SECRET_ACCESS_KEY", "", expected))?;
        let static_keys = Credentials::new(key_id, secret, vars.optional("AWS_SESSION_TOKEN"), None, "environment");
        return Ok(SharedCredentialsProvider::new(static_keys));
    }
    match crate::container_credentials::ContainerCredentials::from_vars(vars)? {
        Some(endpoint) => Ok(SharedCredentialsProvider::new(endpoint)),
        None => {
            Err(ConfigError::new("AWS_ACCESS_KEY_ID", "", format!("{expected}, or a container credentials endpoint")))
        }
    }
}

/// Endpoint overrides as the SDK documents them: `AWS_ENDPOINT_URL_<SERVICE ID>` (upper case, spaces
/// as `_`: `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`) before `AWS_ENDPOINT_URL`;
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` turns both off.
#[derive(Debug)]
struct EndpointVars(Vars);

impl EndpointVars {
    fn new(vars: &Vars) -> Self {
        let ignore = vars.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let kept = if ignore {
            Vars::default()
        } else {
            vars.iter().filter(|(name, _)| name.starts_with("AWS_ENDPOINT_URL")).collect()
        };
        EndpointVars(kept)
    }
}

impl LoadServiceConfig for EndpointVars {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        let service = key.service_id().to_uppercase().replace(' ', "_");
        let specific = format!("{}_{service}", key.env());
        self.0.optional(&specific).or_else(|| self.0.optional(key.env()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().copied().collect()
    }

    const CREDS: [(&str, &str); 3] =
        [("AWS_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_SECRET_ACCESS_KEY", "s3cr3t")];

    fn dynamodb_endpoint(pairs: &[(&str, &str)]) -> Option<String> {
        let mut all = CREDS.to_vec();
        all.extend_from_slice(pairs);
        let sdk = sdk_config(&vars(&all)).unwrap();
        // What the DynamoDB client's `From<&SdkConfig>` asks for its endpoint.
        let key = ServiceConfigKey::builder().service_id("DynamoDB").env("AWS_ENDPOINT_URL").profile("endpoint_url");
        sdk.service_config()?.load_config(key.build().unwrap())
    }

    #[test]
    fn a_missing_region_or_credential_stops_start_up_with_its_name() {
        let err = sdk_config(&vars(&CREDS[1..])).unwrap_err();
        assert_eq!(err.name, "AWS_REGION");
        let err = sdk_config(&vars(&[CREDS[0], CREDS[1]])).unwrap_err();
        assert_eq!(err.name, "AWS_SECRET_ACCESS_KEY");
        assert!(!err.to_string().contains("AKID"));
        let err = sdk_config(&vars(&[CREDS[0]])).unwrap_err();
        assert_eq!(err.name, "AWS_ACCESS_KEY_ID");
        let endpoint = ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/creds");
        assert!(sdk_config(&vars(&[CREDS[0], endpoint])).unwrap().credentials_provider().is_some());
        let sdk = sdk_config(&vars(&[("AWS_DEFAULT_REGION", "us-west-2"), CREDS[1], CREDS[2]])).unwrap();
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("us-west-2"));
    }

    #[test]
    fn endpoints_prefer_the_service_variable_to_the_global_one() {
        assert_eq!(dynamodb_endpoint(&[]), None);
        assert_eq!(
            dynamodb_endpoint(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:1")]).as_deref(),
            Some("http://127.0.0.1:1")
        );
        let both = [("AWS_ENDPOINT_URL", "http://127.0.0.1:1"), ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:2")];
        assert_eq!(dynamodb_endpoint(&both).as_deref(), Some("http://127.0.0.1:2"));
        let other = [("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:3")];
        assert_eq!(dynamodb_endpoint(&other), None);
        let ignored = [("AWS_ENDPOINT_URL", "http://127.0.0.1:1"), ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")];
        assert_eq!(dynamodb_endpoint(&ignored), None);
    }

    #[tokio::test]
    async fn credentials_come_from_the_variables() {
        use aws_sdk_dynamodb::config::ProvideCredentials;
        let mut all = CREDS.to_vec();
        all.push(("AWS_SESSION_TOKEN", "tok"));
        let sdk = sdk_config(&vars(&all)).unwrap();
        let creds = sdk.credentials_provider().unwrap().provide_credentials().await.unwrap();
        assert_eq!(
            (creds.access_key_id(), creds.secret_access_key(), creds.session_token()),
            ("AKID", "s3cr3t", Some("tok"))
        );
    }
}
