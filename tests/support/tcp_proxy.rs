//! A TCP proxy on a free loopback port that counts the connections it accepts and can cut every
//! open one, to see how many connections a client opens and what it does when one drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards `127.0.0.1:port` to an upstream `host:port`; stopped on drop.
pub struct TcpProxy {
    /// `127.0.0.1:port` to connect to instead of the upstream.
    pub addr: String,
    accepted: Arc<AtomicUsize>,
    cut: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: &str) -> TcpProxy {
        TcpProxy::listen("127.0.0.1:0", upstream).await
    }

    /// Starts forwarding `addr` (e.g. a port a client was given before anything listened
    /// there) to `upstream`.
    pub async fn listen(addr: &str, upstream: &str) -> TcpProxy {
        let listener = TcpListener::bind(addr).await.expect("proxy bind");
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (cut, cuts) = watch::channel(0u64);
        let upstream = upstream.to_string();
        let task = {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let upstream = upstream.clone();
                    let mut cuts = cuts.clone();
                    cuts.mark_unchanged();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        // Either side closing, or a cut, ends both (dropping them closes them).
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cuts.changed() => {}
                        }
                    });
                }
            })
        };
        TcpProxy {
            addr,
            accepted,
            cut,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection open now (later ones are forwarded as usual).
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
