//! Webhooks: registration rules, and deliveries by real dispatchers (in process, built from
//! the real settings, and one `ledgerflow dispatcher` process) to real HTTP receivers on
//! loopback ports of this test. The events are the real pipeline's: transfers through the
//! gateway, committed by a worker, sequenced by its relay.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use ledgerflow::settings::{DispatcherSettings, WebhookPolicySettings, from_env};
use ledgerflow_store::Store;
use ledgerflow_tests::receiver::{Behaviour, Receiver, TestCertificate};
use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::{DEADLINE, Session, TestApp, assert_error, spawn_app_configured};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The README's verification, word for word: HMAC-SHA256 of `"<t>.<raw body>"` under the
/// whole secret, compared in constant time, refused outside the tolerance window.
fn verify(secret: &str, header: &str, raw_body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => candidates.push(v),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (now - t).abs() > tolerance_secs {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(format!("{t}.").as_bytes());
    mac.update(raw_body);
    candidates.iter().any(|c| hex::decode(c).is_ok_and(|sig| mac.clone().verify_slice(&sig).is_ok()))
}

/// A system whose gateway lets webhooks reach this test's loopback receivers over http.
async fn spawn_open_app(workers: usize) -> TestApp {
    spawn_app_configured(workers, |gateway| {
        gateway.webhooks.webhook_allow_http = true;
        gateway.webhooks.webhook_allow_private = true;
    })
    .await
}

/// A dispatcher in this process, as `ledgerflow dispatcher` builds it from its settings, with
/// a store of its own and retries in fractions of a second.
fn start_dispatcher(app: &TestApp, name: &str) -> (CancellationToken, JoinHandle<()>) {
    start_dispatcher_with(app, name, |_| {})
}

/// [`start_dispatcher`], with its settings changed by `configure`.
fn start_dispatcher_with(
    app: &TestApp,
    name: &str,
    configure: impl FnOnce(&mut DispatcherSettings),
) -> (CancellationToken, JoinHandle<()>) {
    let policy = WebhookPolicySettings { webhook_allow_http: true, webhook_allow_private: true };
    let mut settings: DispatcherSettings = from_env().unwrap();
    settings.dispatcher_name = Some(name.to_owned());
    settings.webhook_retry_base = Duration::from_millis(200).into();
    settings.webhook_retry_cap = Duration::from_secs(1).into();
    configure(&mut settings);
    let mut config = settings.config(&policy).unwrap();
    config.poll_interval = Duration::from_millis(50);
    let (uri, db) = (app.settings.connections.mongodb_uri.clone(), app.settings.connections.mongodb_db.clone());
    let stop = CancellationToken::new();
    let until = stop.clone();
    let handle = tokio::spawn(async move {
        let store = Store::connect(&uri, &db).await.unwrap();
        ledgerflow_dispatcher::run(store, config, until).await;
    });
    (stop, handle)
}

async fn stop_dispatcher((stop, handle): (CancellationToken, JoinHandle<()>)) {
    stop.cancel();
    tokio::time::timeout(DEADLINE, handle).await.expect("the dispatcher stops in time").unwrap();
}

/// Registers a webhook; returns its id and secret.
async fn register_webhook(app: &TestApp, user: &Session, url: &str, types: &[&str]) -> (String, String) {
    let created = app.must("register a webhook", app.as_user(user).register_webhook(url, types, None).await);
    (created.id, created.secret)
}

/// The ids of the events of `kind` that `user` may see, once there are at least `n` of them
/// (the relay sequences them shortly after their transactions commit).
async fn visible_events(app: &TestApp, user: &Session, kind: &str, n: usize) -> BTreeSet<i64> {
    let start = Instant::now();
    loop {
        let mut ids = BTreeSet::new();
        let mut after = 0;
        loop {
            let path = format!("/api/events?types={kind}&after={after}&limit=100");
            let (status, page) = app.call("GET", &path, Some(&user.token), None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            ids.extend(page["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()));
            if page["hasMore"] != true {
                break;
            }
            after = *ids.last().unwrap();
        }
        if ids.len() >= n {
            return ids;
        }
        assert!(start.elapsed() < DEADLINE, "{n} {kind} events in time, got {}", ids.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `user` sends `n` transfers of 1 from `from` to `to` in one batch and waits for them all.
async fn transfers(app: &TestApp, user: &Session, from: &str, to: &str, n: usize) -> Vec<String> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"fromAccount": from, "toAccount": to, "amount": 1, "idempotencyKey": format!("burst-{i}")}))
        .collect();
    let (status, answer) =
        app.call("POST", "/transactions/batch", Some(&user.token), Some(json!({"items": items}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ids: Vec<String> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["transaction"]["id"].as_str().unwrap_or_else(|| panic!("{item}")).to_owned())
        .collect();
    for id in &ids {
        assert_eq!(app.wait_terminal(&user.token, id).await["status"], "COMPLETED");
    }
    ids
}

/// Funds `account` for real and returns the funding transaction's id, COMPLETED.
async fn funded(app: &TestApp, account: &str, amount: i64) -> String {
    let id = app.request_funding(account, amount).await;
    let done = app.wait_terminal(&app.system.token, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    id
}

async fn deliveries(app: &TestApp, user: &Session, webhook: &str) -> Value {
    let (status, body) = app.call("GET", &format!("/api/webhooks/{webhook}/deliveries"), Some(&user.token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The webhook's deliveries once its newest is `ready`; `awaited` names that in the failure.
async fn delivery_once(
    app: &TestApp,
    user: &Session,
    webhook: &str,
    awaited: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let listed = deliveries(app, user, webhook).await;
        if ready(&listed["deliveries"][0]) {
            return listed;
        }
        assert!(start.elapsed() < DEADLINE, "{awaited}: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The webhook's deliveries once its newest has at least `attempts` attempts, settled or not.
async fn attempted_delivery(app: &TestApp, user: &Session, webhook: &str, attempts: usize) -> Value {
    let awaited = format!("not {attempts} attempts");
    delivery_once(app, user, webhook, &awaited, |newest| {
        newest["attempts"].as_array().is_some_and(|a| a.len() >= attempts)
    })
    .await
}

/// The webhook's deliveries once its newest has `attempts` attempts and is no longer PENDING.
async fn settled_delivery(app: &TestApp, user: &Session, webhook: &str, attempts: usize) -> Value {
    delivery_once(app, user, webhook, "not settled", |newest| {
        newest["status"] != "PENDING" && newest["attempts"].as_array().is_some_and(|a| a.len() == attempts)
    })
    .await
}

#[tokio::test]
async fn webhook_registration_refuses_unsafe_or_foreign_endpoints() {
    // The production defaults: https only, public addresses only.
    let app = ledgerflow_tests::spawn_app().await;
    let pair = app.alice_and_bob().await;
    let register = |body: Value| app.call("POST", "/api/webhooks", Some(&pair.alice.token), Some(body));
    let public = "https://93.184.215.14/hook";
    for (body, field) in [
        (json!({"url": "http://93.184.215.14/hook", "types": ["transaction.completed"]}), "url"),
        (json!({"url": "https://127.0.0.1/hook", "types": ["transaction.completed"]}), "url"),
        (json!({"url": "https://169.254.169.254/latest/meta-data", "types": ["transaction.completed"]}), "url"),
        (json!({"url": "https://[::1]/hook", "types": ["transaction.completed"]}), "url"),
        (json!({"url": "https://user:pw@93.184.215.14/hook", "types": ["transaction.completed"]}), "url"),
        (json!({"url": public, "types": ["transaction.settled"]}), "types"),
        (json!({"url": public, "types": []}), "types"),
        (json!({"url": public, "types": ["transaction.completed"], "accounts": [pair.b]}), "accounts"),
        (json!({"url": public, "types": ["transaction.completed"], "accounts": []}), "accounts"),
        (json!({"url": public, "types": ["transaction.completed"], "secret": "mine"}), "secret"),
    ] {
        let answer = register(body.clone()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(answer.1["error"]["field"], field, "{body}: {}", answer.1);
    }
    // Her own account, on a public address, is fine.
    let ok = json!({"url": public, "types": ["transaction.completed"], "accounts": [pair.a]});
    let (status, created) = register(ok).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["accounts"], json!([pair.a]));
    app.teardown().await;
}

#[tokio::test]
async fn a_webhooks_secret_is_shown_once_and_only_to_its_owner() {
    let app = spawn_open_app(0).await;
    let pair = app.alice_and_bob().await;
    let body = json!({"url": "http://127.0.0.1:9/hook", "types": ["transaction.completed", "transaction.failed"]});
    let (status, created) = app.call("POST", "/api/webhooks", Some(&pair.alice.token), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() == 6 + 64, "{secret}");
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/webhooks/{id}");
    let (status, shown) = app.call("GET", &path, Some(&pair.alice.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(shown.get("secret").is_none() && !shown.to_string().contains(secret), "{shown}");
    assert_eq!(shown["types"], json!(["transaction.completed", "transaction.failed"]));
    let (_, listed) = app.call("GET", "/api/webhooks", Some(&pair.alice.token), None).await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(secret), "{listed}");
    // Bob sees nothing of hers, not even that it exists.
    let (_, bobs) = app.call("GET", "/api/webhooks", Some(&pair.bob.token), None).await;
    assert_eq!(bobs["webhooks"], json!([]));
    for (method, path) in [("GET", path.clone()), ("DELETE", path.clone()), ("GET", format!("{path}/deliveries"))] {
        let answer = app.call(method, &path, Some(&pair.bob.token), None).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "WEBHOOK_NOT_FOUND");
    }
    let alice = app.as_user(&pair.alice);
    assert_eq!(app.must("get", alice.webhook(id).await).url, "http://127.0.0.1:9/hook");
    app.must("delete", alice.delete_webhook(id).await);
    assert_eq!(app.must("list", alice.webhooks().await).webhooks, []);
    assert_error(
        &app.call("GET", &path, Some(&pair.alice.token), None).await,
        StatusCode::NOT_FOUND,
        "WEBHOOK_NOT_FOUND",
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_delivered_event_is_signed_over_its_raw_body() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    let receiver = Receiver::start(Behaviour::Accept).await;
    let (webhook, secret) = register_webhook(&app, &pair.alice, &receiver.url(), &["transaction.completed"]).await;
    let dispatcher = start_dispatcher(&app, "dispatcher-a");
    let funding = funded(&app, &pair.a, 10_000).await;
    let ids = visible_events(&app, &pair.alice, "transaction.completed", 1).await;
    receiver.wait_for(&ids, DEADLINE).await;
    let hit = &receiver.hits()[0];
    let header = |name: &str| hit.headers[name].to_str().unwrap().to_owned();
    let id = *ids.first().unwrap();
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("ledgerflow-event-id"), id.to_string());
    assert_eq!(header("ledgerflow-event-type"), "transaction.completed");
    let now = chrono::Utc::now().timestamp();
    assert!(
        verify(&secret, &header("ledgerflow-signature"), &hit.body, now, 300),
        "{}",
        header("ledgerflow-signature")
    );
    // The signature is over these bytes: the same JSON written any other way fails.
    let event: Value = ledgerflow_tests::serde_json::from_slice(&hit.body).unwrap();
    let rewritten = ledgerflow_tests::serde_json::to_vec_pretty(&event).unwrap();
    assert!(!verify(&secret, &header("ledgerflow-signature"), &rewritten, now, 300));
    assert!(!verify("whsec_another", &header("ledgerflow-signature"), &hit.body, now, 300));
    assert!(!verify(&secret, &header("ledgerflow-signature"), &hit.body, now + 3600, 300), "outside the window");
    // The public event, as the events API shows it: no internal field.
    let keys: BTreeSet<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["id", "type", "createdAt", "transactionId", "transaction", "accounts"]));
    assert_eq!((event["id"].clone(), event["transactionId"].clone()), (json!(id), json!(funding)));
    assert_eq!(event["transaction"]["status"], "COMPLETED");
    let (_, listed) = app.call("GET", &format!("/api/events?after={}", id - 1), Some(&pair.alice.token), None).await;
    assert_eq!(listed["events"][0], event, "the webhook's body is the events API's event");
    // The balances as of the change.
    let mine = event["accounts"].as_array().unwrap().iter().find(|a| a["accountId"] == pair.a.as_str()).unwrap();
    assert_eq!(mine["balance"], 10_000, "{event}");
    let listed = settled_delivery(&app, &pair.alice, &webhook, 1).await;
    let delivery = &listed["deliveries"][0];
    assert_eq!((delivery["eventId"].clone(), delivery["status"].clone()), (json!(id), json!("DELIVERED")), "{listed}");
    assert_eq!(delivery["attempts"][0]["statusCode"], 200, "{listed}");
    stop_dispatcher(dispatcher).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_event_on_the_fourth() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    let receiver = Receiver::start(Behaviour::FailFirst(3)).await;
    let (webhook, _) = register_webhook(&app, &pair.alice, &receiver.url(), &["transaction.completed"]).await;
    let dispatcher = start_dispatcher(&app, "dispatcher-a");
    funded(&app, &pair.a, 500).await;
    let id = *visible_events(&app, &pair.alice, "transaction.completed", 1).await.first().unwrap();
    let listed = settled_delivery(&app, &pair.alice, &webhook, 4).await;
    let delivery = &listed["deliveries"][0];
    assert_eq!((delivery["eventId"].clone(), delivery["status"].clone()), (json!(id), json!("DELIVERED")), "{listed}");
    let codes: Vec<&Value> = delivery["attempts"].as_array().unwrap().iter().map(|a| &a["statusCode"]).collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(500), &json!(204)], "{listed}");
    let failed = &delivery["attempts"][0];
    assert!(failed["durationMs"].is_i64() && failed["at"].is_string(), "{listed}");
    assert_eq!(receiver.event_ids(), [id, id, id, id]);
    stop_dispatcher(dispatcher).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_receiver_down_during_a_burst_receives_every_event_once_back() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    // A port nothing listens on yet: connections are refused.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{addr}/hook");
    let (webhook, _) = register_webhook(&app, &pair.alice, &url, &["transaction.completed"]).await;
    let dispatcher = start_dispatcher(&app, "dispatcher-a");
    app.fund(&pair.a, 1_000_000).await;
    // The burst, while the receiver is down: every attempt fails.
    transfers(&app, &pair.alice, &pair.a, &pair.b, BURST).await;
    let ids = visible_events(&app, &pair.alice, "transaction.completed", BURST + 1).await;
    let start = Instant::now();
    loop {
        let listed = deliveries(&app, &pair.alice, &webhook).await;
        if listed["deliveries"].as_array().unwrap().iter().any(|d| d["attempts"][0]["error"].is_string()) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no failed attempt recorded: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receiver = Receiver::on(TcpListener::bind(addr).await.unwrap(), Behaviour::Accept);
    receiver.wait_for(&ids, DEADLINE).await;
    stop_dispatcher(dispatcher).await;
    app.teardown().await;
}

/// Transfers in the bursts of these tests: each is one `transaction.completed` event.
const BURST: usize = 500;

#[tokio::test]
async fn two_dispatchers_never_send_an_event_twice_in_a_clean_run() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    let receiver = Receiver::start(Behaviour::Accept).await;
    register_webhook(&app, &pair.alice, &receiver.url(), &["transaction.completed"]).await;
    let (first, second) = (start_dispatcher(&app, "dispatcher-a"), start_dispatcher(&app, "dispatcher-b"));
    app.fund(&pair.a, 1_000_000).await;
    transfers(&app, &pair.alice, &pair.a, &pair.b, BURST).await;
    let ids = visible_events(&app, &pair.alice, "transaction.completed", BURST + 1).await;
    receiver.wait_for(&ids, DEADLINE).await;
    // Anything sent twice would have arrived by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for id in receiver.event_ids() {
        *counts.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), ids);
    stop_dispatcher(first).await;
    stop_dispatcher(second).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_users_webhook_never_receives_another_users_events() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    let (alices, bobs, systems) = (
        Receiver::start(Behaviour::Accept).await,
        Receiver::start(Behaviour::Accept).await,
        Receiver::start(Behaviour::Accept).await,
    );
    let completed = ["transaction.completed"];
    register_webhook(&app, &pair.alice, &alices.url(), &completed).await;
    register_webhook(&app, &pair.bob, &bobs.url(), &completed).await;
    register_webhook(&app, &app.system, &systems.url(), &completed).await;
    let dispatcher = start_dispatcher(&app, "dispatcher-a");
    let fund_a = funded(&app, &pair.a, 1_000).await;
    let fund_b = funded(&app, &pair.b, 1_000).await;
    let (status, sent) = app.transfer(&pair.alice, &pair.a, &pair.b, json!(100), "a-to-b").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let a_to_b = sent["transaction"]["id"].as_str().unwrap().to_owned();
    app.wait_terminal(&pair.alice.token, &a_to_b).await;
    systems.wait_for(&visible_events(&app, &app.system, "transaction.completed", 3).await, DEADLINE).await;
    alices.wait_for(&visible_events(&app, &pair.alice, "transaction.completed", 2).await, DEADLINE).await;
    bobs.wait_for(&visible_events(&app, &pair.bob, "transaction.completed", 2).await, DEADLINE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let set = |ids: &[&String]| ids.iter().map(|s| (*s).clone()).collect::<BTreeSet<String>>();
    assert_eq!(alices.transaction_ids(), set(&[&fund_a, &a_to_b]), "Alice: her funding and her transfer");
    assert_eq!(bobs.transaction_ids(), set(&[&fund_b, &a_to_b]), "Bob: his funding and what he was sent");
    assert_eq!(systems.transaction_ids(), set(&[&fund_a, &fund_b, &a_to_b]), "SYSTEM: everything");
    assert_eq!((alices.hits().len(), bobs.hits().len()), (2, 2), "each event once");
    // Redelivering someone else's event is refused as if it did not exist.
    let bobs_own = bobs.hits().iter().find(|h| h.transaction_id() == fund_b).unwrap().event_id();
    let path = format!("/api/events/{bobs_own}/redeliver");
    let answer = app.call("POST", &path, Some(&pair.alice.token), Some(json!({}))).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "EVENT_NOT_FOUND");
    stop_dispatcher(dispatcher).await;
    app.teardown().await;
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_a_fast_one() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    let slow = Receiver::start(Behaviour::Slow(Duration::from_secs(5))).await;
    let fast = Receiver::start(Behaviour::Accept).await;
    register_webhook(&app, &pair.alice, &slow.url(), &["transaction.completed"]).await;
    register_webhook(&app, &pair.alice, &fast.url(), &["transaction.completed"]).await;
    app.fund(&pair.a, 1_000).await;
    transfers(&app, &pair.alice, &pair.a, &pair.b, 20).await;
    let ids = visible_events(&app, &pair.alice, "transaction.completed", 21).await;
    // Every event is there before the dispatcher starts: both endpoints are due at once.
    let start = Instant::now();
    let dispatcher = start_dispatcher(&app, "dispatcher-a");
    fast.wait_for(&ids, DEADLINE).await;
    let fast_done = fast.hits().iter().map(|h| h.at).max().unwrap() - start;
    // The slow endpoint holds its few places for 5 s per attempt: 21 of them take 25 s.
    assert!(fast_done < Duration::from_secs(3), "the fast endpoint took {fast_done:?}");
    assert!(slow.hits().len() < ids.len(), "the slow endpoint is still being served");
    stop_dispatcher(dispatcher).await;
    app.teardown().await;
}

#[tokio::test]
async fn redeliver_sends_an_event_again() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    let receiver = Receiver::start(Behaviour::Accept).await;
    let (webhook, _) = register_webhook(&app, &pair.alice, &receiver.url(), &["transaction.completed"]).await;
    let dispatcher = start_dispatcher(&app, "dispatcher-a");
    funded(&app, &pair.a, 500).await;
    let ids = visible_events(&app, &pair.alice, "transaction.completed", 1).await;
    let id = *ids.first().unwrap();
    receiver.wait_for(&ids, DEADLINE).await;
    settled_delivery(&app, &pair.alice, &webhook, 1).await;
    let queued = app.must("redeliver", app.as_user(&pair.alice).redeliver(id).await);
    assert_eq!((queued.event_id, queued.webhook_ids), (id, vec![webhook.clone()]));
    let start = Instant::now();
    while receiver.event_ids().len() < 2 {
        assert!(start.elapsed() < DEADLINE, "not redelivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.event_ids(), [id, id]);
    let listed = settled_delivery(&app, &pair.alice, &webhook, 2).await;
    assert_eq!(listed["deliveries"][0]["status"], "DELIVERED", "{listed}");
    let unknown = app.call("POST", "/api/events/999999/redeliver", Some(&pair.alice.token), Some(json!({}))).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "EVENT_NOT_FOUND");
    stop_dispatcher(dispatcher).await;
    app.teardown().await;
}

/// HTTPS as in production (the gateway allows private addresses, not plain http): the
/// dispatcher verifies the endpoint's certificate, here one the test made and the dispatcher
/// trusts through its CA file, and delivers nothing to an endpoint whose certificate it does
/// not trust.
#[tokio::test]
async fn an_https_endpoint_is_delivered_to_only_over_a_verified_connection() {
    let app = spawn_app_configured(1, |gateway| gateway.webhooks.webhook_allow_private = true).await;
    let pair = app.alice_and_bob().await;
    let (ours, strangers) = (TestCertificate::self_signed(), TestCertificate::self_signed());
    let trusted = Receiver::start_tls(Behaviour::Accept, &ours).await;
    let untrusted = Receiver::start_tls(Behaviour::Accept, &strangers).await;
    assert!(trusted.url().starts_with("https://127.0.0.1:"));
    let (_, secret) = register_webhook(&app, &pair.alice, &trusted.url(), &["transaction.completed"]).await;
    let (refused, _) = register_webhook(&app, &pair.alice, &untrusted.url(), &["transaction.completed"]).await;
    let ca_file = std::env::temp_dir().join(format!("ledgerflow-test-ca-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&ca_file, &ours.cert_pem).unwrap();
    let dispatcher = start_dispatcher_with(&app, "dispatcher-tls", |s| s.webhook_ca_file = Some(ca_file.clone()));
    funded(&app, &pair.a, 700).await;
    let ids = visible_events(&app, &pair.alice, "transaction.completed", 1).await;
    trusted.wait_for(&ids, DEADLINE).await;
    let hit = &trusted.hits()[0];
    let signature = hit.headers["ledgerflow-signature"].to_str().unwrap();
    assert!(verify(&secret, signature, &hit.body, chrono::Utc::now().timestamp(), 300), "{signature}");
    let listed = attempted_delivery(&app, &pair.alice, &refused, 1).await;
    let attempt = &listed["deliveries"][0]["attempts"][0];
    let error = attempt["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(attempt["statusCode"].is_null() && error.contains("certificate"), "{attempt}");
    assert!(untrusted.hits().is_empty(), "nothing reached an endpoint the dispatcher does not trust");
    stop_dispatcher(dispatcher).await;
    let _ = std::fs::remove_file(&ca_file);
    app.teardown().await;
}

/// An endpoint's answer is its status code and nothing more: a redirect is not followed (a
/// failed attempt, retried at the registered URL), and a body that never ends is read up to
/// 64 KiB and dropped, so the attempt ends there, delivered, instead of running into the
/// attempt's timeout.
#[tokio::test]
async fn redirects_are_not_followed_and_an_endless_answer_is_cut_short() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    let elsewhere = Receiver::start(Behaviour::Accept).await;
    let redirecting = Receiver::start(Behaviour::Redirect(elsewhere.addr())).await;
    let endless = Receiver::start(Behaviour::Endless).await;
    let (redirected, _) = register_webhook(&app, &pair.alice, &redirecting.url(), &["transaction.completed"]).await;
    let (talkative, _) = register_webhook(&app, &pair.alice, &endless.url(), &["transaction.completed"]).await;
    let dispatcher = start_dispatcher(&app, "dispatcher-answers");
    funded(&app, &pair.a, 300).await;

    let listed = settled_delivery(&app, &pair.alice, &talkative, 1).await;
    let attempt = &listed["deliveries"][0]["attempts"][0];
    assert_eq!(
        (listed["deliveries"][0]["status"].as_str(), attempt["statusCode"].as_i64()),
        (Some("DELIVERED"), Some(200))
    );
    let timeout = i64::try_from(ledgerflow_dispatcher::ATTEMPT_TIMEOUT.as_millis()).unwrap();
    assert!(attempt["durationMs"].as_i64().unwrap() < timeout, "cut short, not timed out: {attempt}");

    let listed = attempted_delivery(&app, &pair.alice, &redirected, 2).await;
    let attempts = listed["deliveries"][0]["attempts"].as_array().unwrap();
    assert!(attempts.iter().all(|a| a["statusCode"] == 307), "{listed}");
    assert_eq!(listed["deliveries"][0]["status"], "PENDING", "retried, not delivered: {listed}");
    assert!(redirecting.hits().len() >= 2);
    assert!(elsewhere.hits().is_empty(), "the redirect was not followed");
    stop_dispatcher(dispatcher).await;
    app.teardown().await;
}

/// `ledgerflow dispatcher` as its own process, configured by its environment alone, delivers
/// and serves its metrics on a port of its own.
#[tokio::test]
async fn a_dispatcher_process_delivers_and_reports_its_metrics() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    let receiver = Receiver::start(Behaviour::FailFirst(1)).await;
    register_webhook(&app, &pair.alice, &receiver.url(), &["transaction.completed"]).await;
    let metrics = ledgerflow_testkit::free_local_addr().unwrap();
    let mut command = app.cli();
    command
        .arg("dispatcher")
        .env("LEDGERFLOW_WEBHOOK_ALLOW_HTTP", "true")
        .env("LEDGERFLOW_WEBHOOK_ALLOW_PRIVATE", "true")
        .env("LEDGERFLOW_WEBHOOK_RETRY_BASE", "100ms")
        .env("LEDGERFLOW_DISPATCHER_METRICS_ADDR", metrics.to_string());
    let mut process = tokio::process::Command::from(command).kill_on_drop(true).spawn().unwrap();
    funded(&app, &pair.a, 500).await;
    let ids = visible_events(&app, &pair.alice, "transaction.completed", 1).await;
    receiver.wait_for(&ids, DEADLINE).await;
    let start = Instant::now();
    let wanted = [
        "ledgerflow_webhook_deliveries_total{outcome=\"retried\"} 1",
        "ledgerflow_webhook_deliveries_total{outcome=\"delivered\"} 1",
        "ledgerflow_webhook_retry_backlog",
        "ledgerflow_webhook_oldest_undelivered_seconds",
    ];
    loop {
        let text = match app.http.get(format!("http://{metrics}/metrics")).send().await {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if wanted.iter().all(|w| text.contains(w)) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "metrics never showed {wanted:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = *ids.first().unwrap();
    assert_eq!(receiver.event_ids(), [id, id], "a failed attempt, then the delivery");
    process.start_kill().unwrap();
    let _ = process.wait().await;
    app.teardown().await;
}

#[tokio::test]
async fn a_delivery_failing_past_its_horizon_is_failed_and_redeliverable() {
    let app = spawn_open_app(1).await;
    let pair = app.alice_and_bob().await;
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let (webhook, _) =
        register_webhook(&app, &pair.alice, &format!("http://{addr}/hook"), &["transaction.completed"]).await;
    let dispatcher = start_dispatcher_with(&app, "dispatcher-a", |settings| {
        settings.webhook_retry_horizon = Duration::from_secs(1).into();
    });
    funded(&app, &pair.a, 500).await;
    let id = *visible_events(&app, &pair.alice, "transaction.completed", 1).await.first().unwrap();
    let start = Instant::now();
    let failed = loop {
        let listed = deliveries(&app, &pair.alice, &webhook).await;
        if listed["deliveries"][0]["status"] == "FAILED" {
            break listed;
        }
        assert!(start.elapsed() < DEADLINE, "never given up: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delivery = &failed["deliveries"][0];
    assert_eq!(delivery["eventId"], id);
    assert!(delivery["nextAttemptAt"].is_null(), "nothing more is due: {failed}");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert!(attempts.iter().all(|a| a["statusCode"].is_null() && a["error"].is_string()), "{failed}");
    // Back up, the owner asks for it again: it goes out at once.
    let receiver = Receiver::on(TcpListener::bind(addr).await.unwrap(), Behaviour::Accept);
    let path = format!("/api/events/{id}/redeliver");
    let (status, queued) = app.call("POST", &path, Some(&pair.alice.token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    receiver.wait_for(&BTreeSet::from([id]), DEADLINE).await;
    let listed = settled_delivery(&app, &pair.alice, &webhook, attempts.len() + 1).await;
    assert_eq!(listed["deliveries"][0]["status"], "DELIVERED", "{listed}");
    stop_dispatcher(dispatcher).await;
    app.teardown().await;
}
