//! A small, deterministic OpenAI-compatible server: the local LLM upstream
//! for fief's tests, benchmarks and `fief demo`.
//!
//! Answers are pure functions of the request (plus [`MockOptions`]), so tests
//! can assert exact texts and token counts. Failure [`Mode`]s can be switched
//! at runtime to exercise fief's error handling.

mod openai;
pub mod relay;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How many requests [`MockUpstream::requests`] remembers.
const MAX_RECORDED: usize = 10_000;
/// Request bodies above this are refused (generous: fief tests big payloads).
const BODY_LIMIT: usize = 64 << 20;

/// A running mock upstream. Dropping it stops the server as well (without
/// waiting); [`MockUpstream::stop`] waits until every connection is closed.
pub struct MockUpstream {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Upstream name, echoed in answers.
    pub name: String,
    /// Streamed content chunks per answer.
    pub chunks: usize,
    /// Delay between streamed content chunks.
    pub chunk_delay: Duration,
    /// Delay before answering (before the response head, so also before the
    /// first chunk).
    pub delay: Duration,
    /// Up to this much more, varying from request to request (a fixed
    /// spread, the same sequence every run), as real upstreams vary.
    pub delay_jitter: Duration,
    /// Serve HTTPS with this cert chain + key.
    pub tls: Option<TlsFiles>,
    /// Length of embedding vectors.
    pub embedding_dims: usize,
    /// Model ids listed by `GET /v1/models` (any id is served regardless).
    pub models: Vec<String>,
    /// Other GET paths answered with a fixed JSON body (e.g. a JWKS, so a
    /// test can serve an identity provider's keys over TLS).
    pub files: Vec<(String, String)>,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            name: "mock".to_owned(),
            chunks: 4,
            chunk_delay: Duration::ZERO,
            delay: Duration::ZERO,
            delay_jitter: Duration::ZERO,
            tls: None,
            embedding_dims: 8,
            models: Vec::new(),
            files: Vec::new(),
        }
    }
}

/// PEM files for serving HTTPS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// How POST endpoints behave; switchable at runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Normal,
    /// 500 with a deliberately leaky body (internal address and a key), so
    /// fief's sanitising can be tested.
    Fail,
    /// 429 with an OpenAI error body and `Retry-After: 1`.
    RateLimit,
    /// Never answer; the request is held open until the client goes away.
    Hang,
    /// Close the connection without a response; when streaming, after the
    /// first content chunk.
    Drop,
    /// Streaming: one content chunk, then the connection is cut.
    /// Non-streaming: like [`Mode::Fail`].
    FailAfterFirstChunk,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Fail,
            2 => Mode::RateLimit,
            3 => Mode::Hang,
            4 => Mode::Drop,
            5 => Mode::FailAfterFirstChunk,
            _ => Mode::Normal,
        }
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// E.g. `/v1/chat/completions` (no query string).
    pub path: String,
    /// The raw `Authorization` header value.
    pub authorization: Option<String>,
    /// All request headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Parsed JSON body (`Null` when empty or not JSON).
    pub body: serde_json::Value,
}

/// Kept compact: the body is parsed only when [`MockUpstream::requests`] is
/// called, so the hot path does no JSON work for the log.
struct Entry {
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

pub(crate) struct Shared {
    pub(crate) options: MockOptions,
    mode: AtomicU8,
    log: Mutex<VecDeque<Entry>>,
    in_flight: AtomicUsize,
    cancelled: AtomicUsize,
    next_id: AtomicU64,
    jitter_seq: AtomicU64,
}

impl Shared {
    fn record(&self, path: &str, headers: &HeaderMap, body: &Bytes) {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_owned(), v)
            })
            .collect();
        // A copy, so the log does not pin hyper's read buffers.
        let entry = Entry {
            path: path.to_owned(),
            headers,
            body: Bytes::copy_from_slice(body),
        };
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() >= MAX_RECORDED {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// The next request's share of `delay_jitter` (a multiplicative hash of
    /// a counter: spread evenly, reproducible).
    fn jitter(&self) -> Duration {
        let spread = self.options.delay_jitter.as_micros() as u64;
        if spread == 0 {
            return Duration::ZERO;
        }
        let n = self.jitter_seq.fetch_add(1, Ordering::Relaxed);
        Duration::from_micros(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (spread + 1))
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a request in [`MockUpstream::in_flight`] while alive; dropped when
/// the answer is done or the handler is dropped (client gone, server stop).
pub(crate) struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> InFlight {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(shared.clone())
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl MockUpstream {
    /// Starts serving on `127.0.0.1` with an ephemeral port.
    pub async fn start(options: MockOptions) -> io::Result<MockUpstream> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), options).await
    }

    /// Starts serving on `addr` (the binary's `--port`).
    pub async fn start_on(addr: SocketAddr, options: MockOptions) -> io::Result<MockUpstream> {
        let acceptor = options.tls.as_ref().map(load_tls).transpose()?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            mode: AtomicU8::new(Mode::Normal as u8),
            log: Mutex::new(VecDeque::new()),
            in_flight: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            jitter_seq: AtomicU64::new(0),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let tls = acceptor.is_some();
        let (shutdown, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, acceptor, router, stopped));
        Ok(MockUpstream {
            addr,
            tls,
            shared,
            shutdown,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, or `https://localhost:PORT/v1` with TLS
    /// (certificates name hosts, and `localhost` is the usual test SAN).
    pub fn base_url(&self) -> String {
        let port = self.addr.port();
        if self.tls {
            return format!("https://localhost:{port}/v1");
        }
        let ip = match self.addr.ip() {
            ip if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            ip => ip,
        };
        format!("http://{}/v1", SocketAddr::new(ip, port))
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::Relaxed);
    }

    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.shared.mode.load(Ordering::Relaxed))
    }

    /// Every request received so far (the last 10,000), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        let log = self
            .shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.iter()
            .map(|e| Recorded {
                path: e.path.clone(),
                authorization: e
                    .headers
                    .iter()
                    .find(|(k, _)| k == "authorization")
                    .map(|(_, v)| v.clone()),
                headers: e.headers.clone(),
                body: serde_json::from_slice(&e.body).unwrap_or(serde_json::Value::Null),
            })
            .collect()
    }

    pub fn clear(&self) {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Requests currently being answered, including hung ones.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Streaming responses whose client went away before the end.
    pub fn cancelled(&self) -> usize {
        self.shared.cancelled.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection (hung ones too) and waits.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }
}

fn load_tls(files: &TlsFiles) -> io::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} {}: {e}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(&files.cert_pem)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("certificate", &files.cert_pem, &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key_pem)
        .map_err(|e| bad("private key", &files.key_pem, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| bad("TLS config for", &files.cert_pem, &e))?;
    // Only HTTP/1.1 is served.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    mut stop: oneshot::Receiver<()>,
) {
    // Connections live in the set so that stopping aborts them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    // Streaming chunks must not wait for Nagle.
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(serve_conn(tcp, tls.clone(), router.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("mock upstream accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn serve_conn(tcp: TcpStream, tls: Option<TlsAcceptor>, router: Router) {
    let service = TowerToHyperService::new(router);
    let http = hyper::server::conn::http1::Builder::new();
    let served = match tls {
        None => http.serve_connection(TokioIo::new(tcp), service).await,
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(tls) => http.serve_connection(TokioIo::new(tls), service).await,
            Err(e) => {
                tracing::debug!("mock upstream TLS handshake failed: {e}");
                return;
            }
        },
    };
    if let Err(e) = served {
        tracing::debug!("mock upstream connection ended: {e}");
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return openai::error(
            413,
            "invalid_request_error",
            "request body too large or broken",
        );
    };
    let path = parts.uri.path();
    shared.record(path, &parts.headers, &body);
    let endpoint = match (&parts.method, path) {
        (&Method::GET, "/v1/models") => return openai::models(&shared.options),
        (&Method::GET, p) if shared.options.files.iter().any(|(f, _)| f == p) => {
            let body = shared
                .options
                .files
                .iter()
                .find(|(f, _)| f == p)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            return (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
        (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
        (&Method::POST, "/v1/completions") => Endpoint::Completions,
        (&Method::POST, "/v1/embeddings") => Endpoint::Embeddings,
        (method, path) => {
            let msg = format!("Unknown request URL: {method} {path}");
            return openai::error(404, "invalid_request_error", &msg);
        }
    };
    let guard = InFlight::enter(&shared);
    let mode = Mode::from_u8(shared.mode.load(Ordering::Relaxed));
    if mode == Mode::Hang {
        // The guard stays alive until hyper drops this future.
        return std::future::pending().await;
    }
    if !shared.options.delay.is_zero() || !shared.options.delay_jitter.is_zero() {
        tokio::time::sleep(shared.options.delay + shared.jitter()).await;
    }
    match mode {
        Mode::Fail => return openai::fail(),
        Mode::RateLimit => return openai::rate_limited(),
        _ => {}
    }
    let options = &shared.options;
    let generation = match endpoint {
        Endpoint::Chat => openai::chat(&options.name, &body),
        Endpoint::Completions => openai::completion(&options.name, &body),
        Endpoint::Embeddings => {
            return match (mode, openai::embeddings(options.embedding_dims, &body)) {
                (Mode::Drop, _) => cut(),
                (Mode::FailAfterFirstChunk, _) => openai::fail(),
                (_, answer) => answer,
            };
        }
    };
    match (mode, generation) {
        (Mode::Drop, Ok(g)) if g.stream => openai::stream(g, guard, true),
        (Mode::FailAfterFirstChunk, Ok(g)) if g.stream => openai::stream(g, guard, true),
        (Mode::Drop, _) => cut(),
        (Mode::FailAfterFirstChunk, _) => openai::fail(),
        (_, Ok(g)) if g.stream => openai::stream(g, guard, false),
        (_, Ok(g)) => g.to_json(&shared),
        (_, Err(message)) => openai::bad_request(&message),
    }
}

/// A response whose body fails at once: hyper then drops the connection
/// before the buffered head is flushed, so the client sees no response.
fn cut() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, _>(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "mock: connection dropped",
        ))
    });
    Response::new(Body::from_stream(failing))
}
