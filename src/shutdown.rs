//! Stopping without losing requests, and signals.
//!
//! Left to itself, Pingora 0.9 stops accepting the moment SIGTERM arrives,
//! waits `grace_period_seconds`, then shuts its tokio runtimes down; tokio
//! drops every task still running at its next await, so requests in flight
//! are cut whatever `graceful_shutdown_timeout_seconds` says (that timeout
//! only bounds blocking threads). jwtgate therefore runs the drain itself and
//! hands Pingora the stop only when it is over:
//!
//! 1. SIGTERM: `/readyz` answers 503 and every request the proxy reads from
//!    then on is answered with `Connection: close`, but the proxy keeps
//!    accepting connections for `server.grace_period`, the time a load
//!    balancer needs to stop sending.
//! 2. The proxy listener closes, idle keep-alive connections with it;
//!    connections with a request in flight get up to
//!    `server.graceful_shutdown_timeout` to finish it.
//! 3. As soon as the last one closes (or the timeout passes), what must
//!    happen before the services stop runs ([`SignalWatch::before_stop`]:
//!    the spans still queued are sent), then every service stops and the
//!    process exits 0.
//!
//! SIGINT stops at once, also in the middle of a drain. SIGHUP reloads the
//! config (the server hands [`SignalWatch::on_hangup`] the reload); its
//! default action would kill the process, so its handler is installed
//! before anything else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ListenFds, RuntimeOpts, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::Service as ServiceTrait;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep, timeout_at};

use crate::config::schema::AsWritten;

/// Installs jwtgate's SIGHUP handler, replacing the default action
/// (terminate). Called before the config is read, so a SIGHUP at any point
/// of startup is survived; once running, each one reloads. A tokio
/// handler, once installed, stays for the life of the process, so the
/// short-lived runtime it is installed from may go.
pub fn survive_hangup() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async { signal(SignalKind::hangup()).map(drop) })
}

/// The shutdown state shared by the signal handling, the proxy service and
/// the admin listener. Cloning is cheap.
#[derive(Clone)]
pub struct Drain(Arc<DrainState>);

struct DrainState {
    /// Set on SIGTERM: `/readyz` fails and connections are not kept alive.
    draining: watch::Sender<bool>,
    /// Set when the grace period ends: the proxy listener closes.
    stop_accepting: watch::Sender<bool>,
    /// Set by the proxy service once its listener is closed.
    listener_closed: watch::Sender<bool>,
    open_connections: AtomicUsize,
    /// Woken whenever the open connections drop to zero; a wake-up with no
    /// one waiting is kept for the next wait.
    none_open: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        Self(Arc::new(DrainState {
            draining: watch::channel(false).0,
            stop_accepting: watch::channel(false).0,
            listener_closed: watch::channel(false).0,
            open_connections: AtomicUsize::new(0),
            none_open: Notify::new(),
        }))
    }

    /// True from SIGTERM on.
    pub fn is_draining(&self) -> bool {
        *self.0.draining.borrow()
    }

    /// The watch the proxy hands Pingora for each request: set from SIGTERM
    /// on, so responses say `Connection: close` (and HTTP/2 gets a GOAWAY)
    /// during the grace period and clients reconnect through the load
    /// balancer instead of staying on this process.
    pub fn draining_watch(&self) -> ShutdownWatch {
        self.0.draining.subscribe()
    }

    /// `service` with its listener closed by the drain (at the end of the
    /// grace period) instead of by Pingora (at SIGTERM).
    pub fn own_listener<S>(&self, service: S) -> DrainedListener<S> {
        DrainedListener {
            service,
            drain: self.clone(),
            // Subscribed now, before any signal: the accept loop waits for a
            // change, and must not miss one made before it started.
            stop_accepting: self.0.stop_accepting.subscribe(),
        }
    }

    /// What Pingora waits on before it stops every service: returns once the
    /// drain is over, or at SIGINT.
    pub fn signal_watch(
        &self,
        grace_period: Duration,
        graceful_shutdown_timeout: Duration,
    ) -> SignalWatch {
        SignalWatch {
            drain: self.clone(),
            grace_period,
            graceful_shutdown_timeout,
            on_hangup: None,
            before_stop: None,
        }
    }

    pub fn open_connections(&self) -> usize {
        self.0.open_connections.load(Ordering::Acquire)
    }

    /// Counts one client connection until the guard is dropped; the drain
    /// waits for every one of them.
    pub fn open_connection(&self) -> OpenConnection {
        self.0.open_connections.fetch_add(1, Ordering::AcqRel);
        OpenConnection(self.clone())
    }

    async fn listener_is_closed(&self) {
        let mut closed = self.0.listener_closed.subscribe();
        // Err only if the sender is gone, and `self` holds it.
        let _ = closed.wait_for(|closed| *closed).await;
    }

    async fn no_connection_is_open(&self) {
        while self.open_connections() != 0 {
            self.0.none_open.notified().await;
        }
    }
}

/// Counts one connection for as long as it lives.
pub struct OpenConnection(Drain);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let state = &self.0.0;
        if state.open_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            state.none_open.notify_one();
        }
    }
}

/// See [`Drain::own_listener`].
pub struct DrainedListener<S> {
    service: S,
    drain: Drain,
    stop_accepting: ShutdownWatch,
}

#[async_trait]
impl<S: ServiceTrait> ServiceTrait for DrainedListener<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        _shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let stop_accepting = self.stop_accepting.clone();
        self.service
            .start_service(fds, stop_accepting, listeners_per_fd)
            .await;
        // The listening socket is closed by now: the accept loops that held
        // it have ended.
        self.drain.0.listener_closed.send_replace(true);
    }

    fn name(&self) -> &str {
        self.service.name()
    }

    fn threads(&self) -> Option<usize> {
        self.service.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.service.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.service.on_startup_delay(time_waited)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.service.listen_addresses()
    }
}

/// What SIGHUP does; it must return at once (the signal task waits for it).
type OnHangup = Arc<dyn Fn() + Send + Sync>;

/// What runs once the drain is over, before the services stop.
type BeforeStop = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// See [`Drain::signal_watch`].
pub struct SignalWatch {
    drain: Drain,
    grace_period: Duration,
    graceful_shutdown_timeout: Duration,
    on_hangup: Option<OnHangup>,
    before_stop: Option<BeforeStop>,
}

impl SignalWatch {
    /// Runs `reload` at each SIGHUP instead of only logging it.
    pub fn on_hangup(mut self, reload: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_hangup = Some(Arc::new(reload));
        self
    }

    /// Runs `finish` after the drain (a SIGINT cuts it short): the last
    /// work that needs the services' runtimes, such as sending the spans
    /// of the last requests. It bounds its own wait.
    pub fn before_stop<F>(mut self, finish: impl Fn() -> F + Send + Sync + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.before_stop = Some(Box::new(move || Box::pin(finish())));
        self
    }
}

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let mut signals = match Signals::new(self.on_hangup.clone()) {
            Ok(signals) => signals,
            Err(error) => {
                tracing::error!("cannot listen for signals ({error}); stopping");
                return ShutdownSignal::FastShutdown;
            }
        };
        if let Received::Interrupt = signals.next().await {
            tracing::info!("SIGINT received: stopping now");
            return ShutdownSignal::FastShutdown;
        }
        if self.drain(&mut signals).await.is_none() {
            return ShutdownSignal::FastShutdown;
        }
        if let Some(finish) = &self.before_stop
            && signals.unless_interrupted(finish()).await.is_none()
        {
            return ShutdownSignal::FastShutdown;
        }
        ShutdownSignal::GracefulTerminate
    }
}

impl SignalWatch {
    /// Everything between SIGTERM and the stop; `None` when a SIGINT cut it
    /// short.
    async fn drain(&self, signals: &mut Signals) -> Option<()> {
        let drain = &self.drain;
        // Set before the line is logged: whoever reads the line sees 503.
        drain.0.draining.send_replace(true);
        tracing::info!(
            "SIGTERM received: draining; /readyz answers 503, responses say \
             Connection: close, new connections are still served for {} \
             (server.grace_period)",
            AsWritten(self.grace_period)
        );
        signals.unless_interrupted(sleep(self.grace_period)).await?;

        drain.0.stop_accepting.send_replace(true);
        let deadline = Instant::now() + self.graceful_shutdown_timeout;
        // The listener closes within moments; the deadline only guards
        // against a proxy service that never started.
        let _ = signals
            .unless_interrupted(timeout_at(deadline, drain.listener_is_closed()))
            .await?;
        tracing::info!(
            "grace period over: the proxy no longer accepts connections; waiting up \
             to {} for {} open connections to finish (server.graceful_shutdown_timeout)",
            AsWritten(self.graceful_shutdown_timeout),
            drain.open_connections()
        );

        let finished = signals
            .unless_interrupted(timeout_at(deadline, drain.no_connection_is_open()))
            .await?;
        match finished {
            Ok(()) => tracing::info!("every connection finished: stopping"),
            Err(_) => tracing::warn!(
                "server.graceful_shutdown_timeout passed with {} connections still \
                 open: closing them and stopping",
                drain.open_connections()
            ),
        }
        Some(())
    }
}

enum Received {
    Terminate,
    Interrupt,
}

/// The signals jwtgate acts on.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
    on_hangup: Option<OnHangup>,
}

impl Signals {
    fn new(on_hangup: Option<OnHangup>) -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
            on_hangup,
        })
    }

    /// The next SIGTERM or SIGINT; each SIGHUP on the way triggers a reload.
    async fn next(&mut self) -> Received {
        loop {
            tokio::select! {
                _ = self.terminate.recv() => return Received::Terminate,
                _ = self.interrupt.recv() => return Received::Interrupt,
                _ = self.hangup.recv() => match &self.on_hangup {
                    Some(reload) => {
                        tracing::info!("SIGHUP received: reloading the config");
                        reload();
                    }
                    None => tracing::info!("SIGHUP received: nothing to reload; ignoring it"),
                },
            }
        }
    }

    /// `work`'s output, or `None` if a SIGINT came first. A SIGTERM during
    /// a drain changes nothing.
    async fn unless_interrupted<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return Some(output),
                received = self.next() => match received {
                    Received::Interrupt => {
                        tracing::info!("SIGINT received while draining: stopping now");
                        return None;
                    }
                    Received::Terminate => {
                        tracing::info!("SIGTERM received again: already draining");
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::{Pin, pin};
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn the_wait_for_connections_ends_with_the_last_one() {
        let drain = Drain::new();
        let first = drain.open_connection();
        let second = drain.open_connection();
        let mut wait = pin!(drain.no_connection_is_open());
        assert!(poll_once(wait.as_mut()).is_pending());
        drop(first);
        assert!(poll_once(wait.as_mut()).is_pending());
        assert_eq!(drain.open_connections(), 1);
        drop(second);
        assert!(poll_once(wait.as_mut()).is_ready());
    }

    #[test]
    fn no_wait_when_every_connection_already_closed() {
        let drain = Drain::new();
        drop(drain.open_connection());
        assert!(poll_once(pin!(drain.no_connection_is_open())).is_ready());
    }

    #[test]
    fn draining_is_visible_to_every_clone() {
        let drain = Drain::new();
        let admin_view = drain.clone();
        assert!(!admin_view.is_draining());
        drain.0.draining.send_replace(true);
        assert!(admin_view.is_draining());
    }
}
