//! A webhook receiver on 127.0.0.1 for the fan-out tests: a tiny HTTP/1.1 server (keep-alive aware) that
//! answers each request as its responder says, after an optional delay, and keeps what it got.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// The status and extra headers for the n-th request (from 1).
pub type Responder = Arc<dyn Fn(usize) -> (u16, Vec<(String, String)>) + Send + Sync>;

pub struct Hook {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Hook {
    /// Answers every request with `status` after `delay`.
    pub async fn start(status: u16, delay: Duration) -> Hook {
        Hook::serve(Arc::new(move |_| (status, vec![])), delay).await
    }

    /// Answers 200 at once.
    pub async fn ok() -> Hook {
        Hook::start(200, Duration::ZERO).await
    }

    /// Answers as `respond` says, at once.
    pub async fn responding(respond: Responder) -> Hook {
        Hook::serve(respond, Duration::ZERO).await
    }

    async fn serve(respond: Responder, delay: Duration) -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sink, respond) = (sink.clone(), respond.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let mut headers = HashMap::new();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                        let mut body = vec![0u8; len];
                        if reader.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(delay).await;
                        let n = {
                            let mut g = sink.lock().unwrap();
                            g.push(Received { path, headers, body: String::from_utf8_lossy(&body).into_owned() });
                            g.len()
                        };
                        let (status, extra) = respond(n);
                        let mut resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n");
                        for (k, v) in extra {
                            resp.push_str(&format!("{k}: {v}\r\n"));
                        }
                        resp.push_str("\r\n");
                        if write.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Hook { port, got }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn bodies(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.body).collect()
    }

    /// Waits up to `limit` for `n` requests; returns the bodies got by then.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<String> {
        let until = std::time::Instant::now() + limit;
        while self.received().len() < n && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.bodies()
    }
}
