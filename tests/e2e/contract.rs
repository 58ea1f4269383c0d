//! The API honours its OpenAPI document: schemathesis generates requests for every operation
//! from `GET /openapi.json` and checks that no response is a server error or contradicts the
//! document (status codes, content types, bodies, headers).

use ledgerflow_tests::spawn_app;

/// Runs schemathesis with the caller's token and `filter`; returns its output, failing the
/// test unless it passed.
async fn schemathesis(base: &str, token: &str, filter: &[&str]) -> String {
    let script = format!("{}/../scripts/schemathesis.sh", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("bash")
        .args([script.as_str(), base, token])
        .args(filter)
        .stdin(std::process::Stdio::null())
        .output();
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(600), out).await.expect("schemathesis finishes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "schemathesis failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_and_no_schema_violations() {
    let app = spawn_app().await;
    let user = app.register().await;
    let account = app.open_account(&user).await;
    app.fund(&account, 1_000_000).await;
    // Signing out ends the token every other operation runs with, so it goes last, alone.
    let logout = "/api/auth/logout";
    let (_, doc) = app.call("GET", "/openapi.json", None, None).await;
    let operations: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    let rest = schemathesis(&app.base, &user.token, &["--exclude-path", logout]).await;
    let others = format!("{} passed", operations - 1);
    assert!(rest.contains(&others), "every other operation ({others}) was exercised:\n{rest}");
    let last = schemathesis(&app.base, &user.token, &["--include-path", logout]).await;
    assert!(last.contains("1 passed"), "signing out was exercised:\n{last}");
    app.teardown().await;
}
