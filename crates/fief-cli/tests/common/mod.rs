//! Running the `fief` binary as users do.
#![allow(dead_code)]

use std::process::Command;

/// The built `fief`, without the caller's FIEF_* settings.
pub fn fief() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fief"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FIEF_") {
            c.env_remove(k);
        }
    }
    c
}
