//! How the CloudWatch Logs sink reads SDK errors: which to retry in place, which may have
//! taken effect, and how they read in the shipper's status.

use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::cloudwatch_batch::LogEvent;
use super::{no_answer, SinkError};

/// The service name in errors.
pub(super) const SERVICE: &str = "cloudwatch";

/// Whether a failed call may still have reached the service and taken effect: no answer
/// came (a timeout, a broken answer, or a dispatch failure, which the SDK says may have
/// happened after the request was sent).
pub(super) fn unanswered<E>(err: &SdkError<E>) -> bool {
    matches!(err, SdkError::TimeoutError(_) | SdkError::ResponseError(_) | SdkError::DispatchFailure(_))
}

/// How many leading events of `batch` a stream whose latest event is `latest` (timestamp,
/// message) already holds: up to and including the batch's event equal to it, else none.
pub(super) fn latest_in_batch(batch: &[LogEvent], latest: Option<(Option<i64>, Option<&str>)>) -> usize {
    let Some((Some(ts), Some(message))) = latest else { return 0 };
    batch.iter().rposition(|e| e.timestamp_ms == ts && e.message == message).map_or(0, |i| i + 1)
}

/// Throttling, unavailability and other 5xx answers: worth another try at once. Calls that
/// got no answer are not: the service may be down, and the shipper waits until it answers.
pub(super) fn transient<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::ServiceError(s) => {
            let status = s.raw().status();
            status.is_server_error()
                || status.as_u16() == 429
                || matches!(
                    s.err().code(),
                    Some(
                        "ThrottlingException"
                            | "Throttling"
                            | "ServiceUnavailableException"
                            | "TooManyRequestsException"
                            | "RequestLimitExceeded"
                    )
                )
        }
        _ => false,
    }
}

/// What went wrong, in words: the service's code and message, or the full error chain.
pub(super) fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(err: &SdkError<E>) -> String {
    match err {
        SdkError::ServiceError(s) => {
            let what = match (s.err().code(), s.err().message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                // A modeled error names itself and its message when it is displayed.
                (None, _) => s.err().to_string(),
            };
            format!("{what} (HTTP {})", s.raw().status().as_u16())
        }
        other => DisplayErrorContext(other).to_string(),
    }
}

/// An SDK error as the shipper sees it.
pub(super) fn remote<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &'static str,
    err: &SdkError<E>,
) -> SinkError {
    if no_answer(err) {
        return SinkError::Unanswered { service: SERVICE, operation, message: describe(err) };
    }
    SinkError::Remote { service: SERVICE, operation, message: describe(err) }
}
