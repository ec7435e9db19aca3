//! Whether a failed export may be sent again, per the OTLP specification's failure rules.
//!
//! opentelemetry-otlp already retries short blips itself (its `RetryPolicy`, with the same
//! rules) and then hands back only a message: `... gRPC code: Unavailable[: local cause]` or
//! `HTTP export failed with status code: 400` / `... network error`. This reads that message.
//! Whatever cannot be read as a rejection is kept and sent again: a finding is dropped only when
//! the collector said it will never take it.
//!
//! - gRPC: `Cancelled`, `DeadlineExceeded`, `Aborted`, `OutOfRange`, `Unavailable`, `DataLoss`
//!   are retryable, and so is `ResourceExhausted` (a collector shedding load; the exporter gives
//!   up on a `RetryInfo` delay longer than what is left of its timeout, so the batch waits here
//!   instead); the other codes are rejections. A status
//!   made on this side (a connection refused, a timeout: the message names a local cause) is
//!   always retryable: the collector never answered.
//! - HTTP: 429, 502, 503, 504 and no response at all are retryable; any other status is a
//!   rejection.

use opentelemetry_sdk::error::OTelSdkError;

/// What to do with a batch whose export failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it and send it again later.
    Retry,
    /// The collector will never take it: drop it.
    Reject,
}

/// The verdict on `error`.
pub fn classify(error: &OTelSdkError) -> Verdict {
    match error {
        OTelSdkError::Timeout(_) => Verdict::Retry,
        // Only after this side shut the exporter down: nothing can send it any more.
        OTelSdkError::AlreadyShutdown => Verdict::Reject,
        OTelSdkError::InternalFailure(message) => classify_message(message),
    }
}

fn classify_message(message: &str) -> Verdict {
    if let Some((_, rest)) = message.split_once("gRPC code: ") {
        let (code, local_cause) = match rest.split_once(':') {
            Some((code, cause)) => (code.trim(), !cause.trim().is_empty()),
            None => (rest.trim(), false),
        };
        if local_cause {
            return Verdict::Retry;
        }
        return match code {
            "Cancelled" | "DeadlineExceeded" | "Aborted" | "OutOfRange" | "Unavailable" | "DataLoss"
            | "ResourceExhausted" => Verdict::Retry,
            "Unknown" | "InvalidArgument" | "NotFound" | "AlreadyExists" | "PermissionDenied"
            | "FailedPrecondition" | "Unimplemented" | "Internal" | "Unauthenticated" | "Ok" => {
                Verdict::Reject
            }
            _ => Verdict::Retry,
        };
    }
    if let Some((_, rest)) = message.split_once("status code: ") {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        return match digits.parse::<u16>() {
            Ok(0 | 429 | 502 | 503 | 504) => Verdict::Retry,
            Ok(_) => Verdict::Reject,
            Err(_) => Verdict::Retry,
        };
    }
    Verdict::Retry
}
