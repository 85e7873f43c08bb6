//! The gateway's answers equal an independent ONNX runtime's (onnxruntime,
//! via scripts/onnx_reference.py) within 1e-4. `.ci/run` installs
//! onnxruntime; under CI=true its absence is a failure, not a skip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use common::*;

fn onnxruntime_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import onnxruntime"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but python3 with onnxruntime is missing; .ci/run installs it");
    }
    ok
}

#[tokio::test]
async fn gateway_matches_onnxruntime() {
    if !onnxruntime_available() {
        eprintln!(
            "skipping: python3 with onnxruntime is not installed (pip install onnxruntime numpy)"
        );
        return;
    }
    let s = spawn().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/onnx_reference.py");
    let batch = vec![
        vec![0.5f32, -1.0, 2.0, 0.25],
        vec![3.0, -2.5, 0.0, 1.5],
        vec![-0.75, 0.125, 8.0, -4.0],
    ];
    for (tenant, tier, endpoint, widths, seed) in [
        ("aa", "pool", "shared", vec![4, 16, 8, 3], 11u64),
        ("bb", "silo", "bb", vec![4, 32, 5], 22),
    ] {
        let key = s.tenant(tenant, tier).await;
        let mlp = fief_serving::onnx_builder::Mlp::seeded(&widths, seed);
        let onnx = mlp.to_onnx();
        assert_eq!(
            s.put_model(&key, "m", onnx.clone()).await.status,
            StatusCode::CREATED
        );
        let r = s
            .invoke(&key, endpoint, "m", &json!({"inputs": batch}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let gateway = outputs(&r);

        let model_path = s.dir.path().join(format!("{tenant}.onnx"));
        let inputs_path = s.dir.path().join(format!("{tenant}.json"));
        std::fs::write(&model_path, &onnx).unwrap();
        std::fs::write(&inputs_path, json!({"input": batch}).to_string()).unwrap();
        let out = Command::new("python3")
            .arg(&script)
            .arg(&model_path)
            .arg(&inputs_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let reference: Vec<Vec<f32>> = serde_json::from_value(reference["output"].clone()).unwrap();
        let diff = max_diff(&gateway, &reference);
        assert!(
            diff < 1e-4,
            "{tenant}: max |gateway - onnxruntime| = {diff}"
        );
        // And the plain-math reference agrees with both.
        assert!(max_diff(&reference, &mlp.reference(&batch)) < 1e-4);
    }
}
