//! The HTTP edge under abuse: what a black-box probe found (issue 30), each refused precisely.

use std::time::Duration;

use ledgerflow_tests::{assert_error, spawn_app};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_shown_to_the_counterparty_may_not_hide_or_reorder_characters() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    app.fund(&pair.a, 100).await;
    for hidden in ["refund \u{202e}001", "a\u{200b}b", "line\u{2028}break", "para\u{2029}graph"] {
        let body = json!({"fromAccount": pair.a, "toAccount": pair.b, "amount": 1, "idempotencyKey": "k", "description": hidden});
        let got = app.call("POST", "/transactions", Some(&pair.alice.token), Some(body)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(got.1["error"]["field"], "description", "{hidden:?}: {}", got.1);
    }
    let body = json!({"fromAccount": pair.a, "toAccount": pair.b, "amount": 1, "idempotencyKey": "ok"});
    let sent = app.call("POST", "/transactions", Some(&pair.alice.token), Some(body)).await;
    let id = sent.1["transaction"]["id"].as_str().unwrap().to_owned();
    app.wait_terminal(&pair.alice.token, &id).await;
    let reason = json!({"idempotencyKey": "undo", "reason": "sorry\u{200d}"});
    let got = app.call("POST", &format!("/transactions/{id}/reverse"), Some(&pair.bob.token), Some(reason)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(got.1["error"]["field"], "reason", "{}", got.1);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_too_large_is_refused_at_once() {
    let app = spawn_app().await;
    let user = app.register().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/accounts HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{{",
        user.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The body deadline is 10 s: an answer well before it was not waiting for the body.
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await;
    let n = read.expect("answered without waiting for the body").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_session_cookies_are_refused_not_picked_from() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register().await, app.register().await);
    let with_cookies = |cookie: String| app.http.get(app.url("/api/accounts")).header("cookie", cookie).send();
    let one = with_cookies(format!("token={}", alice.token)).await.unwrap();
    assert_eq!(one.status(), StatusCode::OK);
    for cookies in
        [format!("token={}; token={}", alice.token, bob.token), format!("token={}; other=1; token=x", alice.token)]
    {
        let two = with_cookies(cookies).await.unwrap();
        assert_eq!(two.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = two.json().await.unwrap();
        assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    }
    app.teardown().await;
}

/// Sends raw bytes and returns the first answer's head (status line and headers) and body.
async fn raw(address: &str, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    read.expect("answered and closed").unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// What the HTTP library answers before any LedgerFlow code runs, documented in README as the
/// two answers without the JSON error body: a head it will not read, or cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_the_http_library_refuses_are_answered_by_it_without_a_body() {
    let app = spawn_app().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let huge = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1_000_000));
    let answer = raw(&address, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let doubled = "POST /api/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                   Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}";
    let answer = raw(&address, doubled.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    for answer in [raw(&address, huge.as_bytes()).await, raw(&address, doubled.as_bytes()).await] {
        assert!(!answer.contains("\"error\""), "no JSON body: {answer}");
    }
    app.teardown().await;
}
