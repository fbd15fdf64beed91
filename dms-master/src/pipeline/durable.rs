//! Writes to the local state file that must not be lost: a journal append, a checkpoint, the
//! catalog. A failing write is not the series' fault, so [`until_written`] tries it again with
//! a growing delay ([`WRITE_RETRY_MAX`] at most) and tells a [`WriteWatch`] (the running task,
//! shown `paused` with the reason) until the disk takes writes again.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// The first wait before a failed state write is tried again; it doubles up to
/// [`WRITE_RETRY_MAX`].
const WRITE_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two tries of a state write that keeps failing.
pub const WRITE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Who hears that writes fail and succeed again.
pub trait WriteWatch: Sync {
    /// A write failed with `reason` (`cannot write <what>: <error>`); called at every failure,
    /// `first` at the first one.
    fn paused(&self, reason: &str, first: bool);
    /// Writes succeed again after at least one failure.
    fn resumed(&self, what: &str);
}

/// Runs `write` until it succeeds, telling `watch` meanwhile. Ends only by succeeding (the
/// caller's `select!` drops it on cancel or shutdown).
pub async fn until_written<T, E: Display, Fut>(
    watch: &dyn WriteWatch,
    what: &str,
    mut write: impl FnMut() -> Fut,
) -> T
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = WRITE_RETRY_FIRST;
    let mut paused = false;
    loop {
        match write().await {
            Ok(v) => {
                if paused {
                    watch.resumed(what);
                }
                return v;
            }
            Err(e) => {
                watch.paused(&format!("cannot write {what}: {e}"), !paused);
                paused = true;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(WRITE_RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl WriteWatch for Heard {
        fn paused(&self, reason: &str, first: bool) {
            self.0
                .lock()
                .unwrap()
                .push(format!("paused: {reason} {first}"));
        }
        fn resumed(&self, what: &str) {
            self.0.lock().unwrap().push(format!("resumed: {what}"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_write_is_tried_again_until_it_succeeds() {
        let heard = Heard::default();
        let mut tries = 0;
        let v: u32 = until_written(&heard, "the catalog", || {
            tries += 1;
            let t = tries;
            async move { if t < 3 { Err("disk full") } else { Ok(7) } }
        })
        .await;
        assert_eq!((v, tries), (7, 3));
        assert_eq!(
            *heard.0.lock().unwrap(),
            [
                "paused: cannot write the catalog: disk full true",
                "paused: cannot write the catalog: disk full false",
                "resumed: the catalog",
            ]
        );
    }

    #[tokio::test]
    async fn a_write_that_succeeds_at_once_tells_nothing() {
        let heard = Heard::default();
        let v: u32 = until_written(&heard, "x", || async { Ok::<_, String>(1) }).await;
        assert_eq!(v, 1);
        assert!(heard.0.lock().unwrap().is_empty());
    }
}
