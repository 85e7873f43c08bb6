//! `fief kb` against `fief serve` as the README starts it: bulk ingestion of
//! a folder (progress on stderr, a summary on stdout), queries, deletion.
//! Needs the embedder (`bash scripts/setup-embedder.sh`); skips without it,
//! except under `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fief;

fn installed() -> bool {
    let dir = fief_embed::default_dir().unwrap();
    let ok = dir.join("model.onnx").is_file();
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "embedder not installed"
        );
        eprintln!("SKIP: embedder not installed; run `bash scripts/setup-embedder.sh`");
    }
    ok
}

#[test]
fn kb_ingests_a_folder_and_answers_queries() {
    if !installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut server, data, admin, token) = common::serve(&dir.path().join("data"));
    let run = |args: &[&str], key: Option<&str>| {
        let mut c = fief();
        c.args(args)
            .env("FIEF_DATA_URL", &data)
            .env("FIEF_ADMIN_URL", &admin)
            .env("FIEF_ADMIN_TOKEN", &token);
        if let Some(k) = key {
            c.env("FIEF_API_KEY", k);
        }
        if let Ok(d) = std::env::var("FIEF_EMBEDDER_DIR") {
            c.env("FIEF_EMBEDDER_DIR", d);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["tenant", "create", "acme", "--tier", "pool"], None);
    assert!(ok, "{out}{err}");
    let key = out
        .split(|c: char| c == '"' || c.is_whitespace())
        .find(|w| w.starts_with("fief_"))
        .unwrap()
        .to_owned();

    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("garden")).unwrap();
    std::fs::write(
        docs.join("bread.md"),
        "Sourdough bread needs an active starter and a long, cool rise.",
    )
    .unwrap();
    std::fs::write(
        docs.join("garden/tomatoes.txt"),
        "Water tomato plants deeply twice a week and stake the vines.",
    )
    .unwrap();
    std::fs::write(
        docs.join("garden/roses.md"),
        "Prune roses in late winter, just above an outward-facing bud.",
    )
    .unwrap();
    std::fs::write(docs.join("ignored.png"), "not text").unwrap();

    let (ok, out, err) = run(&["kb", "create", "notes"], Some(&key));
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(
        &[
            "kb",
            "ingest",
            "notes",
            docs.to_str().unwrap(),
            "--meta",
            "team=ops",
        ],
        Some(&key),
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("ingested 3 of 3 files into notes: 3 chunks"),
        "{out}"
    );
    assert!(err.contains("[3/3]"), "progress: {err}");

    let (ok, out, err) = run(
        &[
            "kb",
            "query",
            "notes",
            "how often do I water tomatoes",
            "--top-k",
            "1",
        ],
        Some(&key),
    );
    assert!(ok, "{out}{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        answer["results"][0]["document_id"], "garden/tomatoes.txt",
        "{out}"
    );
    assert_eq!(answer["results"][0]["metadata"]["team"], "ops", "{out}");
    assert_eq!(
        answer["results"][0]["metadata"]["path"], "garden/tomatoes.txt",
        "{out}"
    );

    let (ok, out, err) = run(
        &["kb", "rm-doc", "notes", "garden/tomatoes.txt"],
        Some(&key),
    );
    assert!(ok, "{out}{err}");
    let (ok, out, _) = run(&["kb", "docs", "notes"], Some(&key));
    assert!(
        ok && !out.contains("tomatoes") && out.contains("garden/roses.md"),
        "{out}"
    );

    // A filter naming a tenant is refused with the reason.
    let (ok, _, err) = run(
        &["kb", "query", "notes", "bread", "--filter", "tenant=globex"],
        Some(&key),
    );
    assert!(!ok && err.contains("names a tenant"), "{err}");
    server.kill().unwrap();
    server.wait().unwrap();
}
