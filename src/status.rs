//! What a replica's status says beyond its code and message.
//!
//! A client must know whether a failed write left anything applied: if not, it may send it
//! again; if maybe, it must report the outcome unknown (increments are not idempotent). The
//! replica knows this where it refuses the write, so it says so in the status itself, as a
//! metadata entry, rather than leaving clients to recognise its messages. Codes and messages
//! stay as they were: other implementations' clients see only those.

use tonic::metadata::MetadataValue;
use tonic::Status;

/// Metadata key (value `1`) on every status a replica returns for a write it refused before
/// applying anything.
pub const NOTHING_APPLIED_KEY: &str = "chainrep-nothing-applied";

/// Marks `status` as a refusal that applied nothing.
pub fn nothing_applied(mut status: Status) -> Status {
    status.metadata_mut().insert(NOTHING_APPLIED_KEY, MetadataValue::from_static("1"));
    status
}

/// Whether a replica marked `status` with [`nothing_applied`].
pub fn says_nothing_applied(status: &Status) -> bool {
    status.metadata().get(NOTHING_APPLIED_KEY).is_some_and(|v| v.as_bytes() == b"1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_read_back_and_keeps_code_and_message() {
        let s = nothing_applied(Status::unavailable("the head cannot take writes now: x"));
        assert!(says_nothing_applied(&s));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.message(), "the head cannot take writes now: x");
        assert!(!says_nothing_applied(&Status::unavailable("the head cannot take writes now: x")));
    }

    #[test]
    fn the_mark_survives_the_trip_through_http_headers() {
        let s = nothing_applied(Status::resource_exhausted("busy"));
        let mut headers = tonic::codegen::http::HeaderMap::new();
        s.add_header(&mut headers).unwrap();
        let back = Status::from_header_map(&headers).expect("a status");
        assert!(says_nothing_applied(&back));
        assert_eq!(back.code(), tonic::Code::ResourceExhausted);
    }
}
