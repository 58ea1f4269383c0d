//! The gateway's HTTP API as a client sees it: sign-up and sign-in, opening and funding
//! accounts, submitting transfers, readiness, and the workers' metrics pages. The only place
//! the bench speaks HTTP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use ledgerflow_domain::AccountId;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::plan::FUNDING_CENTS;

/// Per-request limit: a request that takes longer is a hang, not a slow answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Arc<str>,
}

impl Api {
    /// A client of the gateway at `base`, keeping up to `pool` idle connections.
    pub fn new(base: &str, pool: usize) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(pool)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, base: base.into() })
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Result<(StatusCode, Value)> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// POSTs and insists on `want`: for setup, where anything else means the run is void.
    async fn expect(&self, path: &str, token: Option<&str>, body: &Value, want: StatusCode) -> Result<Value> {
        let (status, answer) = self.post(path, token, body).await.with_context(|| format!("POST {path}"))?;
        ensure!(status == want, "POST {path}: expected {want}, got {status}: {answer}");
        Ok(answer)
    }

    /// Whether the gateway answers `/readyz` with a success.
    pub async fn ready(&self) -> bool {
        let url = format!("{}/readyz", self.base);
        self.http.get(url).send().await.is_ok_and(|r| r.status().is_success())
    }

    /// The body of a successful GET of `url` (any URL: a worker's metrics page).
    pub async fn get_text(&self, url: &str) -> reqwest::Result<String> {
        self.http.get(url).send().await?.error_for_status()?.text().await
    }

    /// Signs a new user up; returns its token.
    pub async fn register(&self, email: &str, password: &str) -> Result<String> {
        let body = json!({ "email": email, "password": password });
        let answer = self.expect("/api/auth/register", None, &body, StatusCode::CREATED).await?;
        str_at(&answer, "/token")
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<String> {
        let body = json!({ "email": email, "password": password });
        let answer = self.expect("/api/auth/login", None, &body, StatusCode::OK).await?;
        str_at(&answer, "/token")
    }

    /// Opens a USD account for the token's user.
    pub async fn open_account(&self, token: &str) -> Result<AccountId> {
        let answer =
            self.expect("/api/accounts", Some(token), &json!({ "currency": "USD" }), StatusCode::CREATED).await?;
        str_at(&answer, "/id")?.parse().map_err(|e| anyhow!("account id: {e}"))
    }

    /// SYSTEM initial funds; returns the transaction id to wait for.
    pub async fn fund(&self, system_token: &str, account: AccountId, key: &str) -> Result<String> {
        let body = json!({ "toAccount": account.to_string(), "amount": FUNDING_CENTS, "idempotencyKey": key });
        let answer =
            self.expect("/transactions/system/initial-funds", Some(system_token), &body, StatusCode::ACCEPTED).await?;
        str_at(&answer, "/transaction/id")
    }

    /// Submits a transfer: the transaction id of a 202, or why it was not accepted (the HTTP
    /// status and error code, or the kind of transport failure).
    pub async fn transfer(
        &self,
        token: &str,
        from: AccountId,
        to: AccountId,
        amount: i64,
        key: &str,
    ) -> Result<String, String> {
        let body = json!({
            "fromAccount": from.to_string(), "toAccount": to.to_string(), "amount": amount, "idempotencyKey": key,
        });
        match self.post("/transactions", Some(token), &body).await {
            Ok((StatusCode::ACCEPTED, body)) => {
                str_at(&body, "/transaction/id").map_err(|_| "202 without a transaction id".to_owned())
            }
            Ok((status, body)) => {
                let code = body.pointer("/error/code").and_then(Value::as_str).unwrap_or("");
                Err(format!("HTTP {} {code}", status.as_u16()).trim_end().to_owned())
            }
            Err(e) if e.is_timeout() => Err("HTTP timeout".to_owned()),
            Err(e) if e.is_connect() => Err("HTTP connect error".to_owned()),
            Err(_) => Err("HTTP transport error".to_owned()),
        }
    }
}

fn str_at(v: &Value, pointer: &str) -> Result<String> {
    v.pointer(pointer).and_then(Value::as_str).map(str::to_owned).with_context(|| format!("no {pointer} in {v}"))
}
