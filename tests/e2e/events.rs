//! The event stream against the real services: every change of a transaction is an event,
//! written with the change, numbered in commit order, served by `GET /api/events` to whoever
//! may see the transaction, and published to the `ledgerflow.events` topic exchange.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ledgerflow_client::{Client, EventBody, EventQuery, Transfer};
use ledgerflow_messaging::lapin::Channel;
use ledgerflow_messaging::lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use ledgerflow_messaging::lapin::types::FieldTable;
use ledgerflow_tests::{TestApp, assert_error, schema, spawn_app, spawn_app_with};
use mongodb::bson::{Document, doc};
use reqwest::StatusCode;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Every event `client` may see that `query` selects, paging `page` at a time.
async fn all_events(client: &Client, query: EventQuery<'_>, page: i64) -> Vec<EventBody> {
    let mut query = EventQuery { limit: Some(page), ..query };
    let mut out = Vec::new();
    loop {
        let got = client.events(&query).await.unwrap();
        assert!(got.events.len() as i64 <= page);
        out.extend(got.events);
        let next: i64 = got.next_cursor.parse().unwrap();
        assert_eq!(Some(next), out.last().map(|e| e.id).or(Some(query.after)), "nextCursor is the last id");
        if !got.has_more {
            return out;
        }
        query.after = next;
    }
}

/// The types of the events of `transaction` that `client` sees, once there are `n` of them.
async fn events_of(client: &Client, transaction: &str, n: usize) -> Vec<EventBody> {
    let start = Instant::now();
    loop {
        let events: Vec<EventBody> = all_events(client, EventQuery::default(), 100)
            .await
            .into_iter()
            .filter(|e| e.transaction_id == transaction)
            .collect();
        if events.len() >= n {
            assert_eq!(events.len(), n, "no more events than expected: {events:#?}");
            return events;
        }
        assert!(start.elapsed() < DEADLINE, "{n} events of {transaction} in time, got {events:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn types(events: &[EventBody]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// `(balance, available, seq)` of each account an event shows.
fn accounts(event: &EventBody) -> BTreeMap<String, (i64, i64, i64)> {
    event.accounts.iter().map(|a| (a.account_id.clone(), (a.balance, a.available, a.seq))).collect()
}

async fn transfer(client: &Client, from: &str, to: &str, amount: i64) -> String {
    let key = key();
    let accepted = client.transfer(&Transfer { from, to, amount, idempotency_key: &key, description: None }).await;
    let id = accepted.unwrap().transaction.id;
    client.wait(&id, 30).await.unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_accepted_then_completed_with_both_balances_as_of_the_change() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let (alice, bob) = (app.as_user(&pair.alice), app.as_user(&pair.bob));
    app.fund(&pair.a, 1_000).await;
    let id = transfer(&alice, &pair.a, &pair.b, 300).await;

    let events = events_of(&alice, &id, 2).await;
    assert_eq!(types(&events), ["transaction.accepted", "transaction.completed"]);
    assert!(events[0].id < events[1].id, "numbered in commit order");
    let (accepted, completed) = (&events[0], &events[1]);
    assert_eq!((accepted.transaction.status.as_str(), accepted.accounts.len()), ("PENDING", 0));
    assert_eq!(completed.transaction.status, "COMPLETED");
    assert_eq!(completed.transaction, alice.transaction(&id).await.unwrap(), "as GET /transactions/{{id}} shows it");
    let expected = BTreeMap::from([(pair.a.clone(), (700, 700, 2)), (pair.b.clone(), (300, 300, 1))]);
    assert_eq!(accounts(completed), expected);

    // Every event is valid against the published schema.
    let validator = jsonschema::validator_for(&schema("event.v1.schema.json")).unwrap();
    for event in all_events(&app.as_user(&app.system), EventQuery::default(), 100).await {
        let json = serde_json::to_value(&event).unwrap();
        assert!(validator.is_valid(&json), "{json:#}");
    }

    // Bob sees the transfer (his account is credited), not the funding of Alice's account.
    assert_eq!(events_of(&bob, &id, 2).await, events);
    let bobs = all_events(&bob, EventQuery::default(), 100).await;
    assert!(bobs.iter().all(|e| e.transaction_id == id), "{bobs:#?}");
    // A stranger sees nothing; SYSTEM sees the funding too.
    let carol = app.register().await;
    assert!(all_events(&app.as_user(&carol), EventQuery::default(), 100).await.is_empty());
    let all = all_events(&app.as_user(&app.system), EventQuery::default(), 100).await;
    assert_eq!(types(&all), ["transaction.accepted", "transaction.completed"].repeat(2));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_catches_up_across_pages_with_nothing_missing_or_repeated() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let (alice, bob) = (app.as_user(&pair.alice), app.as_user(&pair.bob));
    app.fund(&pair.a, 10_000).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(transfer(&alice, &pair.a, &pair.b, 10 + i).await);
        ids.push(transfer(&bob, &pair.b, &pair.a, 1).await);
    }
    events_of(&alice, ids.last().unwrap(), 2).await;

    // A consumer that handled a few events, went away and comes back with its last id.
    let everything = all_events(&alice, EventQuery::default(), 100).await;
    assert_eq!(everything.len(), 2 + ids.len() * 2, "the funding and each transfer, accepted and completed");
    let resumed_at = everything[5].id;
    let caught_up = all_events(&alice, EventQuery { after: resumed_at, ..EventQuery::default() }, 7).await;
    assert_eq!(caught_up, everything[6..], "pages of 7 after the last id handled: the rest, in order");
    assert!(everything.windows(2).all(|w| w[0].id < w[1].id), "oldest first, strictly increasing");

    // Filters: by type, by account (an account of one's own), several types at once.
    let completed =
        all_events(&alice, EventQuery { types: Some("transaction.completed"), ..Default::default() }, 5).await;
    assert_eq!(completed.len(), 1 + ids.len());
    assert!(completed.iter().all(|e| e.event_type == "transaction.completed"));
    let both = EventQuery { types: Some("transaction.completed,transaction.accepted"), ..Default::default() };
    assert_eq!(all_events(&alice, both, 100).await, everything);
    let of_b = all_events(&bob, EventQuery { account: Some(&pair.b), ..Default::default() }, 100).await;
    assert_eq!(of_b.len(), ids.len() * 2, "the transfers, not the funding of a");
    // An empty page past the end keeps the cursor where it was.
    let last = everything.last().unwrap().id;
    let past = alice.events(&EventQuery { after: last, ..Default::default() }).await.unwrap();
    assert_eq!((past.events.len(), past.has_more, past.next_cursor), (0, false, last.to_string()));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_refuse_bad_queries_and_foreign_accounts() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let token = Some(pair.alice.token.as_str());
    for (query, field) in [
        ("types=transaction.nope", "types"),
        ("types=", "types"),
        ("types=transaction.completed,,", "types"),
        ("after=-1", "after"),
        ("after=x", "after"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("account=nope", "account"),
        ("colour=blue", "colour"),
    ] {
        let got = app.call("GET", &format!("/api/events?{query}"), token, None).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "VALIDATION_ERROR");
        assert!(got.1["error"]["message"].as_str().unwrap().contains(field), "{query}: {}", got.1);
    }
    let got = app.call("GET", &format!("/api/events?account={}", pair.b), token, None).await;
    assert_error(&got, StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND");
    assert_error(&app.call("GET", "/api/events", None, None).await, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_reversals_failures_and_upstream_commands_have_their_events() {
    let app = spawn_app().await;
    let pair = app.alice_and_bob().await;
    let alice = app.as_user(&pair.alice);
    app.fund(&pair.a, 1_000).await;
    let t = |amount| Transfer { from: &pair.a, to: &pair.b, amount, idempotency_key: "", description: None };

    // A hold, posted in part.
    let k = key();
    let hold = alice.hold(&Transfer { idempotency_key: &k, ..t(100) }, 60).await.unwrap().transaction.id;
    assert_eq!(alice.wait(&hold, 30).await.unwrap().status, "HELD");
    let post = alice.post_hold(&hold, &key(), Some(60)).await.unwrap().transaction.id;
    alice.wait(&post, 30).await.unwrap();
    let hold_events = events_of(&alice, &hold, 3).await;
    assert_eq!(types(&hold_events), ["transaction.accepted", "transaction.held", "transaction.posted"]);
    assert_eq!(accounts(&hold_events[1])[&pair.a], (1_000, 900, 1), "HELD: reserved, not posted");
    assert_eq!(hold_events[2].transaction.posted_amount, Some(60));
    assert_eq!(hold_events[2].transaction.resolved_by.as_deref(), Some(post.as_str()));
    let post_events = events_of(&alice, &post, 2).await;
    assert_eq!(types(&post_events), ["transaction.accepted", "transaction.completed"]);
    assert_eq!(accounts(&post_events[1])[&pair.a], (940, 940, 2), "the rest released");
    assert!(post_events[1].id < hold_events[2].id, "the post's decision, then the hold's end");

    // A hold voided, and one expiring with nobody asking.
    let k = key();
    let voided = alice.hold(&Transfer { idempotency_key: &k, ..t(10) }, 60).await.unwrap().transaction.id;
    alice.wait(&voided, 30).await.unwrap();
    alice.void_hold(&voided, &key()).await.unwrap();
    assert_eq!(types(&events_of(&alice, &voided, 3).await)[2], "transaction.voided");
    let k = key();
    let expiring = alice.hold(&Transfer { idempotency_key: &k, ..t(10) }, 1).await.unwrap().transaction.id;
    let expired = events_of(&alice, &expiring, 3).await;
    assert_eq!(types(&expired)[2], "transaction.expired");
    assert_eq!(accounts(&expired[2])[&pair.a], (940, 940, 2), "released");

    // A failure, and a reversal (the original's own event says it was reversed).
    let k = key();
    let failed = alice.transfer(&Transfer { idempotency_key: &k, ..t(5_000) }).await.unwrap().transaction.id;
    let failed = events_of(&alice, &failed, 2).await;
    assert_eq!(types(&failed), ["transaction.accepted", "transaction.failed"]);
    assert_eq!(failed[1].transaction.failure_reason.as_deref(), Some("INSUFFICIENT_FUNDS"));
    let original = transfer(&alice, &pair.a, &pair.b, 40).await;
    let reversal = app.as_user(&app.system).reverse(&original, &key(), None).await.unwrap().transaction.id;
    alice.wait(&reversal, 30).await.unwrap();
    let original_events = events_of(&alice, &original, 3).await;
    assert_eq!(types(&original_events)[2], "transaction.reversed");
    assert_eq!(original_events[2].transaction.reversed_by.as_deref(), Some(reversal.as_str()));
    assert_eq!(types(&events_of(&alice, &reversal, 2).await), ["transaction.accepted", "transaction.completed"]);

    // An upstream command: its record is created and decided in one commit, with both events.
    let k = key();
    let command = app.upstream_command(&pair.a, &pair.b, 5, &k);
    app.publish_raw(&pair.a, command.to_string().as_bytes()).await;
    let record = app.wait_upstream(&k).await;
    let upstream = events_of(&alice, &record.id.to_string(), 2).await;
    assert_eq!(types(&upstream), ["transaction.accepted", "transaction.completed"]);
    assert_eq!(upstream[0].created_at, upstream[1].created_at);
    app.teardown().await;
}

/// Declares a queue of the test's own bound to the event exchange with `pattern`.
async fn bind_events(app: &TestApp, pattern: &str) -> (Channel, String) {
    let ch = app.channel().await;
    app.topology.declare(&ch).await.unwrap();
    let own = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let queue = ch.queue_declare("".into(), own, FieldTable::default()).await.unwrap();
    let exchange = app.topology.events();
    ch.queue_bind(
        queue.name().clone(),
        exchange.as_str().into(),
        pattern.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    (ch, queue.name().to_string())
}

/// Takes the events waiting in `queue` until `enough`, with each message's routing key.
async fn take_events(ch: &Channel, queue: &str, enough: impl Fn(&[(String, Value)]) -> bool) -> Vec<(String, Value)> {
    let start = Instant::now();
    let mut out = Vec::new();
    loop {
        match ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            Some(msg) => {
                let body: Value = serde_json::from_slice(&msg.delivery.data).unwrap();
                let message_id = msg.delivery.properties.message_id().as_ref().map(ToString::to_string);
                assert_eq!(message_id, Some(body["id"].to_string()), "the message id is the event id");
                out.push((msg.delivery.routing_key.to_string(), body));
            }
            None if enough(&out) => return out,
            None => {
                assert!(start.elapsed() < DEADLINE, "events on the stream in time: got {}", out.len());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_every_event_once_in_order_with_its_routing_key() {
    // Two workers: two relays stand ready, one leads.
    let app = spawn_app_with(2).await;
    let (ch, queue) = bind_events(&app, "transaction.*.USD").await;
    let (_, completed_only) = bind_events(&app, "transaction.completed.#").await;
    let pair = app.alice_and_bob().await;
    let (alice, bob) = (app.as_user(&pair.alice), app.as_user(&pair.bob));
    app.fund(&pair.a, 10_000).await;
    app.fund(&pair.b, 10_000).await;
    let mut submitted = Vec::new();
    for i in 0..40 {
        let (from, to, who) = if i % 2 == 0 { (&pair.a, &pair.b, &alice) } else { (&pair.b, &pair.a, &bob) };
        let k = key();
        let amount = 1 + i;
        let accepted = who.transfer(&Transfer { from, to, amount, idempotency_key: &k, description: None }).await;
        submitted.push(accepted.unwrap().transaction.id);
    }
    for id in &submitted {
        alice.wait(id, 30).await.unwrap();
    }
    let expected = 4 + submitted.len() * 2;
    let stream = take_events(&ch, &queue, |got| got.len() >= expected).await;
    assert_eq!(stream.len(), expected, "each change once: no duplicate in a clean run");
    let ids: Vec<i64> = stream.iter().map(|(_, e)| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "in order, none missing: {ids:?}");
    let system = app.as_user(&app.system);
    let api = all_events(&system, EventQuery::default(), 100).await;
    let validator = jsonschema::validator_for(&schema("event.v1.schema.json")).unwrap();
    for ((routing_key, event), served) in stream.iter().zip(&api) {
        assert!(validator.is_valid(event), "{event:#}");
        assert_eq!(event, &serde_json::to_value(served).unwrap(), "the stream carries what the API serves");
        assert_eq!(routing_key, &format!("{}.USD", served.event_type));
    }
    // Per transaction: accepted before completed; every transfer has both.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, event) in &stream {
        let id = event["transactionId"].as_str().unwrap().to_owned();
        seen.entry(id).or_default().push(event["type"].as_str().unwrap().to_owned());
    }
    for id in &submitted {
        assert_eq!(seen[id], ["transaction.accepted", "transaction.completed"], "{id}");
    }
    let completed = take_events(&ch, &completed_only, |got| got.len() >= 2 + submitted.len()).await;
    let distinct: HashSet<i64> = completed.iter().map(|(_, e)| e["id"].as_i64().unwrap()).collect();
    assert_eq!((completed.len(), distinct.len()), (2 + submitted.len(), 2 + submitted.len()));
    assert!(completed.iter().all(|(key, _)| key == "transaction.completed.USD"));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_hands_over_when_its_worker_stops_and_nothing_is_lost() {
    let mut app = spawn_app_with(2).await;
    let (ch, queue) = bind_events(&app, "#").await;
    let pair = app.alice_and_bob().await;
    let alice = app.as_user(&pair.alice);
    app.fund(&pair.a, 10_000).await;
    for _ in 0..5 {
        transfer(&alice, &pair.a, &pair.b, 1).await;
    }
    // Whichever leads, one worker stops; the other (leading or standing by) carries on.
    app.stop_worker(0).await;
    let mut later = Vec::new();
    for _ in 0..5 {
        later.push(transfer(&alice, &pair.a, &pair.b, 1).await);
    }
    app.stop_worker(1).await;
    // Changes committed while no worker runs (an acceptance) wait in the outbox.
    let k = key();
    let waiting = Transfer { from: &pair.a, to: &pair.b, amount: 1, idempotency_key: &k, description: None };
    let waiting = alice.transfer(&waiting).await.unwrap().transaction.id;
    app.add_worker();
    alice.wait(&waiting, 30).await.unwrap();
    let expected = 2 + 11 * 2;
    let stream = take_events(&ch, &queue, |got| got.len() >= expected).await;
    let ids: Vec<i64> = stream.iter().map(|(_, e)| e["id"].as_i64().unwrap()).collect();
    let distinct: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), expected, "every event, after two hand-overs: {ids:?}");
    assert_eq!(ids.len(), expected, "none twice: each leader handed over cleanly");
    for id in later.iter().chain([&waiting]) {
        let of: Vec<&str> =
            stream.iter().filter(|(_, e)| e["transactionId"] == id.as_str()).map(|(k, _)| k.as_str()).collect();
        assert_eq!(of, ["transaction.accepted.USD", "transaction.completed.USD"]);
    }
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_lost_its_lease_can_neither_number_nor_mark_anything() {
    // No worker, so no relay but the two this test plays.
    let app = spawn_app_with(0).await;
    let store = &app.store;
    let short = Duration::from_millis(300);
    let first = store.claim_relay("first", None, short).await.unwrap().expect("nobody holds it");
    assert_eq!(store.claim_relay("second", None, DEADLINE).await.unwrap(), None, "held by the first");
    tokio::time::sleep(short * 2).await;
    let second = store.claim_relay("second", None, DEADLINE).await.unwrap().expect("run out: taken over");
    assert!(second.epoch > first.epoch);
    assert_eq!(store.claim_relay("first", Some(first), DEADLINE).await.unwrap(), None, "no renewal after a takeover");
    // A holder that stopped leading after an error takes its own lease again at once, under a
    // new epoch, which fences off what the old one still had in flight.
    let old = second;
    let second = store.claim_relay("second", None, DEADLINE).await.unwrap().expect("its own lease");
    assert!(second.epoch > old.epoch);
    assert_eq!(store.claim_relay("second", Some(old), DEADLINE).await.unwrap(), None);

    // A change waits in the outbox: an acceptance, with no worker to decide it.
    let pair = app.alice_and_bob().await;
    let k = key();
    let transfer = Transfer { from: &pair.a, to: &pair.b, amount: 5, idempotency_key: &k, description: None };
    app.as_user(&pair.alice).transfer(&transfer).await.unwrap();
    let (waiting, more) = store.unsequenced(10).await.unwrap();
    assert_eq!((waiting.len(), more), (1, false));

    let deposed = store.sequence(first, &waiting, None).await;
    assert!(matches!(deposed, Err(ledgerflow_store::StoreError::Contention { .. })), "{deposed:?}");
    assert_eq!(store.sequence(second, &waiting, None).await.unwrap().len(), 1);
    assert_eq!(store.sequence(second, &waiting, None).await.unwrap().len(), 0, "numbered once");
    assert!(store.unsequenced(10).await.unwrap().0.is_empty());
    assert_eq!(store.relay_backlog().await.unwrap(), (0, 1), "numbered, not yet published");
    assert!(!store.mark_published(first, 1).await.unwrap(), "the deposed relay marks nothing");
    assert!(store.mark_published(second, 1).await.unwrap());
    assert_eq!(store.relay_backlog().await.unwrap(), (0, 0));
    let events = all_events(&app.as_user(&pair.alice), EventQuery::default(), 100).await;
    assert_eq!((events.len(), events[0].id, events[0].event_type.as_str()), (1, 1, "transaction.accepted"));
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_first_publishes_what_the_last_one_numbered_and_did_not() {
    let mut app = spawn_app_with(0).await;
    let (ch, queue) = bind_events(&app, "#").await;
    let pair = app.alice_and_bob().await;
    let alice = app.as_user(&pair.alice);
    // A leader numbers this transfer's acceptance (of a transfer bound to fail: the account is
    // empty), then goes before it publishes it.
    let k = key();
    let transfer = Transfer { from: &pair.a, to: &pair.b, amount: 5, idempotency_key: &k, description: None };
    let id = alice.transfer(&transfer).await.unwrap().transaction.id;
    let gone = app.store.claim_relay("gone", None, DEADLINE).await.unwrap().expect("nobody holds it");
    let (ids, _) = app.store.unsequenced(100).await.unwrap();
    let numbered = app.store.sequence(gone, &ids, None).await.unwrap().len();
    assert_eq!(app.store.relay_backlog().await.unwrap(), (0, numbered as i64), "numbered, none published");
    app.store.release_relay("gone", gone).await.unwrap();

    assert_eq!(numbered, 1);
    // The next leader publishes it first, then what it numbers itself: the decision.
    app.add_worker();
    alice.wait(&id, 30).await.unwrap();
    let stream = take_events(&ch, &queue, |got| got.len() >= 2).await;
    let ids: Vec<i64> = stream.iter().map(|(_, e)| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 2], "every event once, in order");
    let of: Vec<&str> =
        stream.iter().filter(|(_, e)| e["transactionId"] == id.as_str()).map(|(k, _)| k.as_str()).collect();
    assert_eq!(of, ["transaction.accepted.USD", "transaction.failed.USD"]);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commits_events_share_one_outbox_document_and_an_earlier_versions_are_still_numbered() {
    // No worker: this test numbers the outbox itself.
    let app = spawn_app_with(0).await;
    let store = &app.store;
    let outbox = app.raw_db().await.collection::<Document>("outbox");
    let pair = app.alice_and_bob().await;
    let batch = |n: usize, tag: &str| {
        let items: Vec<Value> = (0..n)
            .map(|i| json!({"fromAccount": &pair.a, "toAccount": &pair.b, "amount": 1, "idempotencyKey": format!("{tag}-{i}")}))
            .collect();
        app.call("POST", "/transactions/batch", Some(&pair.alice.token), Some(json!({ "items": items })))
    };
    let accepted = |answer: &Value| -> Vec<String> {
        let items = answer["items"].as_array().unwrap();
        items.iter().map(|i| i["transaction"]["id"].as_str().unwrap().to_owned()).collect()
    };
    let (status, first) = batch(3, "first").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // The batch's one insert wrote its three acceptances as one document, in item order.
    let written: Vec<Document> = outbox.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    assert_eq!(written.len(), 1, "{written:#?}");
    assert_eq!(written[0].get_i64("n").unwrap(), 3);
    let inside: Vec<&str> = written[0]
        .get_array("events")
        .unwrap()
        .iter()
        .map(|e| e.as_document().unwrap().get_str("transactionId").unwrap())
        .collect();
    assert_eq!(inside, accepted(&first));

    // A document as an earlier version wrote it: one event, its own id, no `events`; decided
    // before the batch.
    let mut earlier = written[0].get_array("events").unwrap()[0].as_document().unwrap().clone();
    earlier.insert("_id", key());
    earlier.insert("transactionId", key());
    let before = written[0].get_datetime("createdAt").unwrap().timestamp_millis() - 1;
    earlier.insert("createdAt", mongodb::bson::DateTime::from_millis(before));
    outbox.insert_one(&earlier).await.unwrap();
    // 70 more acceptances in one insert: two documents, as one holds at most 64.
    let (status, second) = batch(70, "second").await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(outbox.count_documents(doc! {}).await.unwrap(), 4);

    // Counted in events, a document taken whole: the earlier one (1) and the batch (3) fit in
    // five; the next would not.
    let lease = store.claim_relay("test", None, DEADLINE).await.unwrap().expect("nobody holds it");
    let (ids, more) = store.unsequenced(5).await.unwrap();
    assert_eq!((ids.len(), more), (2, true));
    let mut numbered = store.sequence(lease, &ids, None).await.unwrap();
    assert_eq!(numbered.len(), 4);
    let (ids, more) = store.unsequenced(500).await.unwrap();
    assert_eq!((ids.len(), more), (2, false));
    numbered.extend(store.sequence(lease, &ids, None).await.unwrap());
    assert_eq!(numbered.len(), 74);
    assert_eq!(store.relay_backlog().await.unwrap(), (0, 74), "all numbered, none published");

    let events = all_events(&app.as_user(&app.system), EventQuery::default(), 100).await;
    let numbers: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(numbers, (1..=74).collect::<Vec<_>>(), "numbered without a gap or a repeat");
    // What the relay publishes is what it numbered, as it is stored.
    let returned: Vec<_> = numbered.iter().map(|e| serde_json::to_value(e.body()).unwrap()).collect();
    let stored: Vec<_> = events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    assert_eq!(returned, stored);
    let order: Vec<String> = events.iter().map(|e| e.transaction_id.clone()).collect();
    let mut expected = vec![earlier.get_str("transactionId").unwrap().to_owned()];
    expected.extend(accepted(&first));
    expected.extend(accepted(&second));
    assert_eq!(order, expected, "in commit order, each document's in its own");
    assert!(events.iter().all(|e| e.event_type == "transaction.accepted"));
    app.teardown().await;
}

/// The relay's place on the outbox's change stream made one it cannot resume from: the stored
/// resume token with its cluster time (the 8 bytes after the `82` type byte of its key string)
/// moved back to the epoch. Before the oplog's start, that is history lost; on an oplog that
/// still starts at the replica set's birth, an event that is not there. The relay must treat
/// both alike.
async fn lose_the_relays_place(app: &TestApp) -> String {
    let relay = app.raw_db().await.collection::<Document>("relay");
    let state = relay.find_one(doc! { "_id": "events" }).await.unwrap().expect("the relay's state");
    let data = state.get_document("token").unwrap().get_str("_data").unwrap().to_owned();
    assert!(data.starts_with("82") && data.len() > 18, "a resume token's key string: {data}");
    let lost = format!("82{}{}", "0000000100000001", &data[18..]);
    let token = doc! { "_data": &lost };
    relay.update_one(doc! { "_id": "events" }, doc! { "$set": { "token": token } }).await.unwrap();
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_resume_its_stream_numbers_the_outbox_and_carries_on() {
    let mut app = spawn_app_with(1).await;
    let pair = app.alice_and_bob().await;
    let alice = app.as_user(&pair.alice);
    app.fund(&pair.a, 10_000).await;
    transfer(&alice, &pair.a, &pair.b, 1).await;
    events_of(&alice, &transfer(&alice, &pair.a, &pair.b, 1).await, 2).await;
    app.stop_worker(0).await;
    let lost = lose_the_relays_place(&app).await;
    // More than a batch of changes wait in the outbox (acceptances: no worker decides them).
    let items: Vec<Value> = (0..600)
        .map(|i| json!({"fromAccount": &pair.a, "toAccount": &pair.b, "amount": 1, "idempotencyKey": format!("lost-{i}")}))
        .collect();
    let (status, answer) =
        app.call("POST", "/transactions/batch", Some(&pair.alice.token), Some(json!({"items": items}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ids: Vec<String> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["transaction"]["id"].as_str().unwrap().to_owned())
        .collect();

    app.add_worker();
    for id in &ids {
        alice.wait(id, 30).await.unwrap();
    }
    let start = Instant::now();
    while app.store.relay_backlog().await.unwrap() != (0, 0) {
        assert!(start.elapsed() < DEADLINE, "the relay is stuck: {:?}", app.store.relay_backlog().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = all_events(&app.as_user(&app.system), EventQuery::default(), 100).await;
    let numbers: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>(), "numbered without a gap or a repeat");
    for id in &ids {
        let of: Vec<&str> = events.iter().filter(|e| e.transaction_id == *id).map(|e| e.event_type.as_str()).collect();
        assert_eq!(of, ["transaction.accepted", "transaction.completed"], "the events of {id}");
    }
    // It stored the new stream's place: the next leader resumes from there.
    let relay = app.raw_db().await.collection::<Document>("relay");
    let state = relay.find_one(doc! { "_id": "events" }).await.unwrap().unwrap();
    assert_ne!(state.get_document("token").unwrap().get_str("_data").unwrap(), lost);
    app.teardown().await;
}
