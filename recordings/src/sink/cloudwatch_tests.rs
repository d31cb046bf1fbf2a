//! Unit tests of the CloudWatch Logs sink's error handling.

use super::*;
use aws_sdk_cloudwatchlogs::config::http::HttpResponse;
use aws_sdk_cloudwatchlogs::error::ErrorMetadata;
use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError;
use aws_sdk_cloudwatchlogs::types::error::ResourceNotFoundException;
use aws_smithy_types::body::SdkBody;

fn service_error(status: u16, err: PutLogEventsError) -> SdkError<PutLogEventsError> {
    SdkError::service_error(err, HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()))
}

fn coded(code: &str) -> PutLogEventsError {
    PutLogEventsError::generic(ErrorMetadata::builder().code(code).message("m").build())
}

#[test]
fn throttling_and_unavailability_are_retried_in_place_other_errors_not() {
    assert!(transient(&service_error(400, coded("ThrottlingException"))));
    assert!(transient(&service_error(503, coded("ServiceUnavailableException"))));
    assert!(transient(&service_error(500, coded("InternalFailure"))));
    // No answer: back to the shipper, which waits until the service answers again.
    let timeout = SdkError::<PutLogEventsError>::timeout_error("slow");
    assert!(!transient(&timeout));
    assert!(remote("PutLogEvents", &timeout).is_unanswered());
    assert!(!transient(&service_error(400, coded("InvalidParameterException"))));
    let gone = PutLogEventsError::ResourceNotFoundException(
        ResourceNotFoundException::builder().message("The specified log stream does not exist.").build(),
    );
    let gone = service_error(400, gone);
    assert!(!transient(&gone));
    assert!(!remote("PutLogEvents", &gone).is_unanswered());
    assert_eq!(
        remote("PutLogEvents", &gone).to_string(),
        "cloudwatch PutLogEvents: ResourceNotFoundException: The specified log stream does not exist. (HTTP 400)"
    );
}

#[test]
fn calls_without_an_answer_may_have_landed_and_are_found_by_their_last_event() {
    assert!(unanswered(&SdkError::<PutLogEventsError>::timeout_error("slow")));
    assert!(!unanswered(&service_error(503, coded("ServiceUnavailableException"))));
    assert!(!refused(&SdkError::<PutLogEventsError>::timeout_error("slow")), "a timeout may have landed");
    let ev = |ts, m: &str| LogEvent { timestamp_ms: ts, message: m.into(), resume_at: 0 };
    let batch = [ev(1, "a"), ev(2, "b"), ev(2, "c")];
    assert_eq!(latest_in_batch(&batch, Some((Some(2), Some("b")))), 2);
    assert_eq!(latest_in_batch(&batch, Some((Some(2), Some("c")))), 3);
    assert_eq!(latest_in_batch(&batch, Some((Some(3), Some("b")))), 0, "same text, other time");
    assert_eq!(latest_in_batch(&batch, Some((Some(0), Some("older")))), 0);
    assert_eq!(latest_in_batch(&batch, None), 0, "an empty stream");
}
