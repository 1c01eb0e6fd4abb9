//! A loopback TCP proxy that fails on command (feature `testing`).
//!
//! Put it between a service and one of its servers (the follower database,
//! the queue's database, a broker) and the test can take that server away
//! and bring it back without touching the server itself, which other tests
//! share:
//!
//! - [`FaultProxy::refuse`]: new connections are refused (the port is
//!   closed) and open ones are cut: the server is down.
//! - [`FaultProxy::cut`]: open connections are cut once; new ones pass.
//!   A server restart, or a network blip.
//! - [`FaultProxy::stall`]: connections stay open but no byte moves in
//!   either direction until the next mode: a hung server. Clients see
//!   their own timeouts.
//! - [`FaultProxy::slow`]: every chunk waits before it is forwarded: a slow
//!   network or an overloaded server.
//! - [`FaultProxy::jitter`]: every chunk waits a random time up to a bound,
//!   so that requests sent one after the other can arrive in either order.
//! - [`FaultProxy::heal`]: everything passes again.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use dualwrite_runtime::fault_proxy::FaultProxy;
//! let proxy = FaultProxy::start("127.0.0.1:3306".parse().unwrap()).await?;
//! let url = format!("mysql://root@{}/test", proxy.addr());
//! // ... connect the follower's pool to `url`, write ...
//! proxy.refuse().await;   // the follower is down
//! proxy.heal().await?;    // and back
//! # Ok(()) }
//! ```
//!
//! The proxy runs on the tokio runtime that started it. Dropping it closes
//! the port and cuts every connection.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with the bytes of open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Bytes pass as they come.
    Pass,
    /// Every chunk waits this long before it is forwarded.
    Slow(Duration),
    /// Every chunk waits a random time up to this long.
    Jitter(Duration),
    /// No byte moves until the mode changes; connections stay open.
    Stall,
    /// The port is closed and every connection is cut.
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct Control {
    mode: ProxyMode,
    /// Raised to cut every connection opened before.
    generation: u64,
    /// The proxy was dropped: everything stops.
    closed: bool,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    cut: AtomicU64,
}

/// A TCP proxy on a loopback port in front of one upstream server, failing
/// on command. See the [module docs](self).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    counters: Arc<Counters>,
    listener: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let (control, _) = watch::channel(Control {
            mode: ProxyMode::Pass,
            generation: 0,
            closed: false,
        });
        let proxy = FaultProxy {
            addr,
            upstream,
            control,
            counters: Arc::default(),
            listener: std::sync::Mutex::new(None),
        };
        proxy.listen(listener);
        Ok(proxy)
    }

    /// Starts a proxy to the server at `host:port` (resolved once).
    pub async fn start_to(upstream: &str) -> io::Result<FaultProxy> {
        let addr = tokio::net::lookup_host(upstream)
            .await?
            .next()
            .ok_or_else(|| io::Error::other(format!("{upstream} resolves to no address")))?;
        FaultProxy::start(addr).await
    }

    /// The proxy's own address: point the client here.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.control.borrow().mode
    }

    /// How many connections the proxy accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// How many connections the proxy cut so far.
    pub fn cut_connections(&self) -> u64 {
        self.counters.cut.load(Ordering::Relaxed)
    }

    /// Closes the port (connecting clients are refused) and cuts every open
    /// connection, until [`heal`](Self::heal).
    pub async fn refuse(&self) {
        let handle = self.listener.lock().expect("listener slot").take();
        if let Some(handle) = handle {
            handle.abort();
            // Wait until the listening socket is closed, so that the next
            // connection attempt is refused, not queued in the backlog.
            let _ = handle.await;
        }
        self.control.send_modify(|control| {
            control.mode = ProxyMode::Refuse;
            control.generation += 1;
        });
    }

    /// Cuts every open connection once; new connections pass.
    pub fn cut(&self) {
        self.control.send_modify(|control| control.generation += 1);
    }

    /// Delays every forwarded chunk by a random time up to `max`.
    pub fn jitter(&self, max: Duration) {
        self.set_mode(ProxyMode::Jitter(max));
    }

    /// Holds every byte in both directions until the mode changes.
    pub fn stall(&self) {
        self.set_mode(ProxyMode::Stall);
    }

    /// Delays every forwarded chunk by `latency`.
    pub fn slow(&self, latency: Duration) {
        self.set_mode(ProxyMode::Slow(latency));
    }

    /// Lets everything pass again, reopening the port if it was closed.
    ///
    /// Fails only if the port, closed by [`refuse`](Self::refuse), was
    /// taken by another program meanwhile.
    pub async fn heal(&self) -> io::Result<()> {
        let reopen = self.listener.lock().expect("listener slot").is_none();
        if reopen {
            let mut attempts = 0;
            let listener = loop {
                match bind(self.addr) {
                    Ok(listener) => break listener,
                    Err(error) if attempts < 50 => {
                        attempts += 1;
                        tracing::debug!(%error, "fault proxy: port not free yet");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(error) => {
                        return Err(io::Error::new(
                            error.kind(),
                            format!("fault proxy cannot reopen {}: {error}", self.addr),
                        ))
                    }
                }
            };
            self.listen(listener);
        }
        self.set_mode(ProxyMode::Pass);
        Ok(())
    }

    fn set_mode(&self, mode: ProxyMode) {
        self.control.send_modify(|control| control.mode = mode);
    }

    fn listen(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let control = self.control.subscribe();
        let counters = Arc::clone(&self.counters);
        let handle = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(
                    client,
                    upstream,
                    control.clone(),
                    Arc::clone(&counters),
                ));
            }
        });
        *self.listener.lock().expect("listener slot") = Some(handle);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(handle) = self.listener.lock().expect("listener slot").take() {
            handle.abort();
        }
        self.control.send_modify(|control| control.closed = true);
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// One proxied connection: two pumps until either side closes, the proxy
/// cuts it, or the proxy is dropped.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    control: watch::Receiver<Control>,
    counters: Arc<Counters>,
) {
    let generation = control.borrow().generation;
    let Ok(server) = TcpStream::connect(upstream).await else {
        // The real server is down: the client sees its connection closed.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let cut = tokio::select! {
        cut = pump(client_read, server_write, control.clone(), generation) => cut,
        cut = pump(server_read, client_write, control, generation) => cut,
    };
    if cut {
        counters.cut.fetch_add(1, Ordering::Relaxed);
    }
}

/// Forwards bytes from `from` to `to` as the mode says. Returns whether the
/// connection was cut (rather than closed by a peer).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut control: watch::Receiver<Control>,
    generation: u64,
) -> bool {
    let mut buffer = vec![0u8; 16 * 1024];
    // xorshift64*, seeded per connection direction: no shared state.
    let mut random = (&buffer as *const _ as u64) | 1;
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            () = wait_for_cut(&mut control, generation) => return true,
        };
        let length = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return false;
            }
            Ok(length) => length,
        };
        // Hold the chunk while stalled; delay it while slow.
        loop {
            let now = *control.borrow_and_update();
            if now.closed || now.generation != generation {
                return true;
            }
            let mode = match now.mode {
                ProxyMode::Jitter(max) => {
                    random ^= random >> 12;
                    random ^= random << 25;
                    random ^= random >> 27;
                    let draw = random.wrapping_mul(0x2545_F491_4F6C_DD1D);
                    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
                    ProxyMode::Slow(Duration::from_nanos(draw % nanos.max(1)))
                }
                mode => mode,
            };
            match mode {
                ProxyMode::Pass => break,
                ProxyMode::Slow(latency) | ProxyMode::Jitter(latency) => {
                    tokio::select! {
                        () = tokio::time::sleep(latency) => break,
                        () = wait_for_cut(&mut control, generation) => return true,
                    }
                }
                ProxyMode::Stall | ProxyMode::Refuse => {
                    if control.changed().await.is_err() {
                        return true;
                    }
                }
            }
        }
        if to.write_all(&buffer[..length]).await.is_err() {
            return false;
        }
    }
}

/// Resolves once this connection's generation is cut or the proxy closed.
async fn wait_for_cut(control: &mut watch::Receiver<Control>, generation: u64) {
    loop {
        {
            let now = control.borrow();
            if now.closed || now.generation != generation {
                return;
            }
        }
        if control.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(bytes).await?;
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn bytes_pass_until_told_otherwise() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"ping").await.unwrap(), b"ping");
        assert_eq!(proxy.accepted(), 1);
    }

    #[tokio::test]
    async fn refuse_closes_the_port_and_cuts_open_connections_until_healed() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open, b"a").await.unwrap();

        proxy.refuse().await;
        let refused = TcpStream::connect(proxy.addr()).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert!(round_trip(&mut open, b"b").await.is_err());

        proxy.heal().await.unwrap();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"c").await.unwrap(), b"c");
    }

    #[tokio::test]
    async fn cut_ends_open_connections_but_accepts_new_ones() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open, b"a").await.unwrap();
        proxy.cut();
        assert!(round_trip(&mut open, b"b").await.is_err());
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"c").await.unwrap(), b"c");
        assert_eq!(proxy.cut_connections(), 1);
    }

    #[tokio::test]
    async fn stall_holds_bytes_until_the_mode_changes() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.stall();
        let held =
            tokio::time::timeout(Duration::from_millis(200), round_trip(&mut stream, b"held"))
                .await;
        assert!(held.is_err(), "a stalled proxy forwarded bytes");
        proxy.heal().await.unwrap();
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"held");
    }

    #[tokio::test]
    async fn slow_delays_every_chunk() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.slow(Duration::from_millis(60));
        let started = std::time::Instant::now();
        round_trip(&mut stream, b"x").await.unwrap();
        // Delayed on the way there and on the way back.
        assert!(started.elapsed() >= Duration::from_millis(120));
    }
}
