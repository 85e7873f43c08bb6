//! The CLI's habits and its behaviour at the edges: completion, a closed
//! stdout, start-up that creates nothing when it fails, plain logs.

use std::process::Stdio;

use super::common::fief;

/// `fief completion bash` loads in bash and completes `fief`.
#[test]
fn the_bash_completion_loads() {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("set -e; source <(\"$FIEF\" completion bash); complete -p fief")
        .env("FIEF", env!("CARGO_BIN_EXE_fief"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("fief"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = fief().args(["completion", shell]).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
}

/// A reader that goes away (`fief … | head -1`) ends the command quietly:
/// no panic, success.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    for args in [
        vec!["serve", "--check-config"],
        vec!["completion", "bash"],
        vec!["--help"],
    ] {
        let mut child = fief()
            .args(&args)
            .env("FIEF_DATA_DIR", "/nonexistent/fief-test")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}

/// Everything that can be checked is checked before the data directory is
/// made: a port in use or a malformed master key leaves nothing behind, and
/// `--check-config` refuses the key too.
#[test]
fn a_failed_start_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let data = dir.path().join("new");
    let out = fief()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&port.to_string()));
    assert!(!data.exists(), "a failed start left {}", data.display());

    for args in [
        vec!["serve", "--check-config"],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    ] {
        let out = fief()
            .args(&args)
            .arg("--data-dir")
            .arg(&data)
            .env("FIEF_MASTER_KEY", "zz")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("FIEF_MASTER_KEY is not a key: it must be 64 hex digits"),
            "{stderr}"
        );
        assert!(!data.exists());
    }
}

/// Logs written to a file (not a terminal) carry no colour codes.
#[test]
fn logs_to_a_file_are_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut server = super::common::serve_command(&dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let path = dir.path().join("log");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&path)
        .unwrap()
        .contains("fief is serving")
    {
        assert!(started.elapsed().as_secs() < 60, "no start-up log line");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

/// A flag after the subcommand is taken, and help lists the tiers.
#[test]
fn flags_go_anywhere_and_help_lists_values() {
    let out = fief()
        .args(["tenant", "create", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("pool") && help.contains("bridge") && help.contains("silo"),
        "{help}"
    );
    // Refused by the client (no server needed): the flag after `ls` parsed.
    let out = fief()
        .args(["model", "ls", "--data-url", "http://127.0.0.1:1"])
        .env("FIEF_API_KEY", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FIEF_API_KEY is set but empty"), "{stderr}");
}

/// Without the embedder, a folder ingest stops at the first refusal (not
/// one error per file), and what the tenant reads names no server path and
/// no operator command.
#[tokio::test]
async fn an_ingest_without_the_embedder_stops_once_and_shows_no_server_internals() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-embedder");
    std::fs::create_dir(&empty).unwrap();
    let (mut server, data, admin, token) = super::common::serve_with(
        &dir.path().join("data"),
        None,
        &[("FIEF_EMBEDDER_DIR", empty.to_str().unwrap())],
    );
    let http = reqwest::Client::new();
    let key = super::common::create_tenant(&http, &admin, &token, "kbless", None).await;
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    for n in 0..3 {
        std::fs::write(docs.join(format!("{n}.md")), "some text").unwrap();
    }
    let run = |args: Vec<String>| {
        let mut c = fief();
        c.args(args)
            .env("FIEF_DATA_URL", &data)
            .env("FIEF_API_KEY", &key);
        c.output().unwrap()
    };
    let out = run(vec!["kb".into(), "create".into(), "handbook".into()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The gateway is another process: blocking here holds up nothing.
    let out = run(vec![
        "kb".into(),
        "ingest".into(),
        "handbook".into(),
        docs.to_str().unwrap().into(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.matches("embedder").count(), 1, "{stderr}");
    assert!(
        stderr.contains("stopped at 0.md (0 of 3 files ingested)"),
        "{stderr}"
    );
    assert!(stderr.contains("ask the operator"), "{stderr}");
    assert!(
        !stderr.contains(empty.to_str().unwrap()) && !stderr.contains("setup-embedder"),
        "{stderr}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// `fief tenant create` and `fief key create` print each new key in AWS
/// form too: its id as `aws_access_key_id`, its secret as
/// `aws_secret_access_key` (what boto3 signs SigV4 with).
#[test]
fn new_keys_are_printed_in_aws_form_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _data, admin, token) =
        super::common::serve_with(&dir.path().join("data"), None, &[]);
    for args in [
        vec!["tenant", "create", "acme", "-o", "json"],
        vec!["key", "create", "acme", "--name", "sdk", "-o", "json"],
    ] {
        let out = super::common::as_operator(&admin, &token, &args);
        let json = &out[out.find('{').unwrap()..=out.rfind('}').unwrap()];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let key = v["api_key"].as_str().unwrap();
        let (id, secret) = key
            .strip_prefix("fief_")
            .and_then(|rest| rest.split_once('_'))
            .unwrap();
        assert_eq!(v["aws_access_key_id"], id, "{args:?}: {out}");
        assert_eq!(v["aws_secret_access_key"], secret, "{args:?}: {out}");
    }
    server.kill().unwrap();
    server.wait().unwrap();
}
