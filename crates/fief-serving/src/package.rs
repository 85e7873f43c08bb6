//! `.tar.gz` model packages: a `model.onnx` plus an optional `model.json`
//! naming the inputs and outputs the model must have. Parsed in memory only
//! (nothing is written to disk, so entry paths cannot traverse anywhere) and
//! bounded, so a decompression bomb is refused instead of filling memory.

use std::io::Read;

use serde::Deserialize;

use fief_core::ModelSignature;

use crate::{Result, ServingError};

/// What a package may say about its model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

impl Manifest {
    /// Checks that the model has every input and output the manifest names.
    pub fn check(&self, sig: &ModelSignature) -> Result<()> {
        for (wanted, have, what) in [
            (&self.inputs, &sig.inputs, "input"),
            (&self.outputs, &sig.outputs, "output"),
        ] {
            if let Some(missing) = wanted.iter().find(|n| !have.iter().any(|s| &s.name == *n)) {
                let names: Vec<&str> = have.iter().map(|s| s.name.as_str()).collect();
                return Err(invalid(&format!(
                    "model.json names {what} {missing:?}, but the model's {what}s are [{}]",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Headers, padding and end blocks of a small archive fit in this.
const TAR_OVERHEAD: u64 = 64 * 1024;

pub struct Package {
    pub onnx: Vec<u8>,
    pub manifest: Option<Manifest>,
}

fn invalid(msg: &str) -> ServingError {
    ServingError::InvalidModel(format!("model package: {msg}"))
}

/// Unpacks a `.tar.gz`; `max_unpacked` bounds the bytes read out of it.
pub fn unpack(gz: &[u8], max_unpacked: u64) -> Result<Package> {
    let decoder = flate2::read::GzDecoder::new(gz);
    // The raw tar stream is bounded too (contents plus room for headers and
    // padding), so no entry layout can make us inflate without limit.
    let mut archive = tar::Archive::new(decoder.take(max_unpacked.saturating_add(TAR_OVERHEAD)));
    let entries = archive
        .entries()
        .map_err(|e| invalid(&format!("not a tar.gz archive: {e}")))?;
    let (mut onnx, mut manifest) = (None, None);
    let mut total = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(&format!("unreadable archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| invalid(&format!("bad entry name: {e}")))?
            .into_owned();
        let name = path.to_string_lossy().trim_start_matches("./").to_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() && (name.is_empty() || name == ".") {
            continue;
        }
        if !kind.is_file() {
            return Err(invalid(&format!(
                "entry {name:?} is not a regular file; only model.onnx and model.json are allowed"
            )));
        }
        total += entry.size();
        if total > max_unpacked {
            return Err(invalid(&format!(
                "unpacks to more than {max_unpacked} bytes"
            )));
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| invalid(&format!("cannot read {name:?}: {e}")))?;
        let slot = match name.as_str() {
            "model.onnx" => &mut onnx,
            "model.json" => &mut manifest,
            other => {
                return Err(invalid(&format!(
                    "unexpected entry {other:?}; only model.onnx and model.json are allowed"
                )))
            }
        };
        if slot.replace(bytes).is_some() {
            return Err(invalid(&format!("{name} appears twice")));
        }
    }
    let onnx = onnx.ok_or_else(|| invalid("no model.onnx in the archive"))?;
    let manifest = manifest
        .map(|m| {
            serde_json::from_slice::<Manifest>(&m).map_err(|e| invalid(&format!("model.json: {e}")))
        })
        .transpose()?;
    Ok(Package { onnx, manifest })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a `.tar.gz` from (name, bytes) pairs.
    pub fn targz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, *bytes).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn packages_unpack_and_bad_ones_are_refused() {
        let p = unpack(
            &targz(&[
                ("model.onnx", b"onnx"),
                ("./model.json", br#"{"inputs": ["input"]}"#),
            ]),
            1024,
        )
        .unwrap();
        assert_eq!(p.onnx, b"onnx");
        assert_eq!(p.manifest.unwrap().inputs, vec!["input"]);
        for (files, what) in [
            (vec![("other.txt", &b"x"[..])], "unexpected entry"),
            (vec![("model.json", &b"{}"[..])], "no model.onnx"),
            (
                vec![("model.onnx", &b"a"[..]), ("model.onnx", &b"b"[..])],
                "twice",
            ),
            (
                vec![
                    ("model.onnx", &b"a"[..]),
                    ("model.json", &b"{\"x\": 1}"[..]),
                ],
                "model.json",
            ),
            (vec![("model.onnx", &[0u8; 4096][..])], "more than"),
        ] {
            let e = unpack(&targz(&files), 1024).err().unwrap().to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
        assert!(unpack(b"not gzip", 1024).is_err());
        assert!(unpack(&[], 1024).is_err());
    }
}
