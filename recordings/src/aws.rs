//! The AWS SDK clients the S3 and CloudWatch Logs sinks use.
//!
//! One HTTPS stack (rustls with ring, as everywhere in Airlock) and deadlines on every call.
//! S3 calls get the SDK's standard retries (every S3 call the sink makes may be repeated
//! safely), with short waits so a recovered service is used at once; longer outages are the
//! shipper's. CloudWatch Logs calls get none: PutLogEvents has no idempotency token, and a
//! resend of a call whose outcome is unknown must go through the sink, which first reads the
//! stream to see whether it landed (`sink::cloudwatch`).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// How the broker reaches AWS (or an S3/CloudWatch-compatible service).
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// The region; without it the SDK's usual sources (AWS_REGION, profile) decide.
    pub region: Option<String>,
    /// A custom endpoint for both services, e.g. `http://127.0.0.1:5000` for moto or MinIO.
    /// With it, S3 is addressed path-style (`host/bucket/key`).
    pub endpoint_url: Option<String>,
    /// Fixed credentials; without them the SDK's default chain (environment, profile,
    /// instance metadata) applies.
    pub static_credentials: Option<(String, String)>,
}

/// Clients for the two services.
#[derive(Clone, Debug)]
pub struct AwsClients {
    /// The S3 client.
    pub s3: aws_sdk_s3::Client,
    /// The CloudWatch Logs client.
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

/// Deadline to open a connection: a service that is down fails fast and cleanly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline for the response once a request is sent. Generous: a request that times out may
/// still take effect later, and waiting out a stalled service saves the checks and resends.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for one attempt of a call (a 5 MiB part on a slow link must fit).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(90);
/// Deadline for one call with its retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(180);
/// Attempts of one S3 call, and the longest wait between them.
const S3_ATTEMPTS: u32 = 3;
const S3_MAX_RETRY_WAIT: Duration = Duration::from_secs(1);

impl AwsClients {
    /// Builds the clients; nothing is sent until a sink makes a call.
    pub async fn new(settings: &AwsSettings) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((id, secret)) = &settings.static_credentials {
            loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "airlock-static"));
        }
        let shared = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.endpoint_url.is_some())
            .retry_config(
                RetryConfig::standard().with_max_attempts(S3_ATTEMPTS).with_max_backoff(S3_MAX_RETRY_WAIT),
            )
            .build();
        // No retries by the SDK: see the module documentation.
        let logs = aws_sdk_cloudwatchlogs::config::Builder::from(&shared)
            .retry_config(RetryConfig::disabled())
            .build();
        AwsClients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(logs),
        }
    }
}
