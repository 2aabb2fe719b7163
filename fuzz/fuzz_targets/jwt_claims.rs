//! `TokenClaims::from_jwt` over arbitrary strings, and over well-formed JWTs whose payload is
//! the fuzzer's bytes (so the JSON decoding is reached, not only the base64 check).
//! Invariant: no panic; a decoded token always had exactly three dot-separated parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redis_entra::TokenClaims;

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if TokenClaims::from_jwt(s).is_ok() {
            assert_eq!(s.trim().split('.').count(), 3);
        }
    }
    // The bytes as the payload of a JWT with an `alg: none` header.
    let token = format!("eyJhbGciOiJub25lIn0.{}.sig", b64url(data));
    let _ = TokenClaims::from_jwt(&token);
});
