//! What a client can make the libraries under jwtgate log, per connection:
//! rustls warns of every ClientHello naming an IP address as SNI (wrk and
//! many HTTP libraries send one), and Pingora logs an `ERROR` for every
//! failed TLS handshake and every connection dropped before its request
//! head. Written as they come, a client floods the log at will.
//!
//! [`ClientErrorLayer`] recognises those events, counts each in a metric
//! with a fixed set of `reason` values (never anything the client sent),
//! writes it again at debug level (target [`TARGET`]), and keeps the
//! original from every other layer; one `WARN` line sums up what was
//! counted, at most once per [`SUMMARY_INTERVAL_SECONDS`].

use std::fmt::{self, Write as _};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::logging::{TextEscaped, Truncated};
use super::metrics::counter_vec;

mod reasons;
use reasons::{connection_reason, handshake_reason};

/// The `tracing` target of the debug lines and of the summary.
pub const TARGET: &str = "jwtgate::client_errors";

/// At most one summary line per this many seconds.
pub const SUMMARY_INTERVAL_SECONDS: i64 = 60;

/// Where a recognised event is counted: a family (one metric) and its
/// `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `jwtgate_tls_handshake_failures_total{reason}`.
    Handshake(HandshakeReason),
    /// `jwtgate_tls_ignored_sni_total{reason}`: rustls dropped the SNI and
    /// the handshake went on with the first certificate; not a failure.
    IgnoredSni(SniReason),
    /// `jwtgate_client_connection_errors_total{reason}`: after the
    /// handshake (if any), before a request head was read.
    Connection(ConnectionReason),
}

/// Why a client's TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeReason {
    /// It offered only versions jwtgate refuses (TLS 1.0, 1.1).
    NoSharedVersion,
    /// No cipher suite, key exchange group or signature scheme in common.
    NoSharedCipher,
    /// It closed or reset the connection mid-handshake.
    PeerClosed,
    /// It refused jwtgate's certificate (an alert: unknown CA, expired, ...).
    BadCertificate,
    /// It sent something that is not TLS, or TLS out of order.
    Protocol,
    /// It did not finish within Pingora's 60 s.
    Timeout,
    /// `listen.https.client_certs` requires a certificate and it sent none.
    ClientCertMissing,
    /// Its certificate does not chain to `listen.https.client_certs.ca`
    /// (or has expired, or is not for client authentication).
    ClientCertRefused,
    Other,
}

/// What the SNI that was ignored held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SniReason {
    IpAddress,
    InvalidName,
}

/// Why a connection broke before its request head was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionReason {
    /// Closed or reset while the request head was on its way.
    PeerClosed,
    Timeout,
    /// The HTTP/2 connection preface or settings exchange failed.
    H2Handshake,
    Other,
}

impl HandshakeReason {
    const ALL: [Self; 9] = [
        Self::NoSharedVersion,
        Self::NoSharedCipher,
        Self::PeerClosed,
        Self::BadCertificate,
        Self::Protocol,
        Self::Timeout,
        Self::ClientCertMissing,
        Self::ClientCertRefused,
        Self::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::NoSharedVersion => "no_shared_version",
            Self::NoSharedCipher => "no_shared_cipher",
            Self::PeerClosed => "peer_closed",
            Self::BadCertificate => "bad_certificate",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::ClientCertMissing => "client_cert_missing",
            Self::ClientCertRefused => "client_cert_refused",
            Self::Other => "other",
        }
    }
}

impl SniReason {
    const ALL: [Self; 2] = [Self::IpAddress, Self::InvalidName];

    pub fn label(self) -> &'static str {
        match self {
            Self::IpAddress => "ip_address",
            Self::InvalidName => "invalid_name",
        }
    }
}

impl ConnectionReason {
    const ALL: [Self; 4] = [
        Self::PeerClosed,
        Self::Timeout,
        Self::H2Handshake,
        Self::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::Timeout => "timeout",
            Self::H2Handshake => "h2_handshake",
            Self::Other => "other",
        }
    }
}

impl Kind {
    /// Every kind, in the order the summary lists them.
    fn all() -> impl Iterator<Item = Kind> {
        let handshakes = HandshakeReason::ALL.into_iter().map(Kind::Handshake);
        let sni = SniReason::ALL.into_iter().map(Kind::IgnoredSni);
        let connections = ConnectionReason::ALL.into_iter().map(Kind::Connection);
        handshakes.chain(sni).chain(connections)
    }

    fn index(self) -> usize {
        Kind::all()
            .position(|kind| kind == self)
            .expect("every kind is listed")
    }

    fn family(self) -> &'static str {
        match self {
            Kind::Handshake(_) => "tls_handshake_failed",
            Kind::IgnoredSni(_) => "tls_sni_ignored",
            Kind::Connection(_) => "connection_broke_before_request",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Handshake(reason) => reason.label(),
            Kind::IgnoredSni(reason) => reason.label(),
            Kind::Connection(reason) => reason.label(),
        }
    }
}

const KINDS: usize =
    HandshakeReason::ALL.len() + SniReason::ALL.len() + ConnectionReason::ALL.len();

/// What is done with a recognised event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted, and written at debug level.
    Count(Kind),
    /// Only written at debug level: a detail of a failure Pingora reports
    /// (and that is counted from its line), or a warning that changes
    /// nothing for the connection.
    Quiet,
}

/// Sorts an event by its target (for a `log` record, the record's) and
/// message; `None`: not a client's doing, left alone. Only `WARN` and
/// `ERROR` events are asked about.
pub fn classify(target: &str, message: &str) -> Option<Outcome> {
    if let Some(module) = target.strip_prefix("rustls::") {
        return rustls(module, message);
    }
    let kind = match target {
        "pingora_core::services::listening" => {
            if message.starts_with("Downstream handshake timeout") {
                Kind::Handshake(HandshakeReason::Timeout)
            } else if message.starts_with("Downstream handshake error") {
                Kind::Handshake(handshake_reason(message))
            } else {
                return None;
            }
        }
        "pingora_core::apps" if message.starts_with("H2 handshake error") => {
            Kind::Connection(ConnectionReason::H2Handshake)
        }
        // The admin, echo and authorization listeners.
        "pingora_core::apps::http_app"
            if message.starts_with("HTTP server fails to read from downstream") =>
        {
            Kind::Connection(connection_reason(message))
        }
        // Pingora's line for a request head it could not read names the
        // downstream session's type; its line for a request that failed
        // on its way upstream names the tries instead, and stays.
        "pingora_proxy"
            if message.starts_with("Fail to proxy: ")
                && message.contains(", downstream session type: ")
                && !message.contains(", tries: ") =>
        {
            Kind::Connection(connection_reason(message))
        }
        _ => return None,
    };
    Some(Outcome::Count(kind))
}

/// rustls's own warnings. On a server they describe what a client sent;
/// a failure they precede is counted from Pingora's line. As a client
/// (upstreams, key fetching) rustls warns from `rustls::client`: left alone.
fn rustls(module: &str, message: &str) -> Option<Outcome> {
    if module.starts_with("client") {
        return None;
    }
    let sni = if message.starts_with("Illegal SNI extension: ignoring IP address") {
        Some(SniReason::IpAddress)
    } else if message.starts_with("Illegal SNI hostname received") {
        Some(SniReason::InvalidName)
    } else {
        None
    };
    Some(match sni {
        Some(reason) => Outcome::Count(Kind::IgnoredSni(reason)),
        None => Outcome::Quiet,
    })
}

/// The three metrics, every `reason` made up front so each series exists
/// (at 0) before the first failure.
#[derive(Clone)]
pub struct ClientErrorCounters {
    handshakes: IntCounterVec,
    ignored_sni: IntCounterVec,
    connections: IntCounterVec,
    by_kind: Vec<IntCounter>,
}

impl ClientErrorCounters {
    pub fn new() -> Self {
        let handshakes = counter_vec(
            "jwtgate_tls_handshake_failures_total",
            "Client TLS handshakes on listen.https that failed, by reason",
            &["reason"],
        );
        let ignored_sni = counter_vec(
            "jwtgate_tls_ignored_sni_total",
            "ClientHellos whose SNI was not a host name (ignored; the first certificate served)",
            &["reason"],
        );
        let connections = counter_vec(
            "jwtgate_client_connection_errors_total",
            "Client connections that broke before a request head was read, by reason",
            &["reason"],
        );
        let by_kind = Kind::all()
            .map(|kind| {
                let family = match kind {
                    Kind::Handshake(_) => &handshakes,
                    Kind::IgnoredSni(_) => &ignored_sni,
                    Kind::Connection(_) => &connections,
                };
                family.with_label_values(&[kind.label()])
            })
            .collect();
        Self {
            handshakes,
            ignored_sni,
            connections,
            by_kind,
        }
    }

    /// The process's counters: the log layer is process-wide too.
    pub fn global() -> &'static ClientErrorCounters {
        static GLOBAL: LazyLock<ClientErrorCounters> = LazyLock::new(ClientErrorCounters::new);
        &GLOBAL
    }

    /// The collectors, for a registry.
    pub fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 3] {
        [
            Box::new(self.handshakes.clone()),
            Box::new(self.ignored_sni.clone()),
            Box::new(self.connections.clone()),
        ]
    }

    pub fn get(&self, kind: Kind) -> u64 {
        self.by_kind[kind.index()].get()
    }
}

impl Default for ClientErrorCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// The counts since the last summary, and when that was.
#[derive(Debug, Default)]
pub struct Summary {
    pending: [u64; KINDS],
    /// Unix seconds of the last summary line; `None` before the first.
    last: Option<i64>,
}

impl Summary {
    pub fn record(&mut self, kind: Kind) {
        self.pending[kind.index()] += 1;
    }

    /// The line to write at `now`, if any is pending and the last one is
    /// at least an interval old; the first is written at once, so a burst
    /// shows in the log when it starts.
    pub fn due(&mut self, now: i64) -> Option<String> {
        if self.pending.iter().all(|&count| count == 0) {
            return None;
        }
        if let Some(last) = self.last
            && now - last < SUMMARY_INTERVAL_SECONDS
        {
            return None;
        }
        let mut line = String::new();
        let mut family = "";
        for kind in Kind::all() {
            let count = std::mem::take(&mut self.pending[kind.index()]);
            if count == 0 {
                continue;
            }
            if kind.family() != family {
                family = kind.family();
                let separator = if line.is_empty() { "" } else { "; " };
                let _ = write!(line, "{separator}{family}:");
            }
            let _ = write!(line, " {}={count}", kind.label());
        }
        if let Some(last) = self.last {
            let _ = write!(line, " (in the last {}s)", now - last);
        }
        self.last = Some(now);
        Some(line)
    }

    /// Seconds from `now` until a pending summary is due.
    pub fn wait(&self, now: i64) -> i64 {
        match self.last {
            Some(last) => (last + SUMMARY_INTERVAL_SECONDS - now).max(1),
            None => 1,
        }
    }
}

/// Unix seconds, from the process's clock.
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The layer: see the module's documentation. Give it only `WARN` and
/// `ERROR` events of `rustls`, `pingora_core` and `pingora_proxy` (see
/// [`ClientErrorLayer::targets`]), so no other event pays for reading its
/// message.
pub struct ClientErrorLayer {
    inner: Arc<Shared>,
}

struct Shared {
    counters: &'static ClientErrorCounters,
    summary: Mutex<Summary>,
    now: Now,
    /// Whether the thread writing pending summaries is running.
    ticking: std::sync::Once,
}

impl ClientErrorLayer {
    pub fn new(counters: &'static ClientErrorCounters, now: Now) -> Self {
        Self {
            inner: Arc::new(Shared {
                counters,
                summary: Mutex::new(Summary::default()),
                now,
                ticking: std::sync::Once::new(),
            }),
        }
    }

    /// The events the layer must see (`log` records carry their own
    /// target, which filters match).
    pub fn targets() -> tracing_subscriber::filter::Targets {
        use tracing::Level;
        tracing_subscriber::filter::Targets::new()
            .with_target("rustls", Level::WARN)
            .with_target("pingora_core", Level::WARN)
            .with_target("pingora_proxy", Level::WARN)
    }
}

impl Shared {
    fn record(self: &Arc<Self>, kind: Option<Kind>, message: &str) {
        let reason = kind.map_or("-", Kind::label);
        // Escaped: rustls quotes an SNI name the client chose.
        let mut detail = String::new();
        let _ = write!(TextEscaped(&mut detail), "{}", Truncated::new(message, 512));
        tracing::debug!(target: TARGET, reason, "{detail}");
        let Some(kind) = kind else {
            return;
        };
        self.counters.by_kind[kind.index()].inc();
        let line = {
            let mut summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
            summary.record(kind);
            summary.due((self.now)())
        };
        if let Some(line) = line {
            summary_line(&line);
        }
        // A burst's tail is written by this thread once its interval is
        // over, even if no failure follows.
        self.ticking.call_once(|| {
            let shared = Arc::clone(self);
            let _ = std::thread::Builder::new()
                .name("client-errors".into())
                .spawn(move || shared.tick());
        });
    }

    fn tick(&self) {
        loop {
            let (line, wait) = {
                let mut summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
                let now = (self.now)();
                (summary.due(now), summary.wait(now))
            };
            if let Some(line) = line {
                summary_line(&line);
            }
            std::thread::sleep(Duration::from_secs(wait.unsigned_abs()));
        }
    }
}

fn summary_line(counts: &str) {
    tracing::warn!(
        target: TARGET,
        counts,
        "clients' TLS and connection errors (each counted in /metrics; details at debug level on target {TARGET})"
    );
}

impl<S: Subscriber> Layer<S> for ClientErrorLayer {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = fields
            .log_target
            .as_deref()
            .unwrap_or(event.metadata().target());
        match classify(target, &fields.message) {
            None => true,
            Some(outcome) => {
                let kind = match outcome {
                    Outcome::Count(kind) => Some(kind),
                    Outcome::Quiet => None,
                };
                self.inner.record(kind, &fields.message);
                false
            }
        }
    }
}

/// The message, and a `log` record's own target.
#[derive(Default)]
struct Fields {
    message: String,
    log_target: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "log.target" => self.log_target = Some(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const LISTENING: &str = "pingora_core::services::listening";

    /// Pingora's line for a failed handshake, around rustls's reason.
    fn handshake(reason: &str) -> String {
        format!(
            "Downstream handshake error from 127.0.0.1:4711:  TLSHandshakeFailure context: \
             TLS accept() failed:  TLSHandshakeFailure context: tls connect error: {reason}"
        )
    }

    fn counted(target: &str, message: &str) -> Kind {
        match classify(target, message) {
            Some(Outcome::Count(kind)) => kind,
            other => panic!("{message:?} gave {other:?}"),
        }
    }

    #[test]
    fn handshake_failures_get_a_reason_from_a_fixed_set() {
        use HandshakeReason::*;
        for (reason, expected) in [
            ("tls handshake eof", PeerClosed),
            ("Connection reset by peer (os error 104)", PeerClosed),
            (
                "peer is incompatible: NoCipherSuitesInCommon",
                NoSharedCipher,
            ),
            ("peer is incompatible: NoKxGroupsInCommon", NoSharedCipher),
            (
                "peer is incompatible: SignatureAlgorithmsExtensionRequired",
                NoSharedVersion,
            ),
            (
                "peer is incompatible: SupportedVersionsExtensionRequired",
                NoSharedVersion,
            ),
            ("peer is incompatible: NullCompressionRequired", Other),
            ("received fatal alert: UnknownCA", BadCertificate),
            ("received fatal alert: BadCertificate", BadCertificate),
            ("received fatal alert: CertificateExpired", BadCertificate),
            ("received fatal alert: ProtocolVersion", NoSharedVersion),
            ("received fatal alert: HandshakeFailure", NoSharedCipher),
            ("received fatal alert: DecodeError", Protocol),
            (
                "received corrupt message of type InvalidContentType",
                Protocol,
            ),
            (
                "peer misbehaved: IllegalMiddleboxChangeCipherSpec",
                Protocol,
            ),
            ("peer sent no certificates", ClientCertMissing),
            ("invalid peer certificate: UnknownIssuer", ClientCertRefused),
            ("invalid peer certificate: Expired", ClientCertRefused),
            ("something new", Other),
        ] {
            assert_eq!(
                counted(LISTENING, &handshake(reason)),
                Kind::Handshake(expected),
                "{reason}"
            );
        }
        assert_eq!(
            counted(LISTENING, "Downstream handshake timeout"),
            Kind::Handshake(Timeout)
        );
    }

    #[test]
    fn rustls_server_warnings_are_kept_from_the_log_and_only_sni_counted() {
        let ip =
            "Illegal SNI extension: ignoring IP address presented as hostname (3132372e302e302e31)";
        assert_eq!(
            counted("rustls::msgs::handshake", ip),
            Kind::IgnoredSni(SniReason::IpAddress)
        );
        assert_eq!(
            counted(
                "rustls::msgs::handshake",
                "Illegal SNI hostname received \"a_b\""
            ),
            Kind::IgnoredSni(SniReason::InvalidName)
        );
        for (target, message) in [
            ("rustls::common_state", "Sending warning alert CloseNotify"),
            (
                "rustls::check",
                "Received a Handshake message while expecting [Alert]",
            ),
        ] {
            assert_eq!(classify(target, message), Some(Outcome::Quiet), "{message}");
        }
        // rustls as a client talks to upstreams and key servers: an operator's concern.
        let client = "Server sent non-empty certreq context";
        assert_eq!(classify("rustls::client::tls13", client), None);
    }

    #[test]
    fn only_connections_broken_before_a_request_are_counted() {
        use ConnectionReason::*;
        let head =
            |cause: &str| format!("Fail to proxy: Downstream {cause}, downstream session type: h1");
        for (cause, expected) in [
            (
                "ConnectionClosed context: while reading request headers, bytes already read: 1",
                PeerClosed,
            ),
            (
                "ReadError context: while reading request headers cause: peer closed connection without sending TLS close_notify",
                PeerClosed,
            ),
            (
                "ReadTimedout context: while reading request headers",
                Timeout,
            ),
            ("InvalidHTTPHeader context: odd", Other),
        ] {
            assert_eq!(
                counted("pingora_proxy", &head(cause)),
                Kind::Connection(expected)
            );
        }
        assert_eq!(
            counted(
                "pingora_core::apps",
                "H2 handshake error  HandshakeError context: while h2 handshaking with client cause: Broken pipe (os error 32)"
            ),
            Kind::Connection(H2Handshake)
        );
        let admin = "HTTP server fails to read from downstream:  ConnectionClosed context: while reading request headers";
        assert_eq!(
            counted("pingora_core::apps::http_app", admin),
            Kind::Connection(PeerClosed)
        );
        // A request that failed on its way upstream is the operator's to see.
        let upstream = "Fail to proxy: Upstream ConnectRefused context: x, status: 502, tries: 1, retry: false, GET /, Host: a";
        assert_eq!(classify("pingora_proxy", upstream), None);
        assert_eq!(
            classify(LISTENING, "Accept() failed Too many open files"),
            None
        );
        assert_eq!(
            classify("jwtgate::assemble::server", &handshake("tls handshake eof")),
            None
        );
    }

    #[test]
    fn every_kind_has_its_own_series() {
        let counters = ClientErrorCounters::new();
        let kinds: Vec<Kind> = Kind::all().collect();
        assert_eq!(kinds.len(), KINDS);
        for (n, kind) in kinds.iter().enumerate() {
            for _ in 0..=n {
                counters.by_kind[kind.index()].inc();
            }
        }
        for (n, kind) in kinds.iter().enumerate() {
            assert_eq!(counters.get(*kind), n as u64 + 1, "{kind:?}");
        }
    }

    #[test]
    fn the_summary_comes_at_once_then_at_most_once_an_interval() {
        let clock = ManualClock::at(1_000);
        let mut summary = Summary::default();
        assert_eq!(summary.due(clock.now_unix()), None, "nothing to say");

        summary.record(Kind::IgnoredSni(SniReason::IpAddress));
        assert_eq!(
            summary.due(clock.now_unix()).as_deref(),
            Some("tls_sni_ignored: ip_address=1")
        );

        for _ in 0..15_000 {
            summary.record(Kind::IgnoredSni(SniReason::IpAddress));
        }
        summary.record(Kind::Handshake(HandshakeReason::PeerClosed));
        summary.record(Kind::Handshake(HandshakeReason::PeerClosed));
        summary.record(Kind::Connection(ConnectionReason::PeerClosed));
        clock.advance(SUMMARY_INTERVAL_SECONDS - 1);
        assert_eq!(summary.due(clock.now_unix()), None, "within the interval");
        assert_eq!(summary.wait(clock.now_unix()), 1);

        clock.advance(1);
        assert_eq!(
            summary.due(clock.now_unix()).as_deref(),
            Some(
                "tls_handshake_failed: peer_closed=2; tls_sni_ignored: ip_address=15000; \
                 connection_broke_before_request: peer_closed=1 (in the last 60s)"
            )
        );
        assert_eq!(summary.due(clock.now_unix()), None, "the counts start over");

        // A quiet spell, then one failure: written at once, since the last
        // line is more than an interval old.
        clock.advance(600);
        summary.record(Kind::Handshake(HandshakeReason::Timeout));
        assert_eq!(
            summary.due(clock.now_unix()).as_deref(),
            Some("tls_handshake_failed: timeout=1 (in the last 600s)")
        );
        assert_eq!(summary.wait(clock.now_unix()), SUMMARY_INTERVAL_SECONDS);
    }
}
