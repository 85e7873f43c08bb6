//! Bearer tokens and key sets: routing a token, verifying it as a session
//! token, and parsing a JWKS document must never panic; nothing but a token
//! signed by our key verifies.
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;

use fief_identity::{looks_like_jwt, parse_jwks, token_kid, SessionSigner};

fn signer() -> &'static SessionSigner {
    static SIGNER: OnceLock<SessionSigner> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let signer = SessionSigner::new();
        let (kid, pkcs8) = SessionSigner::generate().expect("key generation");
        signer
            .add_key(&kid, &pkcs8, SystemTime::now())
            .expect("generated key loads");
        signer
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = looks_like_jwt(token);
        let _ = token_kid(token);
        assert!(signer().verify(token).is_err(), "a fuzzed token verified");
    }
    let _ = parse_jwks(data);
});
