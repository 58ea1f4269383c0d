//! A TCP proxy in front of RabbitMQ, to fail one process's broker connections as a network
//! fault would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A TCP proxy between one process and RabbitMQ, to fail its broker connections the way a
/// network fault would. [`AmqpProxy::cut`] drops every connection through it at once: both
/// sides see it die mid-stream, and publishes in flight lose their confirms. With
/// [`AmqpProxy::hold_replies`] first, nothing flows back from the broker until the cut, so
/// every publish made meanwhile reaches the broker and only its confirm is lost. New
/// connections go through again after a cut (and its blackout, if any).
pub struct AmqpProxy {
    /// `amqp_uri()` pointed at the proxy.
    pub uri: String,
    current: Arc<Mutex<CancellationToken>>,
    /// New connections are dropped at once until then.
    blackout_until: Arc<Mutex<Instant>>,
    hold: tokio::sync::watch::Sender<bool>,
    live: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl AmqpProxy {
    pub async fn start() -> Self {
        let mut uri = reqwest::Url::parse(&crate::amqp_uri_as(crate::GATEWAY_BROKER_USER)).unwrap();
        let upstream = format!("{}:{}", uri.host_str().unwrap(), uri.port().unwrap_or(5672));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        uri.set_host(Some("127.0.0.1")).unwrap();
        uri.set_port(Some(listener.local_addr().unwrap().port())).unwrap();
        let current = Arc::new(Mutex::new(CancellationToken::new()));
        let blackout_until = Arc::new(Mutex::new(Instant::now()));
        let (hold, held) = tokio::sync::watch::channel(false);
        let live = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let (current, blackout_until, live) =
                (Arc::clone(&current), Arc::clone(&blackout_until), Arc::clone(&live));
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if Instant::now() < *blackout_until.lock().unwrap() {
                        continue; // dropped: the connection attempt fails
                    }
                    let cut = current.lock().unwrap().clone();
                    let (live, upstream, held) = (Arc::clone(&live), upstream.clone(), held.clone());
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                        live.fetch_add(1, Ordering::SeqCst);
                        tokio::select! {
                            () = cut.cancelled() => {}
                            () = forward(client, server, held, &cut) => {}
                        }
                        live.fetch_sub(1, Ordering::SeqCst);
                        // Dropping both sockets closes them.
                    });
                }
            }
        });
        Self { uri: uri.to_string(), current, blackout_until, hold, live, accept }
    }

    /// From now until the next cut, nothing flows back from the broker (confirms included).
    pub fn hold_replies(&self) {
        self.hold.send_replace(true);
    }

    /// Drops every connection open through the proxy, and for `blackout` also every new
    /// one; returns how many were open.
    pub fn cut(&self, blackout: Duration) -> usize {
        *self.blackout_until.lock().unwrap() = Instant::now() + blackout;
        let live = self.live.load(Ordering::SeqCst);
        std::mem::take(&mut *self.current.lock().unwrap()).cancel();
        self.hold.send_replace(false);
        live
    }
}

/// Copies both ways until either side closes; broker-to-client bytes wait while `held`.
async fn forward(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mut held: tokio::sync::watch::Receiver<bool>,
    cut: &CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::io::copy(&mut client_read, &mut server_write);
    let down = async {
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            let Ok(n @ 1..) = server_read.read(&mut buf).await else { return };
            // Held bytes are never delivered: the cut that ends the hold also ends this.
            while *held.borrow_and_update() {
                if held.changed().await.is_err() {
                    return;
                }
            }
            if cut.is_cancelled() || client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        () = down => {}
    }
}

impl Drop for AmqpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.current.lock().unwrap().cancel();
    }
}
