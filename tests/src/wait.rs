//! [`wait_until`]: every wait in the tests has a deadline, so a regression fails the test with
//! what was awaited and what was seen last instead of hanging.

use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

/// How often [`wait_until`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one look at an awaited condition found.
#[derive(Debug)]
pub enum Check<T> {
    /// The condition holds: the wait is over and returns this.
    Ready(T),
    /// Not yet: what was seen, reported if the deadline passes.
    Waiting(String),
}

/// Calls `probe` every 50 ms until it finds [`Check::Ready`], and returns that value.
///
/// Fails at once when `probe` fails, and after `timeout` (a probe still running then is
/// abandoned) with a message naming `what` was awaited and the last state seen.
pub async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<Check<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing: no check finished");
    loop {
        match tokio::time::timeout_at(deadline, probe()).await {
            Ok(Ok(Check::Ready(value))) => return Ok(value),
            Ok(Ok(Check::Waiting(seen))) => last = seen,
            Ok(Err(e)) => return Err(e.context(format!("while waiting for {what}"))),
            Err(_) => bail!(
                "timed out after {timeout:?} waiting for {what}, in a check that had not \
                 answered; last seen: {last}"
            ),
        }
        let now = Instant::now();
        if now >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}
