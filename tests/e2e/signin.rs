//! Sign-ins and sign-ups under a flood: the password-hashing thread is shared fairly between
//! clients, logins that cannot concern an account cost no hashing, and a sign-in refused for
//! want of a slot is not a failed attempt. Clients are told apart by `X-Forwarded-For`, which
//! these gateways trust from loopback (where the test's requests come from).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ledgerflow::settings::GatewaySettings;
use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::{DEADLINE, TestApp, assert_error, spawn_app_configured};
use reqwest::StatusCode;

const PASSWORD: &str = "correct horse battery";

/// A gateway that takes client addresses from `X-Forwarded-For` set by loopback, changed
/// further by `configure`.
async fn behind_a_proxy(configure: impl FnOnce(&mut GatewaySettings)) -> TestApp {
    spawn_app_configured(0, |gateway| {
        gateway.trusted_proxy_header = Some("X-Forwarded-For".parse().unwrap());
        gateway.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        configure(gateway);
    })
    .await
}

/// POSTs `body` to `path` as the client at address `from`; status, body and how long it took.
async fn post(app: &TestApp, path: &str, from: &str, body: Value) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let response = app.http.post(app.url(path)).header("x-forwarded-for", from).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap(), started.elapsed())
}

fn email(name: &str) -> String {
    format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Until `stop`, one client floods logins, as fast as it is answered: `malformed` ones with an
/// email that cannot be an account, the others with well-formed emails nobody has (each a
/// new one, so no lockout ever stops them). Returns every answer's status and code.
async fn flood(app: &TestApp, from: &str, malformed: bool, stop: &AtomicBool) -> Vec<(bool, StatusCode, String)> {
    let mut answers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let email = if malformed { "not an email".to_owned() } else { email("ghost") };
        let (status, body, _) = post(app, "/api/auth/login", from, json!({"email": email, "password": "guess"})).await;
        answers.push((malformed, status, body["error"]["code"].as_str().unwrap_or_default().to_owned()));
        if status != StatusCode::UNAUTHORIZED {
            // Refused at once: a pause, so that the flood leaves the shared CPU to the test.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    answers
}

/// While one client floods logins, malformed and well-formed, people elsewhere sign up and
/// sign in. Before, the malformed ones each cost a full argon2 check and filled the hashing
/// queue, so the real sign-ins and sign-ups answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_logins_from_one_client_denies_nobody_else() {
    const FLOODERS: usize = 48;
    const PEOPLE: usize = 4;
    let app = Arc::new(behind_a_proxy(|_| {}).await);
    let attacker = "203.0.113.66";

    // Quiet first: a malformed email is refused exactly as a wrong password is, and no sooner
    // than a check takes (by a wide margin: only that it is not answered at once).
    let known = email("known");
    let (status, ..) =
        post(&app, "/api/auth/register", "198.51.100.1", json!({"email": known, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (wrong_status, wrong, wrong_took) =
        post(&app, "/api/auth/login", "198.51.100.1", json!({"email": known, "password": "wrong password"})).await;
    let (junk_status, junk, junk_took) =
        post(&app, "/api/auth/login", "198.51.100.1", json!({"email": "@@", "password": "wrong password"})).await;
    assert_error(&(wrong_status, wrong.clone()), StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
    assert_eq!((junk_status, &junk), (wrong_status, &wrong), "a malformed email answers as a wrong password");
    assert!(junk_took >= wrong_took / 4, "answered in {junk_took:?}, a wrong password in {wrong_took:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|i| {
            let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
            tokio::spawn(async move { flood(&app, attacker, i % 2 == 0, &stop).await })
        })
        .collect();
    // Let the flood fill whatever it can.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // People at other addresses (some behind one NAT) sign up, then in, a few at a time.
    let people = futures::future::join_all((0..PEOPLE).map(|i| {
        let app = Arc::clone(&app);
        async move {
            let from = format!("198.51.100.{}", 10 + i % 2);
            let me = email("person");
            let (signed_up, body, _) =
                post(&app, "/api/auth/register", &from, json!({"email": me, "password": PASSWORD})).await;
            assert_eq!(signed_up, StatusCode::CREATED, "sign-up from {from} during the flood: {body}");
            let (signed_in, body, _) =
                post(&app, "/api/auth/login", &from, json!({"email": me, "password": PASSWORD})).await;
            assert_eq!(signed_in, StatusCode::OK, "sign-in from {from} during the flood: {body}");
        }
    }));
    let done = tokio::time::timeout(DEADLINE, people).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for flooder in flooders {
        answers.extend(flooder.await.unwrap());
    }
    done.expect("people signed up and in within the deadline");

    // The flood's malformed logins were refused as wrong passwords, never shed; its
    // well-formed ones were checked or refused as its share's excess (429), never shed with
    // everyone else's (503).
    assert!(answers.iter().any(|(malformed, ..)| *malformed) && answers.iter().any(|(malformed, ..)| !*malformed));
    for (malformed, status, code) in &answers {
        let answer = (*status, code.as_str());
        if *malformed {
            assert_eq!(answer, (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"), "a malformed login of the flood");
        } else {
            assert!(
                matches!(
                    answer,
                    (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS")
                        | (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS")
                ),
                "a well-formed login of the flood was answered {status} {code}"
            );
        }
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for counted in ["ledgerflow_logins_malformed_email_total", "ledgerflow_password_hashes_limited_total"] {
        let value = metrics
            .lines()
            .find_map(|line| line.strip_prefix(counted).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("{counted} is not exported:\n{metrics}"));
        assert!(value > 0.0, "{counted} {value}");
    }
    Arc::into_inner(app).expect("the flood is over").teardown().await;
}

/// A person whose sign-ins are refused for want of a hashing slot (the gateway busy with
/// others, and the person's own client at its share) has not failed them: the password was
/// never checked. Before, each was counted first, so a person retrying through a flood locked
/// the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_refused_for_want_of_a_slot_do_not_lock_the_account() {
    const BUSY: usize = 24;
    const TRIES: usize = 12;
    let app = behind_a_proxy(|gateway| {
        gateway.login_max_failures = 3;
        gateway.hash_slots_per_client = 2;
    })
    .await;
    let (me, from) = (email("me"), "198.51.100.20");
    let (status, ..) = post(&app, "/api/auth/register", from, json!({"email": me, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED);

    // Others keep the hashing thread busy (one login each, from addresses of their own) while
    // this person's client sends a burst of sign-ins with a mistyped password.
    let busy = futures::future::join_all((0..BUSY).map(|i| {
        let from = format!("192.0.2.{}", i + 1);
        let body = json!({"email": email("busy"), "password": "guess"});
        let app = &app;
        async move { post(app, "/api/auth/login", &from, body).await.0 }
    }));
    let mine = futures::future::join_all(
        (0..TRIES).map(|_| post(&app, "/api/auth/login", from, json!({"email": me, "password": "mistyped"}))),
    );
    let (_, mine) = tokio::time::timeout(DEADLINE, async { tokio::join!(busy, mine) }).await.expect("answered in time");
    let checked = mine.iter().filter(|(status, ..)| *status == StatusCode::UNAUTHORIZED).count();
    let refused: Vec<_> = mine.iter().filter(|(status, ..)| *status != StatusCode::UNAUTHORIZED).collect();
    for (status, body, _) in &refused {
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            matches!(
                (*status, code),
                (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS")
                    | (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
            ),
            "refused for want of a slot, not locked out: {status} {body}"
        );
    }
    assert!(checked < 3, "{checked} of the mistyped sign-ins were checked; only slots' worth should be");

    // Only the checked ones counted: the right password still signs in.
    let (status, body, _) = post(&app, "/api/auth/login", from, json!({"email": me, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK, "after {checked} checked and {} refused sign-ins: {body}", refused.len());
    app.teardown().await;
}
