//! One NATS server or cluster, as the `nats` source and sink reach it: its
//! URLs, how sluice authenticates (user and password, token, NKey seed or
//! a `.creds` file) and TLS (the common client `tls` table).

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::base::nats";

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::metrics::ComponentMetrics;
use super::settings::{BuildContext, BuildError};
use super::tls::ClientTls;

/// `auth = {...}` of a `nats` source or sink: one way to log in. Secrets
/// come from the environment (`*_env`, as every key of sluice that holds
/// one) or a file, never from the pipeline file itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsAuth {
    /// A user, with `password_env`.
    #[serde(default)]
    pub user: Option<String>,
    /// The variable holding `user`'s password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The variable holding a token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The variable holding an NKey seed (`SU...`).
    #[serde(default)]
    pub nkey_env: Option<String>,
    /// A credentials file (JWT and NKey seed, as `nsc` writes them),
    /// relative to the pipeline file.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
}

/// How to log in, with the secrets read.
#[derive(Clone, PartialEq, Eq)]
enum Login {
    None,
    UserPassword(String, String),
    Token(String),
    NKey(String),
    Creds(String),
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Login::None => "none",
            Login::UserPassword(..) => "user and password",
            Login::Token(_) => "token",
            Login::NKey(_) => "nkey",
            Login::Creds(_) => "creds file",
        })
    }
}

fn secret(var: &str, key: &'static str) -> Result<String, BuildError> {
    let value = std::env::var(var)
        .map_err(|_| BuildError::key(key, format!("names `{var}`, which is not set")))?;
    super::secrets::register(&value);
    Ok(value)
}

impl NatsAuth {
    fn login(&self, cx: &BuildContext<'_>) -> Result<Login, BuildError> {
        let given = [
            self.user.is_some() || self.password_env.is_some(),
            self.token_env.is_some(),
            self.nkey_env.is_some(),
            self.creds_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(BuildError::key(
                "auth",
                "give one way to log in: `user` with `password_env`, `token_env`, `nkey_env` or `creds_file`",
            ));
        }
        if let Some(var) = &self.token_env {
            return Ok(Login::Token(secret(var, "auth")?));
        }
        if let Some(var) = &self.nkey_env {
            let seed = secret(var, "auth")?;
            // Checked here, not at the first connection.
            nkeys::KeyPair::from_seed(seed.trim())
                .map_err(|e| BuildError::key("auth", format!("`{var}` holds no NKey seed: {e}")))?;
            return Ok(Login::NKey(seed.trim().to_string()));
        }
        if let Some(path) = &self.creds_file {
            let path = cx.resolve(path);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                BuildError::key("auth", format!("cannot read {}: {e}", path.display()))
            })?;
            async_nats::ConnectOptions::with_credentials(&text).map_err(|e| {
                BuildError::key(
                    "auth",
                    format!("{} is no NATS credentials file: {e}", path.display()),
                )
            })?;
            return Ok(Login::Creds(text));
        }
        match (&self.user, &self.password_env) {
            (Some(user), Some(var)) => Ok(Login::UserPassword(user.clone(), secret(var, "auth")?)),
            (None, None) => Ok(Login::None),
            _ => Err(BuildError::key(
                "auth",
                "give both `user` and `password_env`, or neither",
            )),
        }
    }
}

/// A NATS server or cluster to connect to, checked and ready.
#[derive(Clone)]
pub struct NatsTarget {
    /// The servers, as given (`nats://host:port`, `tls://...`).
    pub urls: Vec<String>,
    login: Login,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTarget")
            .field("urls", &self.urls)
            .field("login", &self.login)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PartialEq for NatsTarget {
    fn eq(&self, other: &Self) -> bool {
        self.urls == other.urls
            && self.login == other.login
            && self.tls.is_some() == other.tls.is_some()
    }
}

impl NatsTarget {
    /// Check `url` (one server, or several separated by commas), `auth`
    /// and `tls`, reading the secrets and files they name.
    pub fn open(
        url: &str,
        auth: Option<&NatsAuth>,
        tls: Option<&ClientTls>,
        cx: &BuildContext<'_>,
    ) -> Result<Self, BuildError> {
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            return Err(BuildError::key("url", "empty: give `nats://host:port`"));
        }
        for u in &urls {
            u.parse::<async_nats::ServerAddr>().map_err(|e| {
                BuildError::key("url", format!("`{u}` is no NATS server address: {e}"))
            })?;
        }
        let login = match auth {
            Some(a) => a.login(cx)?,
            None => Login::None,
        };
        let tls = match tls {
            Some(t) => Some(Arc::new(t.resolved(cx).client_config(cx.name, &[])?)),
            None => None,
        };
        Ok(Self { urls, login, tls })
    }

    /// Connect, once; the client then reconnects by itself for ever,
    /// marking the component down in `/health` while it is away.
    pub async fn connect(
        &self,
        component: &str,
        metrics: &Arc<ComponentMetrics>,
    ) -> Result<async_nats::Client, String> {
        let mut options = match &self.login {
            Login::None => async_nats::ConnectOptions::new(),
            Login::UserPassword(u, p) => {
                async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            Login::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
            Login::NKey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
            Login::Creds(text) => async_nats::ConnectOptions::with_credentials(text)
                .map_err(|e| format!("bad credentials: {e}"))?,
        };
        if let Some(tls) = &self.tls {
            options = options.tls_client_config((**tls).clone()).require_tls(true);
        }
        let (name, m) = (component.to_string(), metrics.clone());
        options = options
            .name(format!("sluice {component}"))
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let (name, m) = (name.clone(), m.clone());
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!(target: LOG_TARGET, component = %name, "nats: disconnected; reconnecting");
                            m.set_down(Some("disconnected from nats; reconnecting".into()));
                        }
                        async_nats::Event::Connected => {
                            tracing::info!(target: LOG_TARGET, component = %name, "nats: connected");
                            m.set_down(None);
                        }
                        async_nats::Event::SlowConsumer(_) => {}
                        async_nats::Event::Closed | async_nats::Event::Draining => {
                            tracing::debug!(target: LOG_TARGET, component = %name, "nats: {event}")
                        }
                        other => tracing::warn!(target: LOG_TARGET, component = %name, "nats: {other}"),
                    }
                }
            });
        options
            .connect(self.urls.as_slice())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.urls.join(",")))
    }
}
