//! A TCP relay for tests: a round-robin front for several replicas (a load
//! balancer in a few lines, skipping a target that refuses, as a health
//! check would) that can also be cut: while cut, every open connection is
//! dropped and new ones are closed at once, as when the host behind it goes
//! away; restored, it relays again.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Relay {
    /// Relays each new connection to the next of `targets` that accepts.
    pub async fn start(targets: Vec<SocketAddr>) -> io::Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let turn = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(targets);
        let (c, o) = (cut.clone(), open.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(relay(client, targets.clone(), turn.clone()));
                let mut open = o.lock().unwrap_or_else(PoisonError::into_inner);
                open.retain(|h| !h.is_finished());
                open.push(task.abort_handle());
                // A cut between the check above and the push: `cut` drained
                // the list before this entry was in it, so end it here.
                if c.load(Ordering::SeqCst) {
                    task.abort();
                }
            }
        })
        .abort_handle();
        Ok(Relay {
            addr,
            cut,
            open,
            accept,
        })
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.drop_open();
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    fn drop_open(&self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for h in open.drain(..) {
            h.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_open();
    }
}

async fn relay(mut client: TcpStream, targets: Arc<Vec<SocketAddr>>, turn: Arc<AtomicUsize>) {
    for _ in 0..targets.len() {
        let i = turn.fetch_add(1, Ordering::Relaxed) % targets.len();
        if let Ok(mut server) = TcpStream::connect(targets[i]).await {
            let _ = server.set_nodelay(true);
            let _ = client.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            return;
        }
    }
}

/// An HTTP load balancer for tests: each request goes to the next target
/// (round robin per request, not per connection, so one client's
/// keep-alive connection still reaches every replica); a target that
/// refuses the connection is skipped, as nginx's `proxy_next_upstream
/// error` does. Bodies are relayed whole on the way in and streamed on the
/// way out.
pub struct Balancer {
    pub addr: SocketAddr,
    server: AbortHandle,
}

#[derive(Clone)]
struct Backends {
    targets: Arc<Vec<SocketAddr>>,
    turn: Arc<AtomicUsize>,
    http: reqwest::Client,
}

impl Balancer {
    pub async fn start(targets: Vec<SocketAddr>) -> io::Result<Balancer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let backends = Backends {
            targets: Arc::new(targets),
            turn: Arc::default(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(io::Error::other)?,
        };
        let app = axum::Router::new().fallback(forward).with_state(backends);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
        .abort_handle();
        Ok(Balancer { addr, server })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(
    axum::extract::State(b): axum::extract::State<Backends>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (axum::http::StatusCode::BAD_REQUEST, "body not read").into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // The client's Host goes through (nginx's `proxy_set_header Host $host`):
    // an AWS Signature V4 covers it.
    let headers = parts.headers.clone();
    for _ in 0..b.targets.len() {
        let i = b.turn.fetch_add(1, Ordering::Relaxed) % b.targets.len();
        let sent = b
            .http
            .request(
                parts.method.clone(),
                format!("http://{}{path}", b.targets[i]),
            )
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let mut out = axum::response::Response::builder().status(resp.status());
                // Hop-by-hop headers are this hop's own.
                for (k, v) in resp.headers() {
                    if !matches!(
                        k.as_str(),
                        "connection" | "transfer-encoding" | "keep-alive"
                    ) {
                        out = out.header(k, v);
                    }
                }
                return out
                    .body(axum::body::Body::from_stream(resp.bytes_stream()))
                    .unwrap_or_else(|_| axum::http::StatusCode::BAD_GATEWAY.into_response());
            }
            Err(e) if e.is_connect() => continue,
            Err(_) => break,
        }
    }
    (axum::http::StatusCode::BAD_GATEWAY, "no replica answered").into_response()
}
