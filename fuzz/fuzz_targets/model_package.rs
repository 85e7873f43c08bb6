//! Uploaded `.tar.gz` model packages: bounded unpacking must reject anything
//! malformed or oversized without panicking or allocating past its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = fief_serving::package::unpack(data, 1 << 20) {
        assert!(p.onnx.len() <= 1 << 20);
    }
});
