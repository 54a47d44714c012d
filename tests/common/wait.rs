//! Bounded waits. Whether something happens is what the tests assert, never
//! how fast: every bound here is generous, and reaching it fails the test
//! with what was last seen.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Runs `attempt` every `every` until it returns `Ok`, and returns that
/// value; once `limit` has passed, panics with the last `Err`.
pub async fn poll<T, F, Fut>(limit: Duration, every: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{last}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until `addr` accepts a connection: services start independently,
/// and a test talks to one only once it listens. `log` says what the
/// process wrote, for the failure message.
pub fn wait_for_listener(addr: SocketAddr, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
