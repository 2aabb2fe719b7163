//! The emulator's HTTP form parsing: the urlencoded decoding every identity endpoint uses, and
//! the token endpoint's body reader (content type, size bound, UTF-8 check) in front of it.
//!
//! The first byte picks the content type sent; the rest is the body. Invariants: no panic; the
//! body reader refuses what is not UTF-8 or not a form, and otherwise agrees with the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_entra_emulator::fuzzing::{parse_form, read_form_body};

const NAMES: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "client_assertion",
    "client_assertion_type",
    "resource",
    "code",
    "redirect_uri",
    "refresh_token",
    "username",
    "password",
    "device_code",
    "",
];

const CONTENT_TYPES: &[Option<&[u8]>] = &[
    Some(b"application/x-www-form-urlencoded"),
    Some(b"Application/X-WWW-Form-Urlencoded; charset=utf-8"),
    Some(b"application/json"),
    Some(b""),
    None,
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let decoded = parse_form(body, NAMES);
    assert_eq!(decoded.len(), NAMES.len());
    assert!(decoded.iter().flatten().all(|v| !v.is_empty()));

    let content_type = CONTENT_TYPES[usize::from(which) % CONTENT_TYPES.len()];
    let read = read_form_body(content_type, body.to_vec(), NAMES);
    let is_form = usize::from(which) % CONTENT_TYPES.len() < 2;
    match read {
        Some(values) => {
            assert!(is_form, "a non-form content type was accepted");
            assert!(
                std::str::from_utf8(body).is_ok(),
                "a non-UTF-8 body was accepted"
            );
            assert_eq!(values, decoded);
        }
        None => assert!(!is_form || std::str::from_utf8(body).is_err()),
    }
});
