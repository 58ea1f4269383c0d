//! HTTP API behaviour: every endpoint and error code, against real services.

use ledgerflow_tests::serde_json::{Value, json};
use ledgerflow_tests::{DEADLINE, Pair, assert_error, spawn_app};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_login() {
    let app = spawn_app().await;
    let email = format!("Mixed.Case-{}@Example.com", uuid::Uuid::new_v4().simple());
    let (status, body) = app
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"email": email, "password": "long enough", "name": "Ann"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["role"], "USER");
    assert_eq!(body["user"]["email"], email.to_lowercase());
    assert_eq!(body["user"]["name"], "Ann");
    assert!(body["token"].as_str().is_some_and(|t| t.split('.').count() == 3));

    // Registration makes a USER; a body asking for a role is refused, not half-obeyed.
    let asked = app
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"email": format!("x{}@example.com", uuid::Uuid::new_v4().simple()), "password": "long enough", "role": "SYSTEM"})),
        )
        .await;
    assert_error(&asked, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(asked.1["error"]["field"], "role", "{}", asked.1);

    // The same email in another case is taken.
    let dup = app
        .call(
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"email": email.to_uppercase(), "password": "long enough"})),
        )
        .await;
    assert_error(&dup, StatusCode::CONFLICT, "EMAIL_TAKEN");

    for bad in [
        json!({"email": "not-an-email", "password": "long enough"}),
        json!({"email": "a@example.com", "password": "short"}),
        json!({"password": "long enough"}),
        json!({"email": "a@example.com"}),
        json!({"email": 7, "password": "long enough"}),
        json!({"email": "b@example.com", "password": "long enough", "name": ""}),
    ] {
        let got = app.call("POST", "/api/auth/register", None, Some(bad.clone())).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }

    let ok = app.call("POST", "/api/auth/login", None, Some(json!({"email": email, "password": "long enough"}))).await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.1);
    assert_eq!(ok.1["user"]["id"], body["user"]["id"]);
    let wrong =
        app.call("POST", "/api/auth/login", None, Some(json!({"email": email, "password": "not the one"}))).await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
    let unknown = app
        .call("POST", "/api/auth/login", None, Some(json!({"email": "nobody@example.com", "password": "long enough"})))
        .await;
    assert_error(&unknown, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
    assert_eq!(wrong.1, unknown.1, "unknown email and wrong password are indistinguishable");
    app.teardown().await;
}

/// Password guessing is bounded per email: after `login_max_failures` failed sign-ins within
/// the window, the email is refused (429, even with the right password) until the window ends;
/// unknown emails alike, and a success clears the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_sign_ins_lock_the_email_until_the_window_ends() {
    let app = ledgerflow_tests::spawn_app_configured(1, |c| {
        c.login_max_failures = 3;
        c.login_window = std::time::Duration::from_secs(3).into();
    })
    .await;
    let login = |email: String, password: &'static str| {
        let request = app.http.post(app.url("/api/auth/login")).json(&json!({"email": email, "password": password}));
        async move {
            let response = request.send().await.unwrap();
            let after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (response.status(), after, response.json::<Value>().await.unwrap())
        }
    };
    let email = |name: &str| format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
    let (ann, bea, ghost) = (email("ann"), email("bea"), email("ghost"));
    for who in [&ann, &bea] {
        let body = json!({"email": who, "password": "correct horse battery"});
        assert_eq!(app.call("POST", "/api/auth/register", None, Some(body)).await.0, StatusCode::CREATED);
    }

    // Two failures, then a success, clears the count: two more are still plain 401s.
    for password in ["wrong", "wrong", "correct horse battery", "wrong", "wrong"] {
        let (status, _, body) = login(ann.clone(), password).await;
        let expected = if password == "wrong" { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
        assert_eq!(status, expected, "{body}");
    }
    // The third failure in the window locks Ann out, the right password included.
    assert_eq!(login(ann.clone(), "wrong").await.0, StatusCode::UNAUTHORIZED);
    let (status, retry_after, body) = login(ann.clone(), "correct horse battery").await;
    assert_error(&(status, body), StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_ATTEMPTS");
    assert!(retry_after.is_some_and(|s| (1..=4).contains(&s)), "Retry-After {retry_after:?}");
    // An unknown email is counted alike (a lockout says nothing about who exists) and Bea
    // is not affected.
    for _ in 0..3 {
        assert_eq!(login(ghost.clone(), "wrong").await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login(ghost.clone(), "wrong").await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login(bea.clone(), "correct horse battery").await.0, StatusCode::OK);
    // Guesses sent all at once are counted before any is checked: exactly three are tried.
    let cat = email("cat");
    let burst = futures::future::join_all((0..12).map(|_| login(cat.clone(), "wrong"))).await;
    let statuses: Vec<_> = burst.iter().map(|(status, ..)| status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 9, "{statuses:?}");

    // When the window ends, Ann signs in again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after.unwrap_or(4))).await;
    assert_eq!(login(ann.clone(), "correct horse battery").await.0, StatusCode::OK);
    app.teardown().await;
}

/// A flood of sign-ups from many clients is shed with 503 once the hashing queue is full,
/// rather than queued without bound, and transfers are accepted meanwhile. (One client alone
/// gets no more than its share: `signin.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sign_ups_is_shed_with_503_while_transfers_flow() {
    const FLOOD: usize = 150;
    let app = ledgerflow_tests::spawn_app_configured(1, |gateway| {
        gateway.trusted_proxy_header = Some("X-Forwarded-For".parse().unwrap());
        gateway.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let Pair { alice, a, b, .. } = app.alice_and_bob().await;
    app.fund(&a, 100).await;
    let sign_up = |i: usize| {
        let email = format!("flood-{i}-{}@example.com", uuid::Uuid::new_v4().simple());
        let request = app
            .http
            .post(app.url("/api/auth/register"))
            .header("x-forwarded-for", format!("10.0.{}.{}", i / 200, i % 200 + 1))
            .json(&json!({"email": email, "password": "long enough"}));
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response.headers().contains_key("retry-after");
            (response.status(), retry_after, response.json::<Value>().await.unwrap())
        }
    };
    let flood = futures::future::join_all((0..FLOOD).map(sign_up));
    let (answers, during) = tokio::join!(flood, app.transfer(&alice, &a, &b, json!(5), "during-the-flood"));
    assert_eq!(during.0, StatusCode::ACCEPTED, "{during:?}");
    let created = answers.iter().filter(|(status, ..)| *status == StatusCode::CREATED).count();
    let shed: Vec<_> = answers.iter().filter(|(status, ..)| *status == StatusCode::SERVICE_UNAVAILABLE).collect();
    assert_eq!(created + shed.len(), FLOOD, "only 201 or 503: {answers:?}");
    assert!(created >= 32 && !shed.is_empty(), "{created} created, {} shed", shed.len());
    for (_, retry_after, body) in shed {
        assert!(*retry_after, "{body}");
        assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE", "{body}");
    }
    // Once it has passed, sign-ups are served again.
    app.register().await;
    app.teardown().await;
}

/// Sends `start`, then one space every 100 ms, never finishing; returns whatever the server
/// answers (empty if it only closes).
async fn trickle(addr: std::net::SocketAddr, start: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(start.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        while write.write_all(b" ").await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = read.read_to_end(&mut answer).await;
    writer.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A transfer request's whole head and the first byte of its body, to be trickled.
fn body_start(token: &str) -> String {
    format!(
        "POST /transactions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
    )
}

/// A slow client holds neither a request nor a stopping gateway: a body must arrive whole
/// within the deadline (408 after it, however steadily it trickles), a stop answers long polls
/// at once, and it waits for open requests no longer than the drain limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_get_408_and_cannot_hold_up_a_stopping_gateway() {
    use std::time::{Duration, Instant};
    let mut app = spawn_app().await;
    let Pair { alice, a, b, .. } = app.alice_and_bob().await;
    app.fund(&a, 100).await;

    let quick = app
        .gateway_with(&ledgerflow_tests::amqp_uri_as(ledgerflow_tests::GATEWAY_BROKER_USER), |c| {
            c.body_deadline = Some(Duration::from_secs(1));
            c.head_deadline = Some(Duration::from_secs(1));
        })
        .await;
    let started = Instant::now();
    let answer = tokio::time::timeout(DEADLINE, trickle(quick.addr, body_start(&alice.token))).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"REQUEST_TIMEOUT""#), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // A head that never ends: the connection is closed after the head deadline.
    let started = Instant::now();
    let head = "GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ".to_owned();
    let answer = tokio::time::timeout(DEADLINE, trickle(quick.addr, head)).await.unwrap();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // A gateway with a long body deadline, a pending long poll and a trickling client.
    let patient = app
        .gateway_with(&ledgerflow_tests::amqp_uri_as(ledgerflow_tests::GATEWAY_BROKER_USER), |c| {
            c.body_deadline = Some(Duration::from_secs(600));
            c.drain_limit = Some(Duration::from_secs(2));
        })
        .await;
    app.stop_worker(0).await;
    let (_, t) = app.transfer(&alice, &a, &b, json!(5), "stays-pending").await;
    let id = t["transaction"]["id"].as_str().unwrap().to_owned();
    let long_poll =
        app.http.get(format!("{}/transactions/{id}?wait=30", patient.base)).bearer_auth(&alice.token).send();
    let long_poll = tokio::spawn(async move { long_poll.await.unwrap().json::<Value>().await.unwrap() });
    let slow = tokio::spawn(trickle(patient.addr, body_start(&alice.token)));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stopping = Instant::now();
    patient.stop.cancel();
    let polled = tokio::time::timeout(Duration::from_secs(5), long_poll).await.expect("the long poll answers").unwrap();
    assert_eq!(polled["transaction"]["status"], "PENDING", "{polled}");
    assert!(stopping.elapsed() < Duration::from_secs(1), "long poll took {:?}", stopping.elapsed());
    let served = tokio::time::timeout(Duration::from_secs(10), patient.served).await.expect("the gateway stops");
    assert!(served.unwrap().is_ok());
    assert!(stopping.elapsed() < Duration::from_secs(5), "stop took {:?}", stopping.elapsed());
    slow.abort();
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_authenticates_and_bad_tokens_do_not() {
    let app = spawn_app().await;
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder().cookie_provider(jar).build().unwrap();
    let email = format!("c{}@example.com", uuid::Uuid::new_v4().simple());
    let resp = client
        .post(app.url("/api/auth/register"))
        .json(&json!({"email": email, "password": "long enough"}))
        .send()
        .await
        .unwrap();
    let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    let token = resp.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert!(cookie.starts_with("token="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    // The cookie alone is enough.
    let resp = client.post(app.url("/api/accounts")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // The scheme's case does not matter (RFC 9110); the scheme does.
    for (scheme, expected) in
        [("BEARER", StatusCode::OK), ("bearer", StatusCode::OK), ("Basic", StatusCode::UNAUTHORIZED)]
    {
        let header = format!("{scheme} {token}");
        let resp = app.http.get(app.url("/api/accounts")).header("authorization", header).send().await.unwrap();
        assert_eq!(resp.status(), expected, "{scheme}");
    }
    assert_error(&app.call("GET", "/api/accounts", None, None).await, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    assert_error(
        &app.call("GET", "/api/accounts", Some("not.a.jwt"), None).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    // A token signed with another secret is refused.
    let forged =
        ledgerflow_gateway::JwtKeys::new(b"another-secret-another-secret-another", std::time::Duration::from_secs(60))
            .issue(ledgerflow_domain::UserId::generate(), ledgerflow_domain::Role::System, 0)
            .unwrap();
    assert_error(
        &app.call("GET", "/api/accounts", Some(&forged), None).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    app.teardown().await;
}

/// Polls until `token` is refused, for at most `within`.
async fn refused_within(app: &ledgerflow_tests::TestApp, token: &str, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (status, body) = app.call("GET", "/api/accounts", Some(token), None).await;
        if status == StatusCode::UNAUTHORIZED {
            return;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(std::time::Instant::now() < deadline, "the token is still honoured after {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_every_session_and_so_do_an_operator_and_a_new_system_password() {
    let recheck = std::time::Duration::from_secs(1);
    let app = ledgerflow_tests::spawn_app_configured(1, |c| c.session_recheck = recheck.into()).await;
    let email = format!("s{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, _) =
        app.call("POST", "/api/auth/register", None, Some(json!({"email": email, "password": "long enough"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (laptop, phone) = (app.login(&email, "long enough").await, app.login(&email, "long enough").await);
    assert_eq!(app.call("GET", "/api/accounts", Some(&phone.token), None).await.0, StatusCode::OK);

    // Signing out on one device ends every session, at once on this gateway, and clears the cookie.
    let logout = || app.http.post(app.url("/api/auth/logout")).bearer_auth(&laptop.token);
    assert_eq!(logout().send().await.unwrap().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "not sent as JSON");
    let out = logout().header("content-type", "application/json").send().await.unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let cleared = out.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cleared.starts_with("token=;") && cleared.contains("Max-Age=0"), "{cleared}");
    for token in [&laptop.token, &phone.token] {
        assert_error(
            &app.call("GET", "/api/accounts", Some(token), None).await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        );
    }
    assert_error(&app.call("POST", "/api/auth/logout", None, None).await, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");

    // An operator ends them from outside any gateway: honoured at most `recheck` longer.
    let again = app.login(&email, "long enough").await;
    assert_eq!(app.call("GET", "/api/accounts", Some(&again.token), None).await.0, StatusCode::OK);
    let mut sign_out = app.cli();
    sign_out.args(["admin", "sign-out", "--email", &email]);
    let out = ledgerflow_tests::cli_output(sign_out, DEADLINE).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    refused_within(&app, &again.token, recheck * 3).await;

    // Re-applying the SYSTEM password it has (as every gateway does at start) ends nothing;
    // a new one ends its sessions, say after a leaked token minted money.
    let system = |password: &str| {
        let mut cmd = app.cli();
        cmd.args(["admin", "create-system-user", "--email", ledgerflow_tests::SYSTEM_EMAIL])
            .env("LEDGERFLOW_SYSTEM_PASSWORD", password);
        ledgerflow_tests::cli_output(cmd, DEADLINE)
    };
    let out = system(ledgerflow_tests::SYSTEM_PASSWORD).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(recheck * 2).await;
    assert_eq!(app.call("GET", "/api/accounts", Some(&app.system.token), None).await.0, StatusCode::OK);
    let out = system("a brand new system password").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    refused_within(&app, &app.system.token, recheck * 3).await;
    app.login(ledgerflow_tests::SYSTEM_EMAIL, "a brand new system password").await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_needs_the_current_one_and_ends_every_other_session() {
    let app = ledgerflow_tests::spawn_app_configured(1, |c| c.login_max_failures = 3).await;
    let email = format!("p{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, _) =
        app.call("POST", "/api/auth/register", None, Some(json!({"email": email, "password": "first password"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (laptop, phone) = (app.login(&email, "first password").await, app.login(&email, "first password").await);
    let change = |token: String, current: &str, new: &str| {
        let body = json!({"currentPassword": current, "newPassword": new});
        let app = &app;
        async move { app.call("POST", "/api/auth/password", Some(&token), Some(body)).await }
    };

    // A stolen token is not enough: the current password is asked for, and checked.
    let system = change(app.system.token.clone(), ledgerflow_tests::SYSTEM_PASSWORD, "second password").await;
    assert_error(&system, StatusCode::FORBIDDEN, "FORBIDDEN");
    let wrong = change(phone.token.clone(), "a guess", "second password").await;
    assert_error(&wrong, StatusCode::FORBIDDEN, "WRONG_PASSWORD");
    let short = change(phone.token.clone(), "first password", "short").await;
    assert_error(&short, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(short.1["error"]["field"], "newPassword");
    assert_eq!(app.call("GET", "/api/accounts", Some(&laptop.token), None).await.0, StatusCode::OK, "nothing changed");

    let (status, changed) = change(phone.token.clone(), "first password", "second password").await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let fresh = changed["token"].as_str().unwrap();
    assert_eq!(app.call("GET", "/api/accounts", Some(fresh), None).await.0, StatusCode::OK);
    for old in [&laptop.token, &phone.token] {
        assert_error(
            &app.call("GET", "/api/accounts", Some(old), None).await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        );
    }
    let old_password =
        app.call("POST", "/api/auth/login", None, Some(json!({"email": email, "password": "first password"}))).await;
    assert_error(&old_password, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS");
    app.login(&email, "second password").await;

    // Wrong current passwords count with failed sign-ins (the successes above cleared the
    // count): after three, this test's limit, both are locked out.
    let session = app.login(&email, "second password").await;
    for _ in 0..3 {
        assert_error(
            &change(session.token.clone(), "a guess", "third password").await,
            StatusCode::FORBIDDEN,
            "WRONG_PASSWORD",
        );
    }
    let locked = change(session.token.clone(), "second password", "third password").await;
    assert_error(&locked, StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_ATTEMPTS");
    let login =
        app.call("POST", "/api/auth/login", None, Some(json!({"email": email, "password": "second password"}))).await;
    assert_error(&login, StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_ATTEMPTS");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_private_and_only_system_changes_their_status() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let bob = app.register().await;

    // A state-changing request without a JSON body type is a form's shape: refused.
    let form = app.call("POST", "/api/accounts", Some(&alice.token), None).await;
    assert_error(&form, StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
    let (status, acct) = app.call("POST", "/api/accounts", Some(&alice.token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{acct}");
    assert_eq!(acct["status"], "ACTIVE");
    assert_eq!(acct["currency"], "USD");
    assert_eq!(acct["ownerId"], alice.id.as_str());
    assert!(acct["createdAt"].is_string());
    let a = acct["id"].as_str().unwrap();
    let (status, eur) = app.call("POST", "/api/accounts", Some(&alice.token), Some(json!({"currency": "EUR"}))).await;
    assert_eq!((status, eur["currency"].clone()), (StatusCode::CREATED, json!("EUR")));
    for bad in ["usd", "XYZ", "EURO"] {
        let got = app.call("POST", "/api/accounts", Some(&alice.token), Some(json!({"currency": bad}))).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }

    let (_, mine) = app.call("GET", "/api/accounts", Some(&alice.token), None).await;
    assert_eq!(mine["accounts"].as_array().unwrap().len(), 2);
    let (_, page) = app.call("GET", "/api/accounts?limit=1", Some(&alice.token), None).await;
    assert_eq!(page["accounts"].as_array().unwrap().len(), 1);
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, rest) = app.call("GET", &format!("/api/accounts?limit=1&cursor={cursor}"), Some(&alice.token), None).await;
    assert_eq!(rest["accounts"][0]["id"], eur["id"]);
    let (_, theirs) = app.call("GET", "/api/accounts", Some(&bob.token), None).await;
    assert_eq!(theirs["accounts"], json!([]));

    assert_eq!(app.call("GET", &format!("/api/accounts/{a}"), Some(&alice.token), None).await.1["id"], a);
    assert_eq!(app.call("GET", &format!("/api/accounts/{a}"), Some(&app.system.token), None).await.0, StatusCode::OK);
    for path in
        [format!("/api/accounts/{a}"), format!("/api/accounts/{a}/balance"), format!("/api/accounts/{a}/entries")]
    {
        let got = app.call("GET", &path, Some(&bob.token), None).await;
        assert_error(&got, StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND");
    }
    let unknown = uuid::Uuid::now_v7();
    assert_error(
        &app.call("GET", &format!("/api/accounts/{unknown}"), Some(&alice.token), None).await,
        StatusCode::NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    );
    assert_error(
        &app.call("GET", "/api/accounts/not-a-uuid", Some(&alice.token), None).await,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    );
    let balance = app.call("GET", &format!("/api/accounts/{a}/balance"), Some(&alice.token), None).await.1;
    let nothing_held = json!({"accountId": a, "currency": "USD", "balance": 0, "pendingDebits": 0, "pendingCredits": 0,
        "available": 0, "overdraftLimit": 0});
    assert_eq!(balance, nothing_held);

    let path = format!("/api/accounts/{a}/status");
    let by_user = app.call("PATCH", &path, Some(&alice.token), Some(json!({"status": "SUSPENDED"}))).await;
    assert_error(&by_user, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, suspended) =
        app.call("PATCH", &path, Some(&app.system.token), Some(json!({"status": "SUSPENDED"}))).await;
    assert_eq!((status, suspended["status"].clone()), (StatusCode::OK, json!("SUSPENDED")));
    let bad = app.call("PATCH", &path, Some(&app.system.token), Some(json!({"status": "FROZEN"}))).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    let missing = app
        .call(
            "PATCH",
            &format!("/api/accounts/{unknown}/status"),
            Some(&app.system.token),
            Some(json!({"status": "CLOSED"})),
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND");
    app.teardown().await;
}

/// A user owns at most 100 accounts, however many openings race: each counts inside a
/// transaction that conflicts with the user's other openings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_owns_at_most_100_accounts_even_when_opening_them_at_once() {
    use futures::StreamExt;
    let app = spawn_app().await;
    let Pair { alice, bob, .. } = app.alice_and_bob().await;
    let body = json!({"currency": "USD"});
    let statuses: Vec<StatusCode> = futures::stream::iter(0..110)
        .map(|_| async { app.call("POST", "/api/accounts", Some(&alice.token), Some(body.clone())).await.0 })
        .buffer_unordered(16)
        .collect()
        .await;
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    assert_eq!(created, 99, "alice_and_bob opened one already: {statuses:?}");
    let refused = app.call("POST", "/api/accounts", Some(&alice.token), Some(body.clone())).await;
    assert_error(&refused, StatusCode::CONFLICT, "ACCOUNT_LIMIT_REACHED");
    assert_eq!(refused.1["error"]["message"], "a user may own at most 100 accounts");
    let mut listed = 0;
    let mut next = String::from("/api/accounts?limit=100");
    loop {
        let (_, page) = app.call("GET", &next, Some(&alice.token), None).await;
        listed += page["accounts"].as_array().unwrap().len();
        let Some(cursor) = page["nextCursor"].as_str() else { break };
        next = format!("/api/accounts?limit=100&cursor={cursor}");
    }
    assert_eq!(listed, 100);
    // The cap is per user.
    let (status, _) = app.call("POST", "/api/accounts", Some(&bob.token), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    app.teardown().await;
}

/// Money is never stranded in a CLOSED account: only an empty account closes, even while
/// transfers into it are in flight, and CLOSED is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_empty_account_closes_even_under_incoming_transfers_and_closed_is_final() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    let app_ref = &app;
    let set_status = move |id: String, status: &'static str| async move {
        let body = json!({"status": status});
        app_ref.call("PATCH", &format!("/api/accounts/{id}/status"), Some(&app_ref.system.token), Some(body)).await
    };
    app.fund(&a, 1_000).await;
    app.fund(&b, 500).await;

    let full = set_status(b.clone(), "CLOSED").await;
    assert_error(&full, StatusCode::CONFLICT, "ACCOUNT_NOT_EMPTY");
    assert!(full.1["error"]["message"].as_str().unwrap().contains("holds 500 (minor units of USD)"), "{full:?}");
    assert_eq!(app.call("GET", &format!("/api/accounts/{b}"), Some(&bob.token), None).await.1["status"], "ACTIVE");

    // Emptied, it closes; asking again gets the same answer; it never reopens.
    let (_, out) = app.transfer(&bob, &b, &a, json!(500), "empty-it").await;
    app.wait_terminal(&bob.token, out["transaction"]["id"].as_str().unwrap()).await;
    for _ in 0..2 {
        let (status, closed) = set_status(b.clone(), "CLOSED").await;
        assert_eq!((status, closed["status"].clone()), (StatusCode::OK, json!("CLOSED")), "{closed}");
    }
    for back in ["ACTIVE", "SUSPENDED"] {
        assert_error(&set_status(b.clone(), back).await, StatusCode::CONFLICT, "ACCOUNT_CLOSED");
    }
    let (_, t) = app.transfer(&alice, &a, &b, json!(10), "into-closed").await;
    let done = app.wait_terminal(&alice.token, t["transaction"]["id"].as_str().unwrap()).await;
    assert_eq!(done["failureReason"], "ACCOUNT_NOT_ACTIVE");

    // Closing races a transfer into an empty account, the close sent a little later each
    // round so that it lands before, during and after the worker's commit: either the
    // account closes and the transfer fails, or the transfer completes and the close is
    // refused. Never a CLOSED account holding money.
    let mut outcomes = std::collections::BTreeSet::new();
    for round in 0..16_u64 {
        let c = app.open_account(&bob).await;
        let key = format!("race-{round}");
        let (sent, closed) = tokio::join!(app.transfer(&alice, &a, &c, json!(1), &key), async {
            tokio::time::sleep(std::time::Duration::from_millis(round * 2)).await;
            set_status(c.clone(), "CLOSED").await
        });
        assert_eq!(sent.0, StatusCode::ACCEPTED, "{sent:?}");
        let t = app.wait_terminal(&alice.token, sent.1["transaction"]["id"].as_str().unwrap()).await;
        let balance = app.balance(&bob.token, &c).await;
        if closed.0 == StatusCode::OK {
            assert_eq!((balance, t["failureReason"].clone()), (0, json!("ACCOUNT_NOT_ACTIVE")), "round {round}: {t}");
        } else {
            assert_error(&closed, StatusCode::CONFLICT, "ACCOUNT_NOT_EMPTY");
            assert_eq!((balance, t["status"].clone()), (1, json!("COMPLETED")), "round {round}: {t}");
        }
        outcomes.insert(closed.0.as_u16());
    }
    eprintln!("close outcomes seen: {outcomes:?}");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_requests_are_validated_before_anything_is_recorded() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;

    let base = json!({"fromAccount": a, "toAccount": b, "amount": 100, "idempotencyKey": "k1"});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        if value.is_null() {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value;
        }
        body
    };
    let cases = [
        ("amount", json!(0)),
        ("amount", json!(-5)),
        ("amount", json!(1.5)),
        ("amount", json!(100.0)),
        ("amount", json!("100")),
        ("amount", json!(1_000_000_000_000_001_i64)),
        ("amount", json!(u64::MAX)),
        ("amount", json!(1e30)),
        ("amount", Value::Null),
        ("toAccount", json!(a)),
        ("toAccount", json!("nope")),
        // One spelling per id: not braced, not without hyphens.
        ("toAccount", json!(format!("{{{b}}}"))),
        ("toAccount", json!(b.replace('-', ""))),
        ("toAccount", Value::Null),
        ("fromAccount", json!(42)),
        ("fromAccount", Value::Null),
        ("idempotencyKey", Value::Null),
        ("idempotencyKey", json!("")),
        ("idempotencyKey", json!("x".repeat(129))),
        ("idempotencyKey", json!("has spaces")),
        ("description", json!("d".repeat(501))),
        ("currency", json!("usd")),
        // A name the endpoint does not take is refused, not ignored: a misspelt field would
        // otherwise be silently dropped.
        ("descripton", json!("rent")),
        ("fee", json!(5)),
    ];
    for (field, value) in cases {
        let got = app.call("POST", "/transactions", Some(&alice.token), Some(with(field, value.clone()))).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(got.1["error"]["field"], field, "{field}={value}: {}", got.1);
    }
    // Exactly the maximum is fine.
    let max = app
        .call("POST", "/transactions", Some(&alice.token), Some(with("amount", json!(1_000_000_000_000_000_i64))))
        .await;
    assert_eq!(max.0, StatusCode::ACCEPTED, "{}", max.1);

    // Only the owner of fromAccount may send from it; unknown accounts are 404.
    let stolen = app.call("POST", "/transactions", Some(&bob.token), Some(with("idempotencyKey", json!("k2")))).await;
    assert_error(&stolen, StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND");
    let nowhere = app
        .call(
            "POST",
            "/transactions",
            Some(&alice.token),
            Some(json!({"fromAccount": a, "toAccount": uuid::Uuid::now_v7(), "amount": 1, "idempotencyKey": "k3"})),
        )
        .await;
    assert_error(&nowhere, StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND");
    // A funding account only sends (initial funds): as a receiver it does not exist.
    let funding = ledgerflow_domain::AccountId::funding(ledgerflow_domain::Currency::USD);
    let to_funding = json!({"fromAccount": a, "toAccount": funding, "amount": 1, "idempotencyKey": "k5"});
    let got = app.call("POST", "/transactions", Some(&alice.token), Some(to_funding)).await;
    assert_error(&got, StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND");

    // Malformed bodies.
    assert_error(
        &app.call_raw("POST", "/transactions", Some(&alice.token), Some("application/json"), b"{not json".to_vec())
            .await,
        StatusCode::BAD_REQUEST,
        "INVALID_JSON",
    );
    assert_error(
        &app.call_raw("POST", "/transactions", Some(&alice.token), Some("application/json"), b"[1,2]".to_vec()).await,
        StatusCode::BAD_REQUEST,
        "INVALID_JSON",
    );
    // A key given twice is refused, not read as whichever copy a parser happens to keep.
    let twice = format!(r#"{{"fromAccount":"{a}","toAccount":"{b}","amount":100,"amount":5,"idempotencyKey":"k4"}}"#);
    let got = app.call_raw("POST", "/transactions", Some(&alice.token), Some("application/json"), twice.into()).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "INVALID_JSON");
    assert!(got.1["error"]["message"].as_str().unwrap().contains("`amount` appears twice"), "{}", got.1);
    // JSON must say so, in UTF-8: a body of another type, of none, or in another charset
    // (which would be read as UTF-8 regardless) is refused.
    let valid = serde_json::to_vec(&with("idempotencyKey", json!("k6"))).unwrap();
    for content_type in [Some("text/plain"), None, Some("application/json; charset=latin1")] {
        assert_error(
            &app.call_raw("POST", "/transactions", Some(&alice.token), content_type, valid.clone()).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        );
    }
    let huge = format!("{{\"description\":\"{}\"}}", "x".repeat(100_000)).into_bytes();
    assert_error(
        &app.call_raw("POST", "/transactions", Some(&alice.token), Some("application/json"), huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );
    // Unauthenticated transfers are refused before anything else.
    assert_error(
        &app.call("POST", "/transactions", None, Some(base)).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );

    // Nothing but the one valid request was recorded.
    let (_, listed) = app.call("GET", "/transactions", Some(&alice.token), None).await;
    assert_eq!(listed["transactions"].as_array().unwrap().len(), 1, "{listed}");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_scoped_to_the_caller_and_refuse_a_different_body() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    app.fund(&b, 1_000).await;

    let (status, first) = app.transfer(&alice, &a, &b, json!(100), "shared-key").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert!(first["transaction"]["createdAt"].is_string());
    assert_eq!(first["transaction"]["idempotencyKey"], "shared-key");
    let reuse = app.transfer(&alice, &a, &b, json!(101), "shared-key").await;
    assert_error(&reuse, StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED");
    // The same key from another user is another transaction.
    let (status, theirs) = app.transfer(&bob, &b, &a, json!(100), "shared-key").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{theirs}");
    assert_ne!(theirs["transaction"]["id"], first["transaction"]["id"]);
    for t in [&first, &theirs] {
        let id = t["transaction"]["id"].as_str().unwrap();
        assert_eq!(app.wait_terminal(&app.system.token, id).await["status"], "COMPLETED");
    }
    assert_eq!(app.balance(&alice.token, &a).await, 1_000);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_funds_are_system_only_and_keep_the_original_spelling() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let a = app.open_account(&alice).await;
    let body = |key: &str| json!({"toAccount": a, "amount": 500, "idempotencyKey": key});

    let by_user = app.call("POST", "/transactions/system/initial-funds", Some(&alice.token), Some(body("u1"))).await;
    assert_error(&by_user, StatusCode::FORBIDDEN, "FORBIDDEN");
    let mut ids = Vec::new();
    for (i, path) in [
        "/transactions/system/initial-funds",
        "/transactions/system/intial-funds",
        "/api/transactions/system/initial-funds",
        "/api/transactions/system/intial-funds",
    ]
    .iter()
    .enumerate()
    {
        let (status, t) = app.call("POST", path, Some(&app.system.token), Some(body(&format!("f{i}")))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{path}: {t}");
        assert_eq!(t["transaction"]["kind"], "INITIAL_FUNDS");
        ids.push(t["transaction"]["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(app.wait_terminal(&alice.token, id).await["status"], "COMPLETED");
    }
    assert_eq!(app.balance(&alice.token, &a).await, 2_000);
    let missing = app
        .call(
            "POST",
            "/transactions/system/initial-funds",
            Some(&app.system.token),
            Some(json!({"toAccount": uuid::Uuid::now_v7(), "amount": 5, "idempotencyKey": "m"})),
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_visible_to_their_parties_only_and_list_with_filters() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let bob = app.register().await;
    let eve = app.register().await;
    let a = app.open_account(&alice).await;
    let b = app.open_account(&bob).await;
    app.fund(&a, 100).await;
    // Commands are not ordered among themselves, so the second is sent once the first is done.
    let (_, ok) = app.transfer(&alice, &a, &b, json!(60), "t1").await;
    let ok_id = ok["transaction"]["id"].as_str().unwrap();
    app.wait_terminal(&alice.token, ok_id).await;
    let (_, too_much) = app.transfer(&alice, &a, &b, json!(60), "t2").await;
    let fail_id = too_much["transaction"]["id"].as_str().unwrap();
    let failed = app.wait_terminal(&alice.token, fail_id).await;
    assert_eq!(failed["failureReason"], "INSUFFICIENT_FUNDS");

    let path = format!("/transactions/{ok_id}");
    assert_eq!(app.call("GET", &path, Some(&bob.token), None).await.0, StatusCode::OK);
    assert_eq!(app.call("GET", &format!("/api{path}"), Some(&alice.token), None).await.0, StatusCode::OK);
    assert_error(&app.call("GET", &path, Some(&eve.token), None).await, StatusCode::NOT_FOUND, "TRANSACTION_NOT_FOUND");
    assert_error(
        &app.call("GET", &format!("/transactions/{}", uuid::Uuid::now_v7()), Some(&alice.token), None).await,
        StatusCode::NOT_FOUND,
        "TRANSACTION_NOT_FOUND",
    );
    assert_error(
        &app.call("GET", "/transactions/xyz", Some(&alice.token), None).await,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    );

    let list = |token: String, query: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app.call("GET", &format!("/transactions{query}"), Some(&token), None).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            body["transactions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // Newest first; Bob sees the transfers into his account, Eve sees nothing.
    assert_eq!(list(alice.token.clone(), "?limit=2").await, vec![fail_id.to_owned(), ok_id.to_owned()]);
    assert_eq!(list(bob.token.clone(), "").await.len(), 2);
    assert_eq!(list(eve.token.clone(), "").await, Vec::<String>::new());
    assert_eq!(list(alice.token.clone(), "?status=FAILED").await, vec![fail_id.to_owned()]);
    assert_eq!(list(alice.token.clone(), "?status=COMPLETED&limit=1").await, vec![ok_id.to_owned()]);
    let (_, page) = app.call("GET", "/transactions?limit=1", Some(&alice.token), None).await;
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, next) = app.call("GET", &format!("/transactions?limit=1&cursor={cursor}"), Some(&alice.token), None).await;
    assert_eq!(next["transactions"][0]["id"], ok_id);
    let acct_query = format!("/transactions?account={a}");
    assert_error(
        &app.call("GET", &acct_query, Some(&eve.token), None).await,
        StatusCode::NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    );
    let (_, system_view) = app.call("GET", &acct_query, Some(&app.system.token), None).await;
    assert_eq!(system_view["transactions"].as_array().unwrap().len(), 3, "funding plus two transfers");
    for bad in ["?status=DONE", "?limit=0", "?limit=101", "?limit=x", "?cursor=nope"] {
        let got = app.call("GET", &format!("/transactions{bad}"), Some(&alice.token), None).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }
    // A misspelt filter would otherwise list every transaction instead of one account's, and
    // a parameter given twice has no one meaning.
    for (path, field) in [
        (format!("/transactions?acount={a}"), "acount"),
        ("/transactions?limit=1&limit=2".to_owned(), "limit"),
        (format!("/transactions/{ok_id}?wait=1&wait=30"), "wait"),
        (format!("/transactions/{ok_id}?timeout=5"), "timeout"),
        ("/api/accounts?page=2".to_owned(), "page"),
        (format!("/api/accounts/{a}/entries?before=3"), "before"),
        // An endpoint that reads no query refuses one: this is not a balance as of that date.
        (format!("/api/accounts/{a}/balance?asOf=2026-01-01"), "asOf"),
        // A bad value is named by the parameter that carried it.
        ("/transactions?account=zz".to_owned(), "account"),
        (format!("/api/accounts/{}", a.replace('-', "")), "accountId"),
    ] {
        let got = app.call("GET", &path, Some(&alice.token), None).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(got.1["error"]["field"], field, "{path}: {}", got.1);
    }
    let dry = json!({"fromAccount": a, "toAccount": b, "amount": 1, "idempotencyKey": "dry"});
    let got = app.call("POST", "/transactions?dryRun=true", Some(&alice.token), Some(dry)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    assert_eq!(got.1["error"]["message"], "query parameter `dryRun` is not one this endpoint takes (it takes none)");

    // Entries: newest first, paginated by sequence.
    let (_, page) = app.call("GET", &format!("/api/accounts/{a}/entries?limit=1"), Some(&alice.token), None).await;
    assert_eq!(page["entries"][0]["type"], "DEBIT");
    assert_eq!(page["entries"][0]["balanceAfter"], 40);
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, older) =
        app.call("GET", &format!("/api/accounts/{a}/entries?limit=5&cursor={cursor}"), Some(&alice.token), None).await;
    assert_eq!(older["entries"].as_array().unwrap().len(), 1);
    assert_eq!(older["entries"][0]["type"], "CREDIT");
    assert_eq!(older["nextCursor"], Value::Null);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_currencies_are_refused_at_once_and_inactive_accounts_fail_in_the_worker() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    let (_, eur) = app.call("POST", "/api/accounts", Some(&bob.token), Some(json!({"currency": "EUR"}))).await;
    let eur = eur["id"].as_str().unwrap();
    app.fund(&a, 1_000).await;
    // ISO 4217 also lists codes that are no money to hold: "no currency", testing, metals,
    // fund codes, superseded currencies.
    for code in ["XXX", "XTS", "XAU", "USN", "HRK"] {
        let got = app.call("POST", "/api/accounts", Some(&bob.token), Some(json!({"currency": code}))).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert_eq!(got.1["error"]["field"], "currency", "{code}");
    }

    // Currencies never change, so the gateway refuses the pair before recording anything
    // (the worker's own check is in tests/e2e/queue.rs, for upstream commands).
    let refused = app.transfer(&alice, &a, eur, json!(10), "fx").await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "CURRENCY_MISMATCH");
    assert_eq!(
        refused.1["error"]["message"],
        "fromAccount holds USD and toAccount holds EUR; a transfer moves one currency"
    );
    // A request may name the currency it means; the accounts' must be that one.
    let body = |currency: &str, key: &str| json!({"fromAccount": a, "toAccount": b, "amount": 10, "currency": currency, "idempotencyKey": key});
    let asked = app.call("POST", "/transactions", Some(&alice.token), Some(body("EUR", "fx-eur"))).await;
    assert_error(&asked, StatusCode::UNPROCESSABLE_ENTITY, "CURRENCY_MISMATCH");
    assert_eq!(asked.1["error"]["message"], "the request names EUR but the accounts hold USD");
    let funding = app
        .call(
            "POST",
            "/transactions/system/initial-funds",
            Some(&app.system.token),
            Some(json!({"toAccount": eur, "amount": 5, "currency": "USD", "idempotencyKey": "fx-fund"})),
        )
        .await;
    assert_error(&funding, StatusCode::UNPROCESSABLE_ENTITY, "CURRENCY_MISMATCH");
    let (_, listed) = app.call("GET", "/transactions", Some(&alice.token), None).await;
    assert!(
        listed["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !t["idempotencyKey"].as_str().unwrap().starts_with("fx")),
        "{listed}"
    );
    let named = app.call("POST", "/transactions", Some(&alice.token), Some(body("USD", "usd-named"))).await;
    assert_eq!(named.0, StatusCode::ACCEPTED, "{}", named.1);
    let done = app.wait_terminal(&alice.token, named.1["transaction"]["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED");

    let suspend = app
        .call(
            "PATCH",
            &format!("/api/accounts/{b}/status"),
            Some(&app.system.token),
            Some(json!({"status": "SUSPENDED"})),
        )
        .await;
    assert_eq!(suspend.0, StatusCode::OK);
    let (_, t) = app.transfer(&alice, &a, &b, json!(10), "to-suspended").await;
    let done = app.wait_terminal(&alice.token, t["transaction"]["id"].as_str().unwrap()).await;
    assert_eq!((done["status"].clone(), done["failureReason"].clone()), (json!("FAILED"), json!("ACCOUNT_NOT_ACTIVE")));
    assert_eq!(app.balance(&alice.token, &a).await, 990, "only the USD-named transfer moved money");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fallbacks_and_methods() {
    let app = spawn_app().await;
    assert_eq!(app.call("GET", "/healthz", None, None).await, (StatusCode::OK, json!({"status": "ok"})));
    let (status, ready) = app.call("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_error(&app.call("GET", "/nope", None, None).await, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_error(
        &app.call("DELETE", "/transactions", None, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    let resp = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    // No answer is for a cache to keep (balances, tokens).
    assert_eq!(resp.headers()["cache-control"], "no-store");
    // A client's request id is echoed if it is a sane one, replaced if not.
    for (sent, echoed) in [("trace-7", true), (&*"x".repeat(129), false), ("has space", false)] {
        let resp = app.http.get(app.url("/healthz")).header("x-request-id", sent).send().await.unwrap();
        let got = resp.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(got == sent, echoed, "sent {sent:?}, got {got:?}");
        assert!(!got.is_empty() && got.len() <= 128, "{got}");
    }
    // A made-up method is answered, and counted under one label: a series per method name
    // would let anyone grow the metrics without bound.
    let made_up = reqwest::Method::from_bytes(b"FOOBAR1").unwrap();
    let resp = app.http.request(made_up, app.url("/transactions")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"route="/transactions",method="OTHER",status="405""#), "{metrics}");
    assert!(!metrics.contains("FOOBAR1"), "{metrics}");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed_and_the_request_id_travels_with_the_command() {
    let mut app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 100).await;

    let series = [
        "ledgerflow_http_requests_total{",
        "ledgerflow_http_request_duration_seconds_bucket{",
        "ledgerflow_transfers_accepted_total{kind=\"INITIAL_FUNDS\"}",
        "ledgerflow_transfers_total{status=\"COMPLETED\"",
        "ledgerflow_messages_consumed_total",
        "ledgerflow_mongo_commit_seconds_bucket",
        "ledgerflow_pending_insert_size_count",
        "ledgerflow_pending_insert_seconds_bucket",
        "ledgerflow_publish_confirm_seconds_bucket",
    ];
    // The worker counts a transfer just after its commit, which the funding's poll may see
    // first: scrape until every series is there (or the deadline).
    let start = std::time::Instant::now();
    let text = loop {
        let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = resp.text().await.unwrap();
        let missing = series.iter().find(|s| !text.contains(*s));
        match missing {
            None => break text,
            Some(s) => assert!(start.elapsed() < ledgerflow_tests::DEADLINE, "{s} missing from:\n{text}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // Routes are labelled by template, never by raw path (one series per id would explode).
    assert!(text.contains("route=\"/transactions/{id}\""), "{text}");
    assert!(!text.contains(&format!("/accounts/{a}")), "{text}");

    // With no worker running, the published command can be read off the queue.
    app.stop_worker(0).await;
    let resp = app
        .http
        .post(app.url("/transactions"))
        .bearer_auth(&alice.token)
        .header("x-request-id", "req-trace-42")
        .json(&json!({"fromAccount": a, "toAccount": b, "amount": 5, "idempotencyKey": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["x-request-id"], "req-trace-42");
    let msg = app.drain_commands(1, 1).await.pop().expect("the command is queued");
    // The command the gateway emits honours the published JSON Schema.
    let command: Value = serde_json::from_slice(&msg.data).unwrap();
    let command_schema =
        jsonschema::validator_for(&ledgerflow_tests::schema("transfer-command.v1.schema.json")).unwrap();
    assert!(command_schema.is_valid(&command), "{command}");
    assert_eq!(command["transactionId"], msg.properties.message_id().as_ref().unwrap().as_str());
    let headers = msg.properties.headers().clone().unwrap();
    assert_eq!(
        headers.inner().get("x-request-id"),
        Some(&ledgerflow_messaging::lapin::types::AMQPValue::LongString("req-trace-42".into()))
    );
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_serves_its_own_metrics() {
    let mut app = spawn_app().await;
    app.stop_worker(0).await;
    let (worker, port) = app.spawn_worker_with_metrics("metrics-test");
    let start = std::time::Instant::now();
    // Queue depths are sampled from the start, one queue after another, and partitions
    // reported once consuming: wait until every partition's depth is there.
    let every_depth = |text: &str| app.topology.partitions().iter().all(|q| text.contains(&format!("queue=\"{q}\"")));
    let text = loop {
        let fetched = app.worker_metrics(port).await;
        if let Some(text) = &fetched
            && every_depth(text)
            && text.contains("ledgerflow_partition_active")
        {
            break text.clone();
        }
        assert!(start.elapsed() < ledgerflow_tests::DEADLINE, "not every metric from the worker: {fetched:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(text.contains("ledgerflow_queue_depth{"), "{text}");
    assert!(text.contains("ledgerflow_partition_active{partition=\"0\"}"), "{text}");
    drop(worker);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_returns_once_the_worker_reports_the_result() {
    let mut app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 100).await;
    app.stop_worker(0).await;
    let (_, t) = app.transfer(&alice, &a, &b, json!(40), "long-poll").await;
    let id = t["transaction"]["id"].as_str().unwrap().to_owned();

    // Nobody processes it: a short wait answers PENDING when the time is up.
    let (status, body) = app.call("GET", &format!("/transactions/{id}?wait=1"), Some(&alice.token), None).await;
    assert_eq!((status, body["transaction"]["status"].clone()), (StatusCode::OK, json!("PENDING")));
    for bad in ["31", "-1", "soon", "1.5"] {
        let got = app.call("GET", &format!("/transactions/{id}?wait={bad}"), Some(&alice.token), None).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
    }

    // A long wait started before any worker exists is answered with the outcome once a
    // worker (started while the request waits) reports it.
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn({
        let (store, config, stop) = (app.store.clone(), app.worker_config("late"), stop.clone());
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            ledgerflow_worker::run(store, config, stop).await;
        }
    });
    let (status, body) = app.call("GET", &format!("/transactions/{id}?wait=30"), Some(&alice.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["transaction"]["status"], "COMPLETED", "{body}");
    stop.cancel();
    let _ = worker.await;
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_operation() {
    let app = spawn_app().await;
    let (status, doc) = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/auth/register", &["post"][..]),
        ("/api/auth/login", &["post"]),
        ("/api/auth/logout", &["post"]),
        ("/api/auth/password", &["post"]),
        ("/api/accounts", &["get", "post"]),
        ("/api/accounts/{id}", &["get"]),
        ("/api/accounts/{id}/balance", &["get"]),
        ("/api/accounts/{id}/entries", &["get"]),
        ("/api/accounts/{id}/status", &["patch"]),
        ("/transactions", &["get", "post"]),
        ("/transactions/{id}", &["get"]),
        ("/transactions/{id}/reverse", &["post"]),
        ("/transactions/system/initial-funds", &["post"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
    ] {
        for method in methods {
            let op = &paths[path][method];
            assert!(op.is_object(), "{method} {path} is documented");
            let responses = op["responses"].as_object().unwrap();
            for (code, response) in responses {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                if code.starts_with('4') || code.starts_with('5') {
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {code}");
                }
            }
            if path != "/healthz" && path != "/readyz" && !path.starts_with("/api/auth") {
                assert!(responses.contains_key("401"), "{method} {path} documents 401");
            }
        }
    }
    for schema in ["ErrorBody", "TransactionBody", "AccountBody", "EntryBody", "TransferBody", "AuthBody"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    app.teardown().await;
}
