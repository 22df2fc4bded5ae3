//! The request parser on arbitrary bytes: it never panics, whatever it
//! tokenizes quoting writes back to the same tokens, and what it accepts
//! is within what Redis and the library take: every part of a stream id
//! cursor fits in 64 bits, a POST's key is 1-64 bytes of A-Za-z0-9._:-,
//! and chat text holds no control character but tab and newline.
//!
//! `fuzz/dict/protocol.dict` holds the commands, keywords and edge numbers:
//! `cargo fuzz run parse -- -dict=fuzz/dict/protocol.dict`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meetingd::protocol::{Request, parse, request_line, tokenize};

/// A cursor Redis takes: `ms` or `ms-seq`, each part a u64.
fn redis_takes(cursor: &str) -> bool {
    let mut parts = cursor.splitn(2, '-');
    parts.all(|part| !part.is_empty() && part.parse::<u64>().is_ok())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse(data) {
        let _ = (request.name(), request.is_admin(), request.is_big());
        match &request {
            Request::Messages { after: Some(after), .. }
            | Request::Events { after: Some(after), .. }
            | Request::Watch { after: Some(after), .. } => {
                assert!(redis_takes(after), "cursor {after:?} accepted");
            }
            Request::Post { text, key, .. } => {
                assert!(
                    !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t'),
                    "a control character accepted in {text:?}"
                );
                if let Some(key) = key {
                    assert!((1..=64).contains(&key.len()), "key {key:?}");
                    assert!(
                        key.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)),
                        "key {key:?}"
                    );
                }
            }
            _ => {}
        }
    }
    if let Ok(tokens) = tokenize(data) {
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let line = request_line(&refs);
        let again = tokenize(line.trim_end_matches('\n').as_bytes());
        assert_eq!(again.ok(), Some(tokens), "quoting round-trips");
    }
});
