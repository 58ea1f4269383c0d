//! `POST /transactions/batch`: many transfer and hold requests in one, each answered as it
//! would be alone; against the real services.

use std::collections::HashMap;

use futures::future::join_all;
use ledgerflow_client::BatchItemResult;
use ledgerflow_tests::{Pair, TestApp, assert_error, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// What an item got, as a single request's answer is read: its status and its body
/// (`{"transaction":…}` or `{"error":…}`).
fn as_alone(item: &BatchItemResult) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(item.status).unwrap();
    let body = match (&item.transaction, &item.error) {
        (Some(t), None) => json!({ "transaction": t }),
        (None, Some(e)) => json!({ "error": e }),
        other => panic!("item {} has {other:?}", item.index),
    };
    (status, body)
}

fn transfer(from: &str, to: &str, amount: Value, key: &str) -> Value {
    json!({"fromAccount": from, "toAccount": to, "amount": amount, "idempotencyKey": key})
}

/// The same request sent alone to `POST /transactions`.
async fn alone(app: &TestApp, token: &str, item: &Value) -> (StatusCode, Value) {
    app.call("POST", "/transactions", Some(token), Some(item.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_a_thousand_answers_each_item_as_it_would_be_alone() {
    let app = spawn_app().await;
    let Pair { alice, bob, a, b } = app.alice_and_bob().await;
    let euros = app.must("open", app.as_user(&bob).open_account(Some("EUR")).await).id;
    app.fund(&a, 100_000).await;
    // Sent before the batch: repeated in it, once as it was and once changed.
    let earlier = app.accept_transfer(&alice, &a, &b, 7, "earlier").await.transaction.id;

    let unknown = uuid::Uuid::now_v7().to_string();
    let mut items = Vec::new();
    // Each kind of item, placed every so often among 1,000; most are plain transfers.
    let refusals: Vec<(Value, StatusCode, &str)> = vec![
        (transfer(&b, &a, json!(5), "foreign"), StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND"),
        (transfer(&a, &unknown, json!(5), "unknown"), StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND"),
        (transfer(&a, &euros, json!(5), "euros"), StatusCode::UNPROCESSABLE_ENTITY, "CURRENCY_MISMATCH"),
        (transfer(&a, &a, json!(5), "to-self"), StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        (transfer(&a, &b, json!(0), "zero"), StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        (transfer(&a, &b, json!("5"), "text"), StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        (json!({"fromAccount": a, "toAccount": b, "amount": 5}), StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        (
            json!({"fromAccount": a, "toAccount": b, "amount": 5, "idempotencyKey": "fee", "fee": 1}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        (json!(42), StatusCode::BAD_REQUEST, "INVALID_JSON"),
        (transfer(&a, &b, json!(8), "earlier"), StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED"),
    ];
    let mut expected: Vec<Option<(StatusCode, &str)>> = Vec::new();
    let mut moved = 0;
    for i in 0..1_000 {
        let (item, outcome) = match i % 50 {
            k @ 0..10 => {
                let (item, status, code) = &refusals[k];
                (item.clone(), Some((*status, *code)))
            }
            // A repeat of the request made before the batch.
            10 => (transfer(&a, &b, json!(7), "earlier"), None),
            // A repeat of the item just before, and a changed one under that key.
            12 => (transfer(&a, &b, json!(3), &format!("t-{}", i - 1)), None),
            13 => (
                transfer(&a, &b, json!(4), &format!("t-{}", i - 2)),
                Some((StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED")),
            ),
            14 => (
                json!({"fromAccount": a, "toAccount": b, "amount": 9, "idempotencyKey": format!("h-{i}"), "hold": {"timeoutSeconds": 600}}),
                None,
            ),
            _ => {
                moved += 3;
                (transfer(&a, &b, json!(3), &format!("t-{i}")), None)
            }
        };
        items.push(item);
        expected.push(outcome);
    }
    let alice_api = app.as_user(&alice);
    let results = app.must("batch", alice_api.batch(&items).await).items;
    assert_eq!(results.len(), 1_000);

    let mut first_of_key: HashMap<String, String> = HashMap::new();
    for (i, (item, result)) in items.iter().zip(&results).enumerate() {
        assert_eq!(result.index, i, "answers come in request order");
        let got = as_alone(result);
        match (expected[i], i % 50) {
            (Some((status, code)), _) => assert_error(&got, status, code),
            (None, 10) => {
                assert_eq!(got.0, StatusCode::OK, "{}", got.1);
                assert_eq!(got.1["transaction"]["id"], earlier.as_str());
            }
            (None, 12) => {
                assert_eq!(got.0, StatusCode::OK, "{}", got.1);
                assert_eq!(
                    got.1["transaction"]["id"].as_str(),
                    first_of_key.get(&format!("t-{}", i - 1)).map(String::as_str)
                );
            }
            (None, k) => {
                assert_eq!(got.0, StatusCode::ACCEPTED, "{}", got.1);
                let t = &got.1["transaction"];
                assert_eq!(t["status"], "PENDING");
                assert_eq!(t["kind"], if k == 14 { "HOLD" } else { "TRANSFER" });
                assert_eq!(t["amount"], item["amount"]);
                first_of_key
                    .insert(item["idempotencyKey"].as_str().unwrap().to_owned(), t["id"].as_str().unwrap().to_owned());
            }
        }
        // Each refusal is what the item gets when sent alone, field and all; each repeat is
        // the same transaction (in its state of now).
        if i < 50 && expected[i].is_some() {
            assert_eq!(alone(&app, &alice.token, item).await, got, "item {i}: {item}");
        } else if i < 50 && (i == 10 || i == 12) {
            let (status, body) = alone(&app, &alice.token, item).await;
            assert_eq!((status, &body["transaction"]["id"]), (got.0, &got.1["transaction"]["id"]), "item {i}");
        }
    }
    let accepted: Vec<&str> = first_of_key.values().map(String::as_str).collect();
    assert_eq!(accepted.len(), 20 * 37, "36 transfers and a hold in every 50 items");

    // Every accepted transfer completes, once: the money moved is theirs and no more.
    let settled = join_all(accepted.iter().map(|id| alice_api.wait(id, 30))).await;
    for t in settled {
        let t = t.unwrap();
        let done = if t.kind == "HOLD" { "HELD" } else { "COMPLETED" };
        assert_eq!(t.status, done, "{t:?}");
    }
    let held = 20 * 9;
    let balance = alice_api.balance(&a).await.unwrap();
    assert_eq!((balance.balance, balance.pending_debits), (100_000 - 7 - moved, held));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_is_not_one_is_refused_whole() {
    let app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    let token = Some(alice.token.as_str());
    let one = transfer(&a, &b, json!(1), "k");
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (json!([one]), "INVALID_JSON", None),
        (json!({}), "VALIDATION_ERROR", Some("items")),
        (json!({"items": null}), "VALIDATION_ERROR", Some("items")),
        (json!({"items": one}), "VALIDATION_ERROR", Some("items")),
        (json!({"items": []}), "VALIDATION_ERROR", Some("items")),
        (json!({"items": vec![one.clone(); 1_001]}), "VALIDATION_ERROR", Some("items")),
        (json!({"items": [one], "atomic": true}), "VALIDATION_ERROR", Some("atomic")),
    ];
    for (body, code, field) in cases {
        for path in ["/transactions/batch", "/api/transactions/batch"] {
            let got = app.call("POST", path, token, Some(body.clone())).await;
            assert_error(&got, StatusCode::BAD_REQUEST, code);
            assert_eq!(got.1["error"]["field"].as_str(), field, "{}", got.1);
        }
    }
    // A key given twice, in the batch or in an item, means nothing certain: refused.
    let raw = |body: String| {
        app.http
            .post(app.url("/transactions/batch"))
            .bearer_auth(&alice.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = raw(format!(r#"{{"items":[{one}],"items":[{one}]}}"#)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let twice =
        format!(r#"{{"fromAccount":"{a}","toAccount":"{b}","amount":1,"amount":900,"idempotencyKey":"twice"}}"#);
    let response = raw(format!(r#"{{"items":[{twice},{}]}}"#, transfer(&a, &b, json!(1), "fine"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["items"][0]["status"].as_u64(), answer["items"][0]["error"]["code"].as_str()),
        (Some(400), Some("INVALID_JSON"))
    );
    assert_eq!(answer["items"][1]["status"], 202);
    // Nothing of a refused batch was recorded, and no one else's batch may be sent unsigned.
    let unsigned = app.call("POST", "/transactions/batch", None, Some(json!({"items": [one]}))).await;
    assert_error(&unsigned, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let listed = app.must("list", app.as_user(&alice).transactions().await);
    assert_eq!(listed.transactions.len(), 1, "only the one accepted item: {listed:?}");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_items_of_the_largest_size_fit_the_body_limit() {
    let app = spawn_app().await;
    let Pair { alice, bob: _, a, b: _ } = app.alice_and_bob().await;
    let nowhere = uuid::Uuid::now_v7().to_string();
    // 500 characters of 4 bytes each, and a 128-character key: about 2.3 KB an item, 2.3 MB
    // in all, far past a single request's 64 KiB.
    let description = "𝄞".repeat(500);
    let items: Vec<Value> = (0..1_000)
        .map(|i| {
            json!({"fromAccount": a, "toAccount": nowhere, "amount": 1_000_000_000_000_000_i64, "currency": "USD",
                   "idempotencyKey": format!("{i:0>128}"), "description": description, "hold": {"timeoutSeconds": 2_592_000}})
        })
        .collect();
    let results = app.must("batch", app.as_user(&alice).batch(&items).await).items;
    assert!(
        results.iter().all(|r| r.error.as_ref().is_some_and(|e| e.code == "ACCOUNT_NOT_FOUND")),
        "{:?}",
        results[0]
    );
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_whose_publish_failed_gets_503_and_is_sent_later() {
    let app = spawn_app().await;
    let Pair { alice, bob: _, a, b } = app.alice_and_bob().await;
    app.fund(&a, 1_000).await;
    // A gateway whose broker is unreachable records the items but cannot publish them.
    let broken = app.extra_gateway("amqp://guest:guest@127.0.0.1:1/%2f").await;
    let items = [
        transfer(&a, &b, json!(100), "offline-1"),
        transfer(&b, &a, json!(1), "foreign"),
        transfer(&a, &b, json!(50), "offline-2"),
    ];
    let response = app
        .http
        .post(format!("{broken}/transactions/batch"))
        .bearer_auth(&alice.token)
        .json(&json!({ "items": items }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: ledgerflow_client::BatchResults = response.json().await.unwrap();
    let statuses: Vec<(u16, &str)> =
        answer.items.iter().map(|r| (r.status, r.error.as_ref().map_or("", |e| e.code.as_str()))).collect();
    assert_eq!(statuses, [(503, "BROKER_UNAVAILABLE"), (404, "ACCOUNT_NOT_FOUND"), (503, "BROKER_UNAVAILABLE")]);

    // The healthy gateway's republisher sends both; the worker completes them.
    for item in [&answer.items[0], &answer.items[2]] {
        let id = item.error.as_ref().and_then(|e| e.transaction_id.clone()).expect("the 503 names its transaction");
        assert_eq!(app.settled(&alice, &id).await.status, "COMPLETED");
    }
    assert_eq!(app.balance(&alice.token, &a).await, 850);
    app.teardown().await;
}
