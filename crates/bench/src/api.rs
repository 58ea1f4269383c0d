//! The gateway's HTTP API as a client sees it: sign-up and sign-in, opening and funding
//! accounts, submitting transfers, holds and their posts, and the workers' metrics pages. The only place
//! the bench speaks HTTP, through `ledgerflow-client`.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use ledgerflow_client::{Accepted, Client, Error, Transfer};
use ledgerflow_domain::AccountId;

use crate::plan::FUNDING_CENTS;

/// Per-request limit: a request that takes longer is a hang, not a slow answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway's API through `ledgerflow-client`, plus plain GETs for the workers' metrics.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    client: Client,
}

impl Api {
    /// A client of the gateway at `base`, keeping up to `pool` idle connections.
    pub fn new(base: &str, pool: usize) -> Result<Self> {
        Self::build(base, pool)
    }

    /// A client of the same gateway keeping up to `pool` idle connections: a load with more
    /// requests in flight than this one's pool keeps would otherwise pay for new connections.
    pub fn with_pool(&self, pool: usize) -> Result<Self> {
        Self::build(self.client.base(), pool)
    }

    fn build(base: &str, pool: usize) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(pool)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { client: Client::with_http(http.clone(), base), http })
    }

    /// The body of a successful GET of `url` (any URL: a worker's metrics page).
    pub async fn get_text(&self, url: &str) -> reqwest::Result<String> {
        self.http.get(url).send().await?.error_for_status()?.text().await
    }

    /// Signs a new user up; returns its token.
    pub async fn register(&self, email: &str, password: &str) -> Result<String> {
        Ok(self.client.register(email, password, None).await.context("POST /api/auth/register")?.token)
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<String> {
        Ok(self.client.login(email, password).await.context("POST /api/auth/login")?.token)
    }

    /// Opens a USD account for the token's user.
    pub async fn open_account(&self, token: &str) -> Result<AccountId> {
        let account = self.client.signed_in(token).open_account(Some("USD")).await.context("POST /api/accounts")?;
        account.id.parse().map_err(|e| anyhow!("account id: {e}"))
    }

    /// SYSTEM initial funds; returns the transaction id to wait for.
    pub async fn fund(&self, system_token: &str, account: AccountId, key: &str) -> Result<String> {
        let accepted = self
            .client
            .signed_in(system_token)
            .initial_funds(&account.to_string(), FUNDING_CENTS, key)
            .await
            .context("POST /transactions/system/initial-funds")?;
        ensure!(!accepted.repeat, "initial funds under {key} were a repeat: the run's keys must be fresh");
        Ok(accepted.transaction.id)
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
        let (from, to) = (from.to_string(), to.to_string());
        let transfer = Transfer { from: &from, to: &to, amount, idempotency_key: key, description: None };
        new_transaction(self.client.signed_in(token).transfer(&transfer).await)
    }

    /// Submits transfers as one `POST /transactions/batch` of the token's user: for each, in
    /// order, the transaction id of a 202 or why it was not accepted (as [`Self::transfer`]).
    pub async fn batch(&self, token: &str, transfers: &[Transfer<'_>]) -> Vec<Result<String, String>> {
        let items: Vec<_> = transfers.iter().map(Transfer::to_json).collect();
        match self.client.signed_in(token).batch(&items).await {
            Ok(answer) if answer.items.len() == transfers.len() => answer
                .items
                .into_iter()
                .map(|item| match (item.status, item.transaction, item.error) {
                    (202, Some(t), _) => Ok(t.id),
                    (status, _, Some(e)) => Err(format!("HTTP {status} {}", e.code)),
                    (status, _, None) => Err(format!("HTTP {status}")),
                })
                .collect(),
            Ok(answer) => {
                vec![Err(format!("a batch of {} got {} answers", transfers.len(), answer.items.len())); transfers.len()]
            }
            Err(e) => {
                let why = new_transaction(Err(e)).err().unwrap_or_default();
                vec![Err(why); transfers.len()]
            }
        }
    }

    /// Submits a hold of `amount` for `timeout_seconds`: as [`Self::transfer`].
    pub async fn hold(&self, token: &str, t: &HoldRequest<'_>) -> Result<String, String> {
        let (from, to) = (t.from.to_string(), t.to.to_string());
        let transfer = Transfer { from: &from, to: &to, amount: t.amount, idempotency_key: t.key, description: None };
        new_transaction(self.client.signed_in(token).hold(&transfer, t.timeout_seconds).await)
    }

    /// Posts the whole of a HELD hold: the POST_HOLD's id, or why it was not accepted.
    pub async fn post_hold(&self, token: &str, hold: &str, key: &str) -> Result<String, String> {
        new_transaction(self.client.signed_in(token).post_hold(hold, key, None).await)
    }
}

/// A hold to submit.
pub struct HoldRequest<'a> {
    pub from: AccountId,
    pub to: AccountId,
    pub amount: i64,
    pub key: &'a str,
    pub timeout_seconds: u32,
}

/// The id of a transaction the gateway took anew (202), or why not: the HTTP status and error
/// code (a 200 is a repeat: the run's keys are fresh, so it is a fault), or the kind of
/// transport failure.
fn new_transaction(answer: ledgerflow_client::Result<Accepted>) -> Result<String, String> {
    match answer {
        Ok(Accepted { repeat: false, transaction }) => Ok(transaction.id),
        Ok(Accepted { repeat: true, .. }) => Err("HTTP 200".to_owned()),
        Err(Error::Api { status, body }) => Err(format!("HTTP {status} {}", body.error.code)),
        Err(Error::Unexpected { status, .. }) => Err(format!("HTTP {status}")),
        Err(Error::Transport(e)) if e.is_timeout() => Err("HTTP timeout".to_owned()),
        Err(Error::Transport(e)) if e.is_connect() => Err("HTTP connect error".to_owned()),
        Err(Error::Transport(_)) => Err("HTTP transport error".to_owned()),
    }
}
