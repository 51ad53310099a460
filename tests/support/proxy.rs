//! A small TCP proxy on 127.0.0.1, put between a server (or a client) and the
//! broker to cut its connection on demand: a network partition without
//! touching the network.
//!
//! ```ignore
//! let broker = Mosquitto::start();
//! let proxy = Proxy::start(broker.port());
//! let server = Server::builder("s").broker(&proxy.url()) /* ... */;
//!
//! proxy.pause();   // a partition: nothing passes, in either direction
//! proxy.resume();  // healed: what waited is delivered
//! proxy.refuse_new(true);
//! proxy.reset();   // every connection closed abruptly (RST)
//! ```
//!
//! The proxy runs on a thread and a Tokio runtime of its own, so that its
//! tasks are not counted among those of the test's runtime (the chaos tests
//! measure that count), and so that it keeps forwarding however busy the
//! test's runtime is.
//!
//! ## What each control does
//!
//! - [`Proxy::pause`] stops forwarding in both directions while keeping every
//!   connection open. The proxy stops *reading*, so the bytes wait in the
//!   kernel's buffers and the sender's writes eventually block, as when the
//!   path between two hosts is cut. A FIN or RST sent meanwhile (the broker
//!   giving up on a silent client, say) waits behind them, as it would on a
//!   real partition. Connections accepted while paused are held too, without
//!   being connected upstream (as a connection attempt during a partition
//!   would hang); at [`Proxy::resume`], one whose client has given up
//!   meanwhile (closed its end) is dropped, and one still waiting is
//!   connected and its bytes forwarded, as a retried SYN would get through
//!   once the path is back.
//! - [`Proxy::resume`] forwards again, beginning with whatever waited.
//! - [`Proxy::reset`] closes every current connection on both sides with
//!   SO_LINGER 0, so both peers see an RST (ECONNRESET), not an orderly FIN.
//! - [`Proxy::refuse_new`] makes the proxy reset each new connection as soon
//!   as it is accepted (the client sees its connection reset before the
//!   CONNACK, like a broker that is down).
//!
//! A connection one side closes in an orderly way is half-closed towards
//! the other (FIN for FIN); a connection one side resets is reset on the
//! other side too. When the upstream cannot be reached, the downstream
//! connection is reset.

#![allow(dead_code)]

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

/// A TCP proxy from a port of its own on 127.0.0.1 to `127.0.0.1:{upstream}`.
/// Stopped (every connection closed) when dropped.
pub struct Proxy {
    port: u16,
    upstream: u16,
    control: Arc<Control>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the proxy's tasks watch.
struct Control {
    paused: watch::Sender<bool>,
    refuse: AtomicBool,
    /// Bumped by [`Proxy::reset`]: each connection open then is reset.
    resets: watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: watch::Sender<u64>,
    /// Connections open now (accepted and not yet closed).
    open: AtomicUsize,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:{upstream}` on a free port, and returns
    /// once it accepts connections. The upstream need not be up yet.
    pub fn start(upstream: u16) -> Proxy {
        let listener = StdListener::bind((HOST, 0)).expect("bind 127.0.0.1:0 for the proxy");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("the proxy's address").port();
        let control = Arc::new(Control {
            paused: watch::Sender::new(false),
            refuse: AtomicBool::new(false),
            resets: watch::Sender::new(0),
            accepted: watch::Sender::new(0),
            open: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let ctl = control.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the proxy's runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("a Tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, upstream, ctl) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task, and so
                // closes every connection.
            })
            .expect("spawn the proxy thread");
        Proxy {
            port,
            upstream,
            control,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The port the proxy listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port it forwards to.
    pub fn upstream(&self) -> u16 {
        self.upstream
    }

    /// `mqtt://127.0.0.1:{port}`, to give a server or client instead of the
    /// broker's URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding, in both directions, keeping the connections open.
    pub fn pause(&self) {
        self.control.paused.send_replace(true);
    }

    /// Forwards again; what waited goes first.
    pub fn resume(&self) {
        self.control.paused.send_replace(false);
    }

    /// Whether the proxy is paused.
    pub fn is_paused(&self) -> bool {
        *self.control.paused.borrow()
    }

    /// Closes every connection open now, abruptly: both peers see an RST.
    /// Returns at once; the resets happen on the proxy's thread right after.
    pub fn reset(&self) {
        self.control.resets.send_modify(|n| *n += 1);
    }

    /// While on, each new connection is reset as soon as it is accepted.
    pub fn refuse_new(&self, refuse: bool) {
        self.control.refuse.store(refuse, Ordering::SeqCst);
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> u64 {
        *self.control.accepted.borrow()
    }

    /// How many connections are open now.
    pub fn open(&self) -> usize {
        self.control.open.load(Ordering::SeqCst)
    }

    /// Waits until the proxy has accepted at least `n` connections in all;
    /// false if that did not happen within `within`.
    pub async fn accepted_at_least(&self, n: u64, within: Duration) -> bool {
        let mut accepted = self.control.accepted.subscribe();
        let reached = tokio::time::timeout(within, accepted.wait_for(|a| *a >= n)).await;
        reached.is_ok()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: u16, control: Arc<Control>) {
    loop {
        let down = match listener.accept().await {
            Ok((down, _)) => down,
            Err(_) => {
                // Out of descriptors, say: try again shortly.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        control.accepted.send_modify(|n| *n += 1);
        if control.refuse.load(Ordering::SeqCst) {
            reset_close(down);
            continue;
        }
        tokio::spawn(connection(down, upstream, control.clone()));
    }
}

/// Counts a connection open while it lives.
struct Open(Arc<Control>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a connection ended.
enum End {
    /// Both directions closed in order (or the proxy is stopping).
    Closed,
    /// A peer reset its end, or [`Proxy::reset`]: reset both.
    Reset,
}

async fn connection(mut down: TcpStream, upstream: u16, control: Arc<Control>) {
    control.open.fetch_add(1, Ordering::SeqCst);
    let _open = Open(control.clone());
    // Only resets asked for from now on concern this connection.
    let mut resets = control.resets.subscribe();
    let _ = down.set_nodelay(true);

    // A connection made during a partition waits for the path to come back.
    let mut prelude = Vec::new();
    let mut paused = control.paused.subscribe();
    if *paused.borrow_and_update() {
        tokio::select! {
            healed = paused.wait_for(|p| !*p) => {
                if healed.is_err() {
                    return;
                }
            }
            _ = resets.changed() => return reset_close(down),
        }
        // Its client may have given up on it meanwhile: then it never got
        // through, and its stale bytes must not reach the broker.
        match drain_ready(&down, &mut prelude) {
            Ok(true) => {}
            Ok(false) | Err(_) => return reset_close(down),
        }
    }

    let mut up = match TcpStream::connect(SocketAddr::from((HOST, upstream))).await {
        Ok(up) => up,
        Err(_) => return reset_close(down),
    };
    let _ = up.set_nodelay(true);
    if !prelude.is_empty() && up.write_all(&prelude).await.is_err() {
        reset_close(down);
        return reset_close(up);
    }

    let end = {
        let (down_r, down_w) = down.split();
        let (up_r, up_w) = up.split();
        let both = async {
            tokio::try_join!(
                pump(down_r, up_w, control.paused.subscribe()),
                pump(up_r, down_w, control.paused.subscribe()),
            )
        };
        tokio::select! {
            outcome = both => match outcome {
                Ok(_) => End::Closed,
                Err(_) => End::Reset,
            },
            _ = resets.changed() => End::Reset,
        }
    };
    if let End::Reset = end {
        reset_close(down);
        reset_close(up);
    }
}

/// Reads what is already buffered on `stream`, without waiting, into `buf`.
/// `Ok(true)`: the peer is still there; `Ok(false)`: it has closed its end.
fn drain_ready(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Copies `from` to `to` while not paused. An orderly close is passed on as
/// a half-close; an error ends the connection (with resets).
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, mut paused: watch::Receiver<bool>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if paused.wait_for(|p| !*p).await.is_err() {
            return Ok(()); // the proxy is stopping
        }
        let n = tokio::select! {
            biased;
            _ = paused.wait_for(|p| *p) => continue,
            read = from.read(&mut buf) => read?,
        };
        if n == 0 {
            // Ignore the error: the other side may be gone already.
            let _ = to.shutdown().await;
            return Ok(());
        }
        // Read just as the pause began: it waits for the resume like the rest.
        if paused.wait_for(|p| !*p).await.is_err() {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// Closes `stream` with SO_LINGER 0: the peer gets an RST, not a FIN.
fn reset_close(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
