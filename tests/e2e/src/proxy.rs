//! A TCP forwarder standing in for a reverse proxy or load balancer: sellers reach the
//! orchestrator at the proxy's address, which is the configured `public_base_url`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<OnceLock<SocketAddr>>,
}

impl Proxy {
    /// Listens now; forwards once [`Proxy::forward_to`] names the backend.
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let target: Arc<OnceLock<SocketAddr>> = Arc::default();
        let t = target.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let Some(backend) = t.get().copied() else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, target }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn forward_to(&self, backend: SocketAddr) {
        let _ = self.target.set(backend);
    }
}
