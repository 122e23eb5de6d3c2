//! A TCP proxy on 127.0.0.1 in front of DynamoDB Local that can freeze (stop forwarding bytes, as a
//! SIGSTOPped server looks from outside: connections accepted, nothing answered) or reset (close every
//! connection and close new ones at once), and go back to passing traffic.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    Freeze = 1,
    Reset = 2,
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
}

fn mode_of(cell: &AtomicU8) -> Mode {
    match cell.load(Ordering::SeqCst) {
        1 => Mode::Freeze,
        2 => Mode::Reset,
        _ => Mode::Pass,
    }
}

impl Proxy {
    /// Forwards to `upstream` (`host:port`) until the test ends.
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let cell = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if mode_of(&cell) == Mode::Reset {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, cell.clone()));
                tokio::spawn(pump(sr, cw, cell.clone()));
            }
        });
        Proxy { port, mode }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

/// Waits while frozen; `false` on reset.
async fn passing(cell: &AtomicU8) -> bool {
    loop {
        match mode_of(cell) {
            Mode::Reset => return false,
            Mode::Freeze => tokio::time::sleep(Duration::from_millis(20)).await,
            Mode::Pass => return true,
        }
    }
}

/// Copies one direction while passing; holds the bytes while frozen; drops the connection on reset.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, cell: Arc<AtomicU8>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !passing(&cell).await {
            return;
        }
        // Bounded reads, so a change of mode is seen while the connection is idle (read is cancel-safe).
        let n = match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        // Bytes read just as the mode changed wait for it too.
        if !passing(&cell).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
