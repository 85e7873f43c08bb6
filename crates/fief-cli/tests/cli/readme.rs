//! The README test: every `sh`/`bash` block of README.md and of the
//! Markdown files under examples/ runs, in order, as one sequence in a
//! temporary directory standing in for a fresh checkout (examples/ and
//! scripts/ linked in; the `fief` this build made first on PATH), and the
//! output of a block followed by a `text` block must show that text. So
//! the front door cannot drift from the code.
//!
//! A block can be marked by an HTML comment on the line above it:
//! - `<!-- readme-test: server -->`: the gateway; started in the background
//!   (a trailing `&` is dropped) and waited for, stopped at the end;
//! - `<!-- readme-test: fails -->`: an error shown on purpose; it must exit
//!   non-zero (its variables are not kept);
//! - `<!-- readme-test: skip REASON -->`: not run, for the reason given
//!   (CI runs it itself, or it takes minutes to hours); every skip is
//!   listed in the test's output.
//!
//! Blocks share variables and the working directory (each saves them for
//! the next). The gateway runs on two free ports: `127.0.0.1:8080` and
//! `:8081` in the README are replaced by them, and FIEF_LISTEN,
//! FIEF_ADMIN_LISTEN, FIEF_DATA_URL and FIEF_ADMIN_URL are set to them, as
//! the README says to do for other ports. FIEF_OUTPUT=table shows what a
//! terminal shows. FIEF_CONFIG names a file with one upstream, the in-repo
//! mock, serving `chat-small`, so the foundation-model blocks answer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Run,
    Server,
    Fails,
    Skip(String),
}

#[derive(Debug, Clone)]
struct Block {
    file: String,
    /// The line of the opening fence.
    line: usize,
    code: String,
    mode: Mode,
    /// The `text` block right after it, if any.
    expect: Option<String>,
}

/// The shell blocks of one Markdown file.
fn blocks(file: &str, markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out: Vec<Block> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let lang = info.split_whitespace().next().unwrap_or("").to_owned();
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            body.push(lines[i]);
            i += 1;
        }
        i += 1;
        let text = body.join("\n");
        if lang == "text" {
            // The output of the shell block just before it (only blank
            // lines between).
            if let Some(last) = out.last_mut() {
                let between = &lines[last_end(&lines, last.line)..start];
                if last.expect.is_none() && between.iter().all(|l| l.trim().is_empty()) {
                    last.expect = Some(text);
                }
            }
            continue;
        }
        if lang != "sh" && lang != "bash" {
            continue;
        }
        let marker = start
            .checked_sub(1)
            .and_then(|m| lines[m].trim().strip_prefix("<!-- readme-test:"))
            .and_then(|m| m.strip_suffix("-->"))
            .map(str::trim);
        let mode = match marker {
            None => Mode::Run,
            Some("server") => Mode::Server,
            Some("fails") => Mode::Fails,
            Some(m) => match m.strip_prefix("skip") {
                Some(reason) if !reason.trim().is_empty() => Mode::Skip(reason.trim().to_owned()),
                _ => panic!(
                    "{file}:{start}: readme-test marker `{m}` (server, fails or skip REASON)"
                ),
            },
        };
        out.push(Block {
            file: file.to_owned(),
            line: start + 1,
            code: text,
            mode,
            expect: None,
        });
    }
    out
}

/// The line after a block's closing fence (its opening fence at `line`, 1-based).
fn last_end(lines: &[&str], line: usize) -> usize {
    let mut j = line;
    while j < lines.len() && !lines[j].trim_start().starts_with("```") {
        j += 1;
    }
    j + 1
}

/// Every expected line appears in the output, in order; `...` in a line
/// stands for any text.
fn shows(output: &str, expect: &str) -> Result<(), String> {
    let mut lines = output.lines();
    for want in expect
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
    {
        let parts: Vec<&str> = want.split("...").collect();
        let matches = |got: &str| {
            let got = got.trim_end();
            let mut rest = got;
            for (n, part) in parts.iter().enumerate() {
                match rest.find(part) {
                    Some(at) if n > 0 || at == 0 || part.is_empty() => {
                        rest = &rest[at + part.len()..]
                    }
                    _ => return false,
                }
            }
            parts.last().is_some_and(|p| p.is_empty()) || rest.is_empty()
        };
        if !lines.by_ref().any(matches) {
            return Err(format!("no line (in order) shows: {want}"));
        }
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Run {
    dir: tempfile::TempDir,
    state: PathBuf,
    data_port: u16,
    admin_port: u16,
    env: Vec<(String, String)>,
    server: Option<Child>,
    skipped: Vec<String>,
    ran: usize,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            // The whole group: bash and the fief it started.
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", s.id())])
                .status();
            let _ = s.wait();
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Run {
    fn new(upstream: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".readme-test");
        std::fs::create_dir(&state).unwrap();
        let work = dir.path().join("checkout");
        std::fs::create_dir(&work).unwrap();
        for linked in ["examples", "scripts"] {
            std::os::unix::fs::symlink(repo().join(linked), work.join(linked)).unwrap();
        }
        std::fs::write(state.join("cwd"), work.to_str().unwrap()).unwrap();
        std::fs::write(state.join("env.sh"), "").unwrap();
        let config = state.join("upstream.toml");
        std::fs::write(
            &config,
            format!(
                "[[llm.upstreams]]\nname = \"local\"\nurl = \"{upstream}\"\n\
                 models = [{{ id = \"mock-small\", alias = \"chat-small\", tags = {{ Size = \"small\" }} }}]\n"
            ),
        )
        .unwrap();
        let (data_port, admin_port) = (free_port(), free_port());
        let bin = Path::new(env!("CARGO_BIN_EXE_fief"))
            .parent()
            .unwrap()
            .to_owned();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env = vec![
            ("PATH".to_owned(), path),
            ("FIEF_LISTEN".into(), format!("127.0.0.1:{data_port}")),
            (
                "FIEF_ADMIN_LISTEN".into(),
                format!("127.0.0.1:{admin_port}"),
            ),
            (
                "FIEF_DATA_URL".into(),
                format!("http://127.0.0.1:{data_port}"),
            ),
            (
                "FIEF_ADMIN_URL".into(),
                format!("http://127.0.0.1:{admin_port}"),
            ),
            ("FIEF_OUTPUT".into(), "table".into()),
            ("FIEF_CONFIG".into(), config.to_str().unwrap().to_owned()),
            ("FIEF_LOG".into(), "warn".into()),
        ];
        // The embedder where the gateway looks for it (the test scripts install it there).
        if let Ok(d) = std::env::var("FIEF_EMBEDDER_DIR") {
            env.push(("FIEF_EMBEDDER_DIR".into(), d));
        }
        Self {
            dir,
            state,
            data_port,
            admin_port,
            env,
            server: None,
            skipped: Vec::new(),
            ran: 0,
        }
    }

    fn ports(&self, s: &str) -> String {
        s.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.data_port))
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", self.admin_port))
    }

    fn shell(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg("-c").arg(script).env_clear();
        for k in ["HOME", "USER", "LANG", "TMPDIR", "XDG_DATA_HOME"] {
            if let Ok(v) = std::env::var(k) {
                c.env(k, v);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.current_dir(self.dir.path());
        c
    }

    /// A block's script: the saved variables and directory, the code, then
    /// the variables and directory saved again for the next.
    fn script(&self, code: &str, save: bool) -> String {
        let state = self.state.display();
        let mut s = format!(
            "set -euo pipefail\nset -a\nexec 2>&1\nsource {state}/env.sh\ncd \"$(cat {state}/cwd)\"\n{code}\n"
        );
        if save {
            s.push_str(&format!(
                "pwd > {state}/cwd\nexport -p | grep -v -e ' PWD=' -e ' OLDPWD=' -e ' SHLVL=' > {state}/env.sh\n"
            ));
        }
        s
    }

    fn block(&mut self, b: &Block) -> Result<(), String> {
        let code = self.ports(&b.code);
        let at = format!("{}:{}", b.file, b.line);
        match &b.mode {
            Mode::Skip(reason) => {
                self.skipped.push(format!("{at}: {reason}"));
                return Ok(());
            }
            Mode::Server => {
                let code = code.trim_end().trim_end_matches('&').to_owned();
                let mut c = self.shell(&self.script(&format!("exec {code}"), false));
                // Its own process group, so the end of the test stops it all.
                std::os::unix::process::CommandExt::process_group(&mut c, 0);
                let log = std::fs::File::create(self.state.join("server.log")).unwrap();
                c.stdout(Stdio::from(log.try_clone().unwrap()))
                    .stderr(Stdio::from(log));
                self.server = Some(c.spawn().map_err(|e| format!("{at}: {e}"))?);
                let health = format!("http://127.0.0.1:{}/healthz", self.admin_port);
                let started = Instant::now();
                while std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_err() {
                    if started.elapsed() > Duration::from_secs(60) {
                        let log = std::fs::read_to_string(self.state.join("server.log"))
                            .unwrap_or_default();
                        return Err(format!(
                            "{at}: the gateway did not start ({health}):\n{log}"
                        ));
                    }
                    if let Some(Ok(Some(status))) = self.server.as_mut().map(Child::try_wait) {
                        let log = std::fs::read_to_string(self.state.join("server.log"))
                            .unwrap_or_default();
                        return Err(format!("{at}: the gateway exited ({status}):\n{log}"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                self.ran += 1;
                return Ok(());
            }
            Mode::Run | Mode::Fails => {}
        }
        let fails = b.mode == Mode::Fails;
        let out = self
            .shell(&self.script(&code, !fails))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{at}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        self.ran += 1;
        if out.status.success() == fails {
            return Err(format!(
                "{at}: the block {} ({}):\n{code}\n--- its output:\n{text}",
                if fails {
                    "should fail but succeeded"
                } else {
                    "failed"
                },
                out.status
            ));
        }
        if let Some(expect) = &b.expect {
            shows(&text, &self.ports(expect))
                .map_err(|e| format!("{at}: {e}\n{code}\n--- its output:\n{text}"))?;
        }
        Ok(())
    }
}

/// The blocks of README.md, then of every Markdown file under examples/.
fn documented(readme: &str) -> Vec<Block> {
    let mut all = blocks("README.md", readme);
    let mut extra: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    extra.sort();
    for p in extra {
        let name = format!("examples/{}", p.file_name().unwrap().to_string_lossy());
        all.extend(blocks(&name, &std::fs::read_to_string(&p).unwrap()));
    }
    all
}

/// Runs `blocks` in order; the first failure ends the run.
async fn run(blocks: Vec<Block>) -> Result<Run, String> {
    let upstream = fief_llm_mock::MockUpstream::start(fief_llm_mock::MockOptions::default())
        .await
        .unwrap();
    let url = upstream.base_url();
    tokio::task::spawn_blocking(move || {
        let _keep = upstream;
        let mut run = Run::new(&url);
        for b in &blocks {
            run.block(b)?;
        }
        Ok(run)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_readme_command_runs_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let all = documented(&readme);
    assert!(
        all.iter().filter(|b| b.mode == Mode::Run).count() > 15,
        "{all:?}"
    );
    match run(all).await {
        Ok(run) => {
            eprintln!("README test: {} blocks ran; skipped:", run.ran);
            for s in &run.skipped {
                eprintln!("  {s}");
            }
        }
        Err(e) => panic!("{e}"),
    }
}

/// The test of the test: a documented command broken, or a shown output
/// that is no longer printed, fails it (at that block, so this is quick).
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_command_or_output_fails_the_readme_test() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let broken = readme.replacen("fief model sample ", "fief model sampel ", 1);
    assert_ne!(
        broken, readme,
        "the README no longer runs `fief model sample`"
    );
    let upto = |text: &str, needle: &str| {
        let all = documented(text);
        let n = all.iter().position(|b| b.code.contains(needle)).unwrap() + 1;
        all.into_iter().take(n).collect::<Vec<_>>()
    };
    let e = run(upto(&broken, "fief model sampel")).await.err().unwrap();
    assert!(e.contains("failed") && e.contains("sampel"), "{e}");

    let shown = "tenant     hr";
    assert!(
        readme.contains(shown),
        "the README no longer shows `{shown}`"
    );
    let changed = readme.replacen(shown, "tenant     sales", 1);
    let e = run(upto(&changed, "fief whoami")).await.err().unwrap();
    assert!(
        e.contains("no line (in order) shows: tenant     sales"),
        "{e}"
    );
}

#[test]
fn blocks_markers_and_outputs_are_read() {
    let md = "x\n<!-- readme-test: skip slow -->\n```sh\nslow\n```\n\n```sh\necho hi\n```\n\n```text\nhi\n```\n<!-- readme-test: fails -->\n```bash\nfalse\n```\n```toml\na = 1\n```\n";
    let b = blocks("t.md", md);
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].mode, Mode::Skip("slow".into()));
    assert_eq!(b[1].expect.as_deref(), Some("hi"));
    assert_eq!((b[1].line, b[2].mode.clone()), (7, Mode::Fails));
    assert!(shows("a\nkey: value 12\nz", "key: ... 12").is_ok());
    assert!(shows("a\nb", "b\na").is_err());
    assert!(shows("tenant     hr", "tenant     sales").is_err());
}
