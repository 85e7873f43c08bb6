//! A `wrk -t1`-like load generator: one thread, C keep-alive connections,
//! raw HTTP/1.1 (no client library in the way). Answers with a
//! Content-Length or chunked (a stream); for a stream it also times the
//! first bytes of generated text.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{stats, Stats};

/// One request, as bytes on the wire.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Where generated text starts in an SSE chunk (a non-empty `content`).
fn has_text(bytes: &[u8]) -> bool {
    bytes
        .windows(12)
        .any(|w| w.starts_with(b"\"content\":\"") && w[11] != b'"')
}

async fn more(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16384];
    let n = conn.read(&mut chunk).await.unwrap();
    assert!(n > 0, "the server closed the connection");
    buf.extend_from_slice(&chunk[..n]);
    n
}

/// Reads one response: its status, and for a chunked one the time from
/// `t0` to the first generated text.
pub async fn response(
    conn: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    t0: Instant,
) -> (u16, Option<Duration>) {
    buf.clear();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        more(conn, buf).await;
    };
    let head = std::str::from_utf8(&buf[..end])
        .unwrap()
        .to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let mut at = end + 4;
    if head.contains("transfer-encoding: chunked") {
        let mut first = None;
        loop {
            let line_end = loop {
                if let Some(p) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + p;
                }
                more(conn, buf).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[at..line_end]).unwrap().trim(), 16)
                    .unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                more(conn, buf).await;
            }
            let data = &buf[line_end + 2..line_end + 2 + size];
            if first.is_none() && has_text(data) {
                first = Some(t0.elapsed());
            }
            at = line_end + 2 + size + 2;
            if size == 0 {
                return (status, first);
            }
        }
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < at + length {
        more(conn, buf).await;
    }
    (status, None)
}

/// `connections` keep-alive connections sending `req` for `seconds` from
/// one thread: latency of every answer (each must be 200), and the time to
/// first text of the streamed ones.
pub fn load(
    addr: SocketAddr,
    req: &[u8],
    connections: usize,
    seconds: f64,
) -> (Stats, Option<Stats>) {
    let req = Arc::new(req.to_vec());
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let stop = Arc::new(AtomicBool::new(false));
                let started = Instant::now();
                let tasks: Vec<_> = (0..connections)
                    .map(|_| {
                        let (req, stop) = (req.clone(), stop.clone());
                        tokio::spawn(async move {
                            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
                            conn.set_nodelay(true).unwrap();
                            let mut buf = Vec::with_capacity(16 * 1024);
                            let (mut lat, mut ttft) = (Vec::new(), Vec::new());
                            while !stop.load(Ordering::Relaxed) {
                                let t0 = Instant::now();
                                conn.write_all(&req).await.unwrap();
                                let (status, first) = response(&mut conn, &mut buf, t0).await;
                                lat.push(t0.elapsed());
                                ttft.extend(first);
                                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&buf));
                            }
                            (lat, ttft)
                        })
                    })
                    .collect();
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                stop.store(true, Ordering::Relaxed);
                let (mut lat, mut ttft) = (Vec::new(), Vec::new());
                for t in tasks {
                    let (l, f) = t.await.unwrap();
                    lat.extend(l);
                    ttft.extend(f);
                }
                let wall = started.elapsed();
                let first = (!ttft.is_empty()).then(|| stats(ttft, wall));
                (stats(lat, wall), first)
            })
        })
        .join()
        .unwrap()
    })
}
