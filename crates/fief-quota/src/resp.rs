//! The smallest Redis client admission needs: RESP2 commands over a few
//! TCP connections, each call bounded by a timeout. A connection that
//! fails is dropped and made again on the next call, so service resumes by
//! itself once Redis is back (no back-off to wait out).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::{QuotaError, Result};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    Error(String),
    Array(Vec<Reply>),
}

impl Reply {
    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            Reply::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

struct Conn {
    stream: BufReader<TcpStream>,
}

/// Replies nested deeper than this, or bulk strings longer, are refused.
const MAX_DEPTH: usize = 4;
const MAX_BULK: usize = 1 << 20;

impl Conn {
    async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).await?;
        self.read(0).await
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        let n = self.stream.read_until(b'\n', &mut line).await?;
        if n == 0 || !line.ends_with(b"\r\n") {
            return Err(broken("connection closed mid-reply"));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| broken("reply is not UTF-8"))
    }

    fn read(
        &mut self,
        depth: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Reply>> + Send + '_>>
    {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(broken("reply nested too deep"));
            }
            let line = self.line().await?;
            let (kind, rest) = line.split_at(line.len().min(1));
            let number = || rest.parse::<i64>().map_err(|_| broken("bad length"));
            Ok(match kind {
                "+" => Reply::Status(rest.to_owned()),
                "-" => Reply::Error(rest.to_owned()),
                ":" => Reply::Int(number()?),
                "$" => {
                    let n = number()?;
                    if n < 0 {
                        return Ok(Reply::Nil);
                    }
                    let n = n as usize;
                    if n > MAX_BULK {
                        return Err(broken("bulk reply too large"));
                    }
                    let mut buf = vec![0; n + 2];
                    self.stream.read_exact(&mut buf).await?;
                    buf.truncate(n);
                    Reply::Bulk(buf)
                }
                "*" => {
                    let n = number()?;
                    if n < 0 {
                        return Ok(Reply::Nil);
                    }
                    let mut items = Vec::with_capacity((n as usize).min(1024));
                    for _ in 0..n {
                        items.push(self.read(depth + 1).await?);
                    }
                    Reply::Array(items)
                }
                _ => return Err(broken("unknown reply type")),
            })
        })
    }
}

fn broken(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

pub(crate) struct Client {
    addr: String,
    db: u32,
    timeout: Duration,
    conns: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    trips: AtomicU64,
}

impl Client {
    /// `redis://host:port[/db]`.
    pub(crate) fn new(url: &str, connections: usize, timeout: Duration) -> Result<Self> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| QuotaError::Setup("redis.url must start with redis://".into()))?;
        let (addr, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, d)) => (
                a,
                d.parse()
                    .map_err(|_| QuotaError::Setup(format!("redis.url: bad database {d:?}")))?,
            ),
            None => (rest, 0),
        };
        if addr.contains('@') {
            return Err(QuotaError::Setup(
                "redis.url: passwords are not supported yet".into(),
            ));
        }
        let addr = if addr.contains(':') {
            addr.to_owned()
        } else {
            format!("{addr}:6379")
        };
        Ok(Self {
            addr,
            db,
            timeout,
            conns: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            trips: AtomicU64::new(0),
        })
    }

    pub(crate) fn round_trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let mut conn = Conn {
            stream: BufReader::new(tcp),
        };
        if self.db != 0 {
            let db = self.db.to_string();
            if let Reply::Error(e) = conn.call(&[b"SELECT", db.as_bytes()]).await? {
                return Err(broken(&e));
            }
        }
        Ok(conn)
    }

    /// One command; an `Err` is Redis unreachable (an error reply is a
    /// `Reply::Error`, for the caller to judge).
    pub(crate) async fn call(&self, args: &[&[u8]]) -> Result<Reply> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut slot = self.conns[i].lock().await;
        let work = async {
            if slot.is_none() {
                *slot = Some(self.connect().await?);
            }
            match slot.as_mut() {
                Some(c) => c.call(args).await,
                None => Err(broken("no connection")),
            }
        };
        let result = tokio::time::timeout(self.timeout, work).await;
        self.trips.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                *slot = None;
                Err(QuotaError::Unreachable(format!(
                    "redis at {}: {e}",
                    self.addr
                )))
            }
            Err(_) => {
                // A reply may still arrive on this connection: it is dropped.
                *slot = None;
                Err(QuotaError::Unreachable(format!(
                    "redis at {} did not answer within {} ms",
                    self.addr,
                    self.timeout.as_millis()
                )))
            }
        }
    }
}
