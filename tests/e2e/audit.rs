//! `reconcile`'s totals stay exact past `i64::MAX`: a currency's lifetime volume does get there.

use ledgerflow_tests::spawn_app;
use mongodb::bson::{Document, doc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_past_i64_max_are_exact_and_a_mismatch_there_is_reported() {
    let app = spawn_app().await;
    // 9,300 entries of the largest amount on each side pass i64::MAX (about 9.22e18) by far.
    const SIDE: i64 = 9_300;
    const LARGEST: i64 = 1_000_000_000_000_000;
    // Only what the totals read; distinct accounts and transactions for the unique indexes.
    // (The rest of reconcile reports these entries as orphans, which is beside the point.)
    let entry = |kind: &str, amount: i64| {
        let id = || uuid::Uuid::now_v7().to_string();
        doc! {
            "_id": id(), "accountId": id(), "seq": 1_i64, "transactionId": id(),
            "type": kind, "amount": amount, "currency": "USD",
        }
    };
    let mut entries: Vec<Document> =
        (0..SIDE).flat_map(|_| [entry("DEBIT", LARGEST), entry("CREDIT", LARGEST)]).collect();
    // One unit more on the credit side: the books do not balance, by exactly 1.
    entries.push(entry("CREDIT", 1));
    app.raw_db().await.collection::<Document>("entries").insert_many(entries).await.unwrap();

    let totals = app.store.entry_totals().await.unwrap();
    let expected = i128::from(SIDE) * i128::from(LARGEST);
    assert_eq!(totals, vec![("USD".to_owned(), Ok((expected, expected + 1)))]);

    let (code, report) = app.reconcile(&[]).await;
    assert_eq!(code, 1, "{report}");
    let mismatch = report["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["check"] == "debits_equal_credits")
        .unwrap_or_else(|| panic!("the mismatch is reported: {report}"));
    assert_eq!(mismatch["detail"], format!("debits {expected} != credits {}", expected + 1));
    assert_eq!(report["totals"][0]["debits"].to_string(), expected.to_string(), "{report}");
    app.teardown().await;
}
