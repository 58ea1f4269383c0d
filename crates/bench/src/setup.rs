//! Setup before a load, all through the HTTP API: register users, open their accounts, fund
//! each from the SYSTEM user, and wait until every funding is COMPLETED.

use secrecy::ExposeSecret;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use ledgerflow_domain::grants::Grant;
use ledgerflow_domain::{AccountId, TransactionStatus, TransferKind};
use ledgerflow_store::Store;

use crate::listener::{MatchOn, Outcome};
use crate::pool::pool;
use crate::run::Session;
use crate::sandbox::{Credentials, random_hex};

/// The upstream service `--direct` publishes as (`service:bench`).
const SERVICE_NAME: &str = "bench";
/// A little more than workers take to see a new service.
const SERVICES_REFRESH: std::time::Duration = std::time::Duration::from_millis(1500);

/// Registrations run argon2 on the gateway; more at once than its cores only queue up.
const REGISTER_CONCURRENCY: usize = 4;

/// An account the load draws on, with its owner's token.
#[derive(Clone)]
pub struct Funded {
    pub id: AccountId,
    pub token: Arc<str>,
}

impl Session<'_> {
    /// Registers users (one per `--accounts-per-user` accounts, since registration is slow on
    /// purpose), opens the accounts and funds each, waiting until every funding is COMPLETED:
    /// commands are not ordered, so a transfer sent earlier could overtake its funding.
    pub async fn setup(&self, system: &Credentials) -> Result<Arc<Vec<Funded>>> {
        let system_token: Arc<str> =
            self.api.login(&system.email, system.password.expose_secret()).await.context("SYSTEM login")?.into();
        let tokens = self.register_users().await?;
        let accounts = self.open_accounts(tokens).await?;
        let ids = self.request_funding(system_token, &accounts).await?;
        let bar = self.bench.bars.bar(ids.len(), "funded");
        let missing = self.listener.await_all(MatchOn::TransactionId, &ids, self.bench.deadline, &bar).await?;
        ensure!(missing == 0, "{missing} of {} fundings got no result", ids.len());
        {
            let outcomes = self.listener.outcomes();
            let failed: Vec<&Outcome> = ids
                .iter()
                .filter_map(|id| outcomes.get(MatchOn::TransactionId, id))
                .filter(|o| o.status != TransactionStatus::Completed)
                .collect();
            if let Some(first) = failed.first() {
                bail!("{} of {} fundings FAILED (e.g. {:?})", failed.len(), ids.len(), first.reason);
            }
        }
        // `--batch` compares itself with `--direct` in the same run.
        if self.bench.args.direct || self.bench.args.batch.is_some() {
            self.register_service(&accounts).await?;
        }
        Ok(accounts)
    }

    /// Registers `service:bench`, publishing as the bench's broker user, allowed to transfer,
    /// hold and post from the run's accounts, as an operator would register an upstream
    /// system; then waits out the workers' reading of the services.
    async fn register_service(&self, accounts: &[Funded]) -> Result<()> {
        let services = &self.bench.conn.services;
        let user = ledgerflow_messaging::broker_user(&services.amqp_uri).context("the AMQP URI names no user")?;
        let store = Store::connect(&services.mongodb_uri, &self.bench.sandbox.db).await.context("MongoDB")?;
        let name = SERVICE_NAME.parse()?;
        let registered = async {
            store.add_service(&name, &user.parse()?).await?.context("service:bench")?;
            let kinds = [TransferKind::Transfer, TransferKind::Hold, TransferKind::PostHold].into();
            let grant = Grant { kinds, accounts: accounts.iter().map(|a| a.id).collect(), ..Grant::default() };
            store.change_grant(&name, &grant, true).await?;
            anyhow::Ok(())
        }
        .await;
        store.shutdown().await;
        registered?;
        tokio::time::sleep(SERVICES_REFRESH).await;
        Ok(())
    }

    async fn register_users(&self) -> Result<Arc<Vec<Arc<str>>>> {
        let args = &self.bench.args;
        let users = args.accounts().div_ceil(args.accounts_per_user as usize);
        let (api, tag) = (self.api.clone(), self.bench.sandbox.tag.clone());
        let bar = self.bench.bars.bar(users, "users");
        let tokens = pool(users, REGISTER_CONCURRENCY, &bar, move |u| {
            let (api, email) = (api.clone(), format!("bench-{tag}-{u}@example.com"));
            async move { api.register(&email, &random_hex(12)).await.map(Arc::<str>::from) }
        })
        .await?;
        bar.finish();
        Ok(Arc::new(tokens.into_iter().collect::<Result<_>>()?))
    }

    async fn open_accounts(&self, tokens: Arc<Vec<Arc<str>>>) -> Result<Arc<Vec<Funded>>> {
        let (api, n) = (self.api.clone(), self.bench.args.accounts());
        let bar = self.bench.bars.bar(n, "accounts");
        let opened = pool(n, self.bench.args.concurrency(), &bar, move |i| {
            let (api, token) = (api.clone(), Arc::clone(&tokens[i % tokens.len()]));
            async move { api.open_account(&token).await.map(|id| Funded { id, token }) }
        })
        .await?;
        bar.finish();
        Ok(Arc::new(opened.into_iter().collect::<Result<_>>()?))
    }

    /// Asks the SYSTEM user to fund every account; returns the funding transactions' ids.
    async fn request_funding(&self, system_token: Arc<str>, accounts: &Arc<Vec<Funded>>) -> Result<Vec<String>> {
        let (api, accounts, tag) = (self.api.clone(), Arc::clone(accounts), self.bench.sandbox.tag.clone());
        let bar = self.bench.bars.bar(accounts.len(), "funding");
        let ids = pool(accounts.len(), self.bench.args.concurrency(), &bar, move |i| {
            let (api, token, account) = (api.clone(), Arc::clone(&system_token), accounts[i].id);
            let key = format!("bench-fund-{tag}-{i}");
            async move { api.fund(&token, account, &key).await }
        })
        .await?;
        bar.finish();
        ids.into_iter().collect()
    }
}
