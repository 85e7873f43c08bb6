//! Client-written addresses and invocation bodies: every parser must answer
//! Ok or Err, never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

use fief_core::{parse_name, ModelRef, RoleRef, TenantId};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let caller = TenantId::parse("caller").expect("valid tenant id");
        let _ = TenantId::parse(text);
        let _ = parse_name("name", text);
        if let Ok(m) = ModelRef::parse(text, &caller) {
            // A parsed address round-trips through its canonical name.
            let again = ModelRef::parse(&m.frn(), &caller).expect("an frn parses");
            assert_eq!(again, m);
        }
        if let Ok(r) = RoleRef::parse(text, &caller) {
            assert_eq!(RoleRef::parse(&r.frn(), &caller).expect("an frn parses"), r);
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = fief_serving::Inputs::from_json(&value);
        if let Some(inputs) = value.get("inputs") {
            let _ = fief_serving::Inputs::from_json(inputs);
        }
    }
});
