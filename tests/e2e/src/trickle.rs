//! A slow peer: a TCP forwarder in front of a seller that, once switched to trickling,
//! passes the seller's answers back one byte every interval. Every per-phase timeout of the
//! caller passes (the first byte comes at once, the next within seconds); only a deadline on
//! the whole call ends it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Trickle {
    pub addr: SocketAddr,
    trickling: Arc<AtomicBool>,
}

impl Trickle {
    /// Forwards to `backend` at full speed until [`Trickle::start_trickling`].
    pub async fn start(backend: SocketAddr, every: Duration) -> Trickle {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let trickling = Arc::new(AtomicBool::new(false));
        let t = trickling.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let t = t.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let (mut in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut in_read, &mut out_write).await;
                    });
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match out_read.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if !t.load(Ordering::SeqCst) {
                            if in_write.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        for byte in &buf[..n] {
                            if in_write.write_all(&[*byte]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(every).await;
                        }
                    }
                });
            }
        });
        Trickle { addr, trickling }
    }

    pub fn start_trickling(&self) {
        self.trickling.store(true, Ordering::SeqCst);
    }
}
