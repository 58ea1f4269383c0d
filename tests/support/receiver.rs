//! An HTTP or HTTPS endpoint on a loopback port of the test, standing for a webhook
//! receiver: it records every request and answers as told.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One request a receiver got.
#[derive(Clone)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    pub fn transaction_id(&self) -> String {
        let body: Value = serde_json::from_slice(&self.body).unwrap();
        body["transactionId"].as_str().unwrap().to_owned()
    }

    pub fn event_id(&self) -> i64 {
        self.headers["ledgerflow-event-id"].to_str().unwrap().parse().unwrap()
    }
}

/// How a receiver answers.
#[derive(Clone, Copy)]
pub enum Behaviour {
    Accept,
    /// 500 to its first `n` requests, then 200.
    FailFirst(usize),
    /// 200 after this long.
    Slow(Duration),
    /// 307 to the same path on another receiver, at this address.
    Redirect(SocketAddr),
    /// 200 with a body that never ends.
    Endless,
}

/// An HTTP endpoint of this test: records every request, answers as told.
pub struct Receiver {
    addr: SocketAddr,
    scheme: &'static str,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: CancellationToken,
}

/// A certificate of the test's own, for `127.0.0.1`: a receiver serves it, and whoever is to
/// trust that receiver trusts `cert_pem` as a root.
pub struct TestCertificate {
    pub cert_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestCertificate {
    pub fn self_signed() -> Self {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        Self { cert_pem: made.cert.pem(), cert_der: made.cert.der().to_vec(), key_der: made.key_pair.serialize_der() }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(self.cert_der.clone())], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), behaviour)
    }

    pub fn on(listener: TcpListener, behaviour: Behaviour) -> Receiver {
        let (app, receiver) = Self::app(&listener, behaviour, "http");
        let until = receiver.stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(until.cancelled_owned()).await.unwrap();
        });
        receiver
    }

    /// An HTTPS receiver serving `certificate`; a handshake that fails (a client that does not
    /// trust it) records nothing.
    pub async fn start_tls(behaviour: Behaviour, certificate: &TestCertificate) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (app, receiver) = Self::app(&listener, behaviour, "https");
        let acceptor = certificate.acceptor();
        let until = receiver.stop.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    () = until.cancelled() => return,
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        receiver
    }

    fn app(listener: &TcpListener, behaviour: Behaviour, scheme: &'static str) -> (axum::Router, Receiver) {
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let state = (Arc::clone(&hits), behaviour);
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(state);
        (app, Receiver { addr, scheme, hits, stop: CancellationToken::new() })
    }

    pub fn url(&self) -> String {
        format!("{}://{}/hook", self.scheme, self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    pub fn event_ids(&self) -> Vec<i64> {
        self.hits().iter().map(Hit::event_id).collect()
    }

    pub fn transaction_ids(&self) -> BTreeSet<String> {
        self.hits().iter().map(Hit::transaction_id).collect()
    }

    /// Waits until it has received every one of `ids` (at least once), up to `limit`.
    pub async fn wait_for(&self, ids: &BTreeSet<i64>, limit: Duration) {
        let start = Instant::now();
        loop {
            let got: BTreeSet<i64> = self.event_ids().into_iter().collect();
            if ids.is_subset(&got) {
                return;
            }
            let missing: Vec<_> = ids.difference(&got).take(10).collect();
            assert!(start.elapsed() < limit, "still missing events {missing:?} after {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn hook(
    State((hits, behaviour)): State<(Arc<Mutex<Vec<Hit>>>, Behaviour)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = {
        let mut hits = hits.lock().unwrap();
        hits.push(Hit { headers, body, at: Instant::now() });
        hits.len()
    };
    match behaviour {
        Behaviour::Accept => StatusCode::OK.into_response(),
        Behaviour::FailFirst(n) if seen <= n => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Behaviour::FailFirst(_) => StatusCode::NO_CONTENT.into_response(),
        Behaviour::Slow(pause) => {
            tokio::time::sleep(pause).await;
            StatusCode::OK.into_response()
        }
        Behaviour::Redirect(to) => {
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, format!("http://{to}/hook"))]).into_response()
        }
        Behaviour::Endless => {
            let chunk = Bytes::from(vec![b'x'; 8192]);
            let endless = futures::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
            (StatusCode::OK, Body::from_stream(endless)).into_response()
        }
    }
}
