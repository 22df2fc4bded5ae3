//! The request parser on arbitrary bytes: it never panics, and whatever it
//! tokenizes, quoting writes back to the same tokens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meetingd::protocol::{parse, request_line, tokenize};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse(data) {
        let _ = (request.name(), request.is_admin());
    }
    if let Ok(tokens) = tokenize(data) {
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let line = request_line(&refs);
        let again = tokenize(line.trim_end_matches('\n').as_bytes());
        assert_eq!(again.ok(), Some(tokens), "quoting round-trips");
    }
});
