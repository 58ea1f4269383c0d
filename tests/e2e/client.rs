//! `ledgerflow-client`, the typed client LedgerFlow's users get, against a real gateway: the
//! README's walk-through, a repeat, and refusals carrying the gateway's codes.

use ledgerflow_client::{Error, Transfer};
use ledgerflow_tests::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_walks_through_a_transfer() {
    let app = spawn_app().await;
    let gateway = app.api.clone();
    let email = format!("alice-{}@example.com", uuid::Uuid::new_v4().simple());
    let alice = gateway.register(&email, "correct horse battery", Some("Alice")).await.unwrap();
    assert_eq!((alice.user.name.as_deref(), alice.user.role.as_str()), (Some("Alice"), "USER"));
    let alice = gateway.signed_in(&alice.token);
    let bob = app.register().await;
    let a = alice.open_account(Some("USD")).await.unwrap();
    let b = app.as_user(&bob).open_account(None).await.unwrap();
    assert_eq!((a.currency.as_str(), b.currency.as_str()), ("USD", "USD"));

    let system = app.as_user(&app.system);
    let funded = system.initial_funds(&a.id, 10_000, "fund-alice").await.unwrap();
    assert!(!funded.repeat);
    assert_eq!(system.wait(&funded.transaction.id, 30).await.unwrap().status, "COMPLETED");

    let rent = Transfer { from: &a.id, to: &b.id, amount: 2_500, idempotency_key: "rent", description: Some("rent") };
    let sent = alice.transfer(&rent).await.unwrap();
    assert_eq!((sent.repeat, sent.transaction.status.as_str()), (false, "PENDING"));
    let done = alice.wait(&sent.transaction.id, 30).await.unwrap();
    assert_eq!(done.status, "COMPLETED");
    // The same request again is a repeat, answered with the transaction as it now stands.
    let again = alice.transfer(&rent).await.unwrap();
    assert_eq!((again.repeat, again.transaction), (true, done.clone()));

    assert_eq!(alice.balance(&a.id).await.unwrap().balance, 7_500);
    let entries = app.as_user(&bob).entries(&b.id).await.unwrap().entries;
    assert_eq!(entries.iter().map(|e| (e.entry_type.as_str(), e.amount)).collect::<Vec<_>>(), [("CREDIT", 2_500)]);
    assert_eq!(alice.transaction(&done.id).await.unwrap(), done);
    app.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_reports_refusals_with_the_gateways_codes() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let a = app.open_account(&alice).await;
    let alice = app.as_user(&alice);
    // Someone else's account is not the caller's to debit.
    let bob = app.register().await;
    let b = app.open_account(&bob).await;
    let theft = Transfer { from: &b, to: &a, amount: 1, idempotency_key: "take", description: None };
    let refused = alice.transfer(&theft).await.unwrap_err();
    assert_eq!((refused.status(), refused.code()), (Some(404), Some("ACCOUNT_NOT_FOUND")), "{refused}");
    // Bad input is refused before anything is recorded, naming the field.
    let zero = Transfer { from: &a, to: &b, amount: 0, idempotency_key: "zero", description: None };
    match alice.transfer(&zero).await {
        Err(Error::Api { status: 400, body }) => {
            assert_eq!((body.error.code.as_str(), body.error.field.as_deref()), ("VALIDATION_ERROR", Some("amount")));
        }
        other => panic!("expected a 400 naming amount, got {other:?}"),
    }
    // Only SYSTEM issues money; and without a token nothing is answered.
    assert_eq!(alice.initial_funds(&a, 5, "mint").await.unwrap_err().status(), Some(403));
    assert_eq!(app.api.balance(&a).await.unwrap_err().code(), Some("UNAUTHENTICATED"));
    app.teardown().await;
}
