//! The one Redis layer: the connection settings every shared piece of
//! state uses (the revocation list, rate-limit budgets), and the connection
//! manager that opens connections with those settings, bounds every command
//! by the timeout, and keeps a session going across outages with a growing
//! pause between attempts. The request path never talks to Redis: each user
//! keeps a local copy that is enforced while Redis is away.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, TlsCertificates};

use crate::config::schema::AsWritten;

pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(250);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `redis` compiled: where Redis is and how to log in. Restart-only.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// As configured (it holds no password).
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Where the password was read from, for descriptions.
    pub password_source: Option<String>,
    /// `rediss://` only; `None` there: the system's root certificates.
    pub tls: Option<RedisTls>,
    pub timeout: Duration,
}

/// The PEM files of `redis.tls`, read when the config was loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTls {
    pub ca: Option<Vec<u8>>,
    /// Certificate chain and private key, for Redis servers that ask for a
    /// client certificate.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// Where they were read from, for descriptions.
    pub files: Vec<String>,
}

/// What a log line or a refused reload may show of the settings: never the
/// password or a key, only where they come from.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redis {} user {:?} password from {} timeout {}",
            self.url,
            self.username,
            self.password_source.as_deref().unwrap_or("(none)"),
            AsWritten(self.timeout),
        )?;
        if let Some(tls) = &self.tls {
            write!(f, " tls [{}]", tls.files.join(", "))?;
        }
        Ok(())
    }
}

/// Why an exchange with Redis failed; `operation` is the step it failed
/// in, as the user's metrics label it.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("{operation}: {source}")]
    Redis {
        operation: &'static str,
        source: redis::RedisError,
    },
    #[error("{operation}: no answer within {timeout:?}")]
    Timeout {
        operation: &'static str,
        timeout: Duration,
    },
    #[error("{operation}: the subscription ended")]
    SubscriptionEnded { operation: &'static str },
    /// A failure on this side while handling what Redis sent.
    #[error("{operation}: {detail}")]
    Local {
        operation: &'static str,
        detail: String,
    },
}

impl RedisFailure {
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Redis { operation, .. }
            | Self::Timeout { operation, .. }
            | Self::SubscriptionEnded { operation }
            | Self::Local { operation, .. } => operation,
        }
    }
}

/// One connection's life, run again after each failure by
/// [`Redis::keep_connected`].
pub trait Session: Sync {
    /// Names the user in log lines (`revocation`, `rate limits`).
    const NAME: &'static str;
    /// What the local copy does while Redis is away, for the warning.
    const MEANWHILE: &'static str;
    /// The step a failure to connect or subscribe is counted under.
    const CONNECT: &'static str;

    /// The channel the replicas publish on: subscribed to before `run`
    /// starts, so nothing published from then on is missed.
    fn channel(&self) -> &str;

    /// Runs on a fresh connection until it fails. `established`: set once
    /// the session is in step, so a failure after it starts the backoff
    /// anew.
    fn run(
        &self,
        link: Link<'_>,
        established: &mut bool,
    ) -> impl Future<Output = Result<Infallible, RedisFailure>> + Send;

    /// Called after each failure, before the pause.
    fn failed(&self, failure: &RedisFailure);
}

/// What a session runs on: the manager (for timeouts and settings), a
/// connection for commands and the messages of its channel.
pub struct Link<'a> {
    pub redis: &'a Redis,
    pub connection: MultiplexedConnection,
    pub messages: Pin<Box<dyn Stream<Item = redis::Msg> + Send>>,
}

/// The connection manager.
pub struct Redis {
    settings: RedisSettings,
    client: Client,
}

impl Redis {
    pub fn new(settings: RedisSettings) -> redis::RedisResult<Self> {
        // rustls is built with two providers here; `rediss://` needs one
        // chosen, and it must be the one the rest of the process uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let info = settings.url.as_str().into_connection_info()?;
        let mut redis_info = info.redis_settings().clone();
        if let Some(username) = &settings.username {
            redis_info = redis_info.set_username(username);
        }
        if let Some(password) = &settings.password {
            redis_info = redis_info.set_password(password);
        }
        let info = info.set_redis_settings(redis_info);
        let client = match &settings.tls {
            None => Client::open(info)?,
            Some(tls) => Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: tls
                        .client
                        .as_ref()
                        .map(|(cert, key)| redis::ClientTlsConfig {
                            client_cert: cert.clone(),
                            client_key: key.clone(),
                        }),
                    root_cert: tls.ca.clone(),
                },
            )?,
        };
        Ok(Self { settings, client })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// `future`, bounded by the configured timeout.
    pub async fn timed<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisFailure> {
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(RedisFailure::Redis { operation, source }),
            Err(_) => Err(RedisFailure::Timeout { operation, timeout }),
        }
    }

    /// A connection for commands, every command bounded by the timeout.
    pub async fn connect(
        &self,
        operation: &'static str,
    ) -> Result<MultiplexedConnection, RedisFailure> {
        let timeout = Some(self.settings.timeout);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        self.timed(
            operation,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
    }

    /// The messages published on `channel` from now on.
    pub async fn subscribe(
        &self,
        operation: &'static str,
        channel: &str,
    ) -> Result<impl Stream<Item = redis::Msg> + Send + use<>, RedisFailure> {
        let mut pubsub = self
            .timed(operation, self.client.get_async_pubsub())
            .await?;
        self.timed(operation, pubsub.subscribe(channel)).await?;
        Ok(pubsub.into_on_message())
    }

    /// Runs `session` for as long as the calling task lives: after each
    /// failure it pauses, from a quarter second doubling up to five, and
    /// connects again. One warning per outage, not one per attempt.
    pub async fn keep_connected<S: Session>(&self, session: &S) {
        let mut backoff = MIN_BACKOFF;
        let mut warned = false;
        loop {
            let mut established = false;
            let Err(failure) = self.session(session, &mut established).await;
            session.failed(&failure);
            if established {
                backoff = MIN_BACKOFF;
                warned = false;
            }
            if !warned {
                tracing::warn!(
                    "{}: Redis unreachable ({failure}); {}, retrying",
                    S::NAME,
                    S::MEANWHILE
                );
                warned = true;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

impl Redis {
    /// One connection's life: connect, subscribe, run.
    async fn session<S: Session>(
        &self,
        session: &S,
        established: &mut bool,
    ) -> Result<Infallible, RedisFailure> {
        let connection = self.connect(S::CONNECT).await?;
        let messages = self.subscribe(S::CONNECT, session.channel()).await?;
        let link = Link {
            redis: self,
            connection,
            messages: Box::pin(messages),
        };
        session.run(link, established).await
    }
}

/// The next message, or the end of the subscription as a failure counted
/// under `operation`.
pub async fn next_message(
    messages: &mut (impl Stream<Item = redis::Msg> + Unpin),
    operation: &'static str,
) -> Result<redis::Msg, RedisFailure> {
    messages
        .next()
        .await
        .ok_or(RedisFailure::SubscriptionEnded { operation })
}

/// A process-unique tag for this replica's messages, which it skips when
/// they come back to it.
pub fn origin() -> u64 {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    u64::from_le_bytes(bytes)
}
