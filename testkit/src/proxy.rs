//! The one TCP proxy of the tests, in front of PostgreSQL or RabbitMQ. A
//! test shares the real services with every other test, so what it does to
//! "the service" (an outage, a resource alarm, a count of round trips) it
//! does to its own connections through this proxy, and no one else's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

/// How the proxy splits what passes into messages: a test that watches or
/// slips in messages needs whole ones, an outage only bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Bytes as they arrive: nothing is read of them.
    Bytes,
    /// AMQP 0-9-1 frames, after the client's protocol header.
    Amqp,
    /// PostgreSQL messages, without TLS: the client's first is the startup
    /// message, which has no type byte.
    Postgres,
}

/// Which end of a proxied connection sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Wire {
    /// The length of the message `buffered` begins with, once enough of it
    /// has arrived to tell; `first` for the first message of a direction.
    fn message_length(self, from: Side, first: bool, buffered: &[u8]) -> Option<usize> {
        let be32 = |at: usize| {
            let bytes = buffered.get(at..at + 4)?;
            Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
        };
        match (self, from, first) {
            (_, _, _) if buffered.is_empty() => None,
            (Wire::Bytes, _, _) => Some(buffered.len()),
            // "AMQP" 0 0 9 1: no frame yet.
            (Wire::Amqp, Side::Client, true) => Some(8),
            // Type, channel, size, payload, frame end.
            (Wire::Amqp, _, _) => Some(7 + be32(3)? + 1),
            (Wire::Postgres, Side::Client, true) => be32(0),
            (Wire::Postgres, _, _) => Some(1 + be32(1)?),
        }
    }
}

/// What a test sees of each message, made afresh for each direction of
/// each connection (a protocol's state, such as "since the last Sync", is a
/// connection's own).
type Watcher = Box<dyn FnMut(&[u8]) + Send>;
type Watch = Arc<dyn Fn(Side) -> Watcher + Send + Sync>;

/// A TCP proxy on a free local port that a test can cut and restore (what
/// an outage or a restart of the service looks like to the processes
/// behind it: connections reset, new ones refused), watch message by
/// message, and slip server messages into.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    /// Bumped on each cut: a connection of an older generation closes.
    generation: watch::Sender<u64>,
    inject: broadcast::Sender<Vec<u8>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards to `target` (`host:port`) bytes as they come.
    pub async fn start(target: &str) -> Proxy {
        Self::listen(target, Wire::Bytes, Arc::new(|_| Box::new(|_| {}))).await
    }

    /// Forwards to `target` message by message of `wire`, so that
    /// [`Proxy::inject`] never lands inside one.
    pub async fn start_framed(target: &str, wire: Wire) -> Proxy {
        Self::listen(target, wire, Arc::new(|_| Box::new(|_| {}))).await
    }

    /// As [`Proxy::start_framed`], and each message is shown, before it is
    /// passed on, to the watcher `watch` makes for its side of its
    /// connection.
    pub async fn start_watching(
        target: &str,
        wire: Wire,
        watch: impl Fn(Side) -> Watcher + Send + Sync + 'static,
    ) -> Proxy {
        Self::listen(target, wire, Arc::new(watch)).await
    }

    async fn listen(target: &str, wire: Wire, watching: Watch) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (inject, _) = broadcast::channel(16);
        let (target, up_flag) = (target.to_owned(), up.clone());
        let (generations, injections) = (generation.clone(), inject.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !up_flag.load(Ordering::SeqCst) {
                    // Down: the connection is closed at once.
                    continue;
                }
                let born = *generations.borrow();
                let mut cut = generations.subscribe();
                let (target, watch) = (target.clone(), watching.clone());
                let injected = injections.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let upstream =
                        pass(client_read, server_write, wire, Side::Client, &watch, None);
                    let downstream = pass(
                        server_read,
                        client_write,
                        wire,
                        Side::Server,
                        &watch,
                        Some(injected),
                    );
                    tokio::select! {
                        _ = async { tokio::join!(upstream, downstream) } => {}
                        _ = cut.wait_for(|g| *g != born) => {}
                    }
                });
            }
        });
        Proxy {
            port,
            up,
            generation,
            inject,
            accept,
        }
    }

    /// `url` with its port replaced by the proxy's.
    pub fn url_for(&self, url: &str, service_port: u16) -> String {
        url.replacen(&format!(":{service_port}"), &format!(":{}", self.port), 1)
    }

    /// The service goes away: every open connection is cut, new ones are
    /// closed on arrival.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// The service is back.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `message` reaches every client connected now as if the server had
    /// sent it, between two of the server's own messages.
    pub fn inject(&self, message: Vec<u8>) {
        let _ = self.inject.send(message);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

/// One direction of a connection, whole messages at a time; on the
/// server's side, with the test's injected messages between them.
async fn pass(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    wire: Wire,
    side: Side,
    watch: &Watch,
    mut injected: Option<broadcast::Receiver<Vec<u8>>>,
) {
    let mut watcher = watch(side);
    let mut buffered = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut first = true;
    loop {
        let read = tokio::select! {
            read = from.read(&mut chunk) => read,
            message = next_injection(&mut injected) => match message {
                Some(message) => {
                    if to.write_all(&message).await.is_err() {
                        break;
                    }
                    continue;
                }
                None => {
                    injected = None;
                    continue;
                }
            },
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffered.extend_from_slice(&chunk[..n]);
        while let Some(length) = wire.message_length(side, first, &buffered) {
            if buffered.len() < length {
                break;
            }
            let message: Vec<u8> = buffered.drain(..length).collect();
            first = false;
            watcher(&message);
            if to.write_all(&message).await.is_err() {
                return;
            }
        }
    }
    let _ = to.shutdown().await;
}

/// The next message to slip in; pending for ever where there are none.
async fn next_injection(injected: &mut Option<broadcast::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    let Some(receiver) = injected else {
        return std::future::pending().await;
    };
    loop {
        match receiver.recv().await {
            Ok(message) => return Some(message),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}
