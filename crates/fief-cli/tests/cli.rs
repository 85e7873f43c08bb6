//! The `fief` binary as users run it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fief;

#[test]
fn demo_runs_to_the_end() {
    let out = fief().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("403") && stdout.contains("Summary") && stdout.contains("OK"),
        "{stdout}"
    );
}

/// Writes a real audit log by driving a server, then tampers with it.
#[tokio::test]
async fn audit_verify_names_the_first_tampered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let config = fief_config::Config::ephemeral(dir.path());
    let server = fief_server::start(config, fief_server::Secrets::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for id in ["aa", "bb", "cc"] {
        let r = http
            .post(format!("http://{}/admin/v1/tenants", server.admin_addr))
            .bearer_auth(&server.admin_token)
            .json(&serde_json::json!({"id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    server.shutdown().await.unwrap();

    let verify = || {
        fief()
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK, 6 entries"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let path = dir.path().join("audit.log");
    let original = std::fs::read(&path).unwrap();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            original
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    // One byte inside entry 4: a digit of its timestamp.
    let pos = line_starts[3]
        + original[line_starts[3]..]
            .windows(5)
            .position(|w| w == b"\"ts\":")
            .unwrap()
        + 7;
    let mut tampered = original.clone();
    tampered[pos] = if tampered[pos] == b'1' { b'2' } else { b'1' };
    std::fs::write(&path, &tampered).unwrap();
    let out = verify();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("entry 4"), "{stderr}");

    std::fs::write(&path, &original).unwrap();
    assert!(verify().status.success());
}

#[test]
fn check_config_validates_and_rejects_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "data_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:9080\"\n",
    )
    .unwrap();
    let out = fief()
        .args(["serve", "--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("9080"));
    // The example config in the repository is valid as written.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fief.example.toml");
    let out = fief()
        .args(["serve", "--check-config", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listne = \"127.0.0.1:9080\"\n").unwrap();
    let out = fief()
        .args(["serve", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listne"));
    let out = fief()
        .args(["serve", "--check-config"])
        .env("FIEF_MAX_BODY_BYTES", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FIEF_MAX_BODY_BYTES"));
}

#[test]
fn policy_validate_checks_files_offline() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    for file in ["department.cedar", "trust-same-tenant.cedar"] {
        let out = fief()
            .args(["policy", "validate"])
            .arg(examples.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "permit (principal, action, resource)\n  when { resource.department == \"HR\" };\n",
    )
    .unwrap();
    let out = fief()
        .args(["policy", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.cedar:2:"), "{stderr}");
    assert!(stderr.contains("department"), "{stderr}");
}
