//! A loopback TCP proxy that can cut the line on command: the example's
//! Redis outage, since the shared Redis server itself must keep running.
//!
//! While it is [down](Proxy::set_down), every connection through it is
//! dropped and new ones are closed as soon as they are accepted, which is
//! what a client sees when its server dies and restarts.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::cache::ProductCache;
use crate::local_services;

/// The proxy's listener and the connections it forwards.
pub struct Proxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accepting: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    down: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accepting = tokio::spawn(accept(listener, upstream, Arc::clone(&shared)));
        Ok(Proxy {
            address,
            shared,
            accepting,
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `true`: drop every connection and refuse new ones; `false`: forward again.
    pub fn set_down(&self, down: bool) {
        // Under the lock, so that no connection accepted meanwhile survives.
        let mut connections = self.shared.connections.lock().unwrap();
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            connections
                .drain(..)
                .for_each(|connection| connection.abort());
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.set_down(true);
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut connections = shared.connections.lock().unwrap();
        if shared.down.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        connections.retain(|connection| !connection.is_finished());
        connections.push(tokio::spawn(forward(client, upstream)));
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// Connects to Redis through a new [`Proxy`], so that the caller can cut
/// the connection. Errors name the server.
pub async fn cache_through_proxy(
    prefix: &str,
    ttl: Duration,
) -> Result<(ProductCache, Proxy), Box<dyn Error>> {
    let url = local_services::redis_url();
    let mut server = url.as_str().into_connection_info()?;
    let ConnectionAddr::Tcp(host, port) = &server.addr else {
        return Err(format!("{url}: the example needs a plain TCP Redis URL").into());
    };
    let upstream = tokio::net::lookup_host((host.as_str(), *port))
        .await?
        .next()
        .ok_or_else(|| format!("{url}: no address for {host}"))?;
    // The proxy would accept and then drop the client: say what is wrong.
    let unreachable = |error: String| {
        format!(
            "cannot connect to Redis at {url}: {error} \
             (start the local servers with `bash .ci/services`, or set DUALWRITE_REDIS_URL)"
        )
    };
    let probe = TcpStream::connect(upstream).await;
    drop(probe.map_err(|error| unreachable(error.to_string()))?);
    let proxy = Proxy::start(upstream).await?;
    server.addr = ConnectionAddr::Tcp("127.0.0.1".into(), proxy.address().port());
    let cache = ProductCache::connect(server, prefix, ttl).await;
    let cache = cache.map_err(|error| unreachable(error.to_string()))?;
    Ok((cache, proxy))
}
