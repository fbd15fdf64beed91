//! `RateLimiter`: one per provider, shared by every task that fetches from it. It spaces
//! requests to at most `requests_per_second` and holds at most `max_concurrency` in flight, and
//! a rate-limit answer (429 with `Retry-After`) pauses everyone, not just the request that got it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Spacing and concurrency limits for one provider.
#[derive(Debug)]
pub struct RateLimiter {
    spacing: Duration,
    next: Mutex<Instant>,
    paused_until: Mutex<Instant>,
    in_flight: Semaphore,
}

/// Held while a request is in flight.
#[derive(Debug)]
pub struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
}

impl RateLimiter {
    /// At most `requests_per_second` request starts per second and `max_concurrency` requests
    /// in flight.
    pub fn new(requests_per_second: f64, max_concurrency: usize) -> Self {
        let spacing = if requests_per_second > 0.0 && requests_per_second.is_finite() {
            Duration::from_secs_f64(1.0 / requests_per_second)
        } else {
            Duration::ZERO
        };
        RateLimiter {
            spacing,
            next: Mutex::new(Instant::now()),
            paused_until: Mutex::new(Instant::now()),
            in_flight: Semaphore::new(max_concurrency.max(1)),
        }
    }

    /// Waits for a free slot and the next start time; the slot is held until dropped.
    pub async fn acquire(&self) -> Slot<'_> {
        let permit = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + self.spacing;
            start
        };
        tokio::time::sleep_until(start).await;
        // A pause that began while we waited holds us too.
        loop {
            let paused_until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            if paused_until <= Instant::now() {
                break;
            }
            tokio::time::sleep_until(paused_until).await;
        }
        Slot { _permit: permit }
    }

    /// Pauses every caller for `delay` from now (the provider asked us to slow down).
    pub fn pause_all(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if until > *next {
            *next = until;
        }
        let mut paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if until > *paused {
            *paused = until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_to_the_rate() {
        let limiter = RateLimiter::new(10.0, 4);
        let started = Instant::now();
        for _ in 0..20 {
            drop(limiter.acquire().await);
        }
        // 20 starts at 10/s: the last one at 1.9 s.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_millis(2000),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_delays_everyone() {
        let limiter = RateLimiter::new(100.0, 4);
        let started = Instant::now();
        limiter.pause_all(Duration::from_secs(5));
        drop(limiter.acquire().await);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_also_holds_requests_already_waiting() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1.0, 4));
        drop(limiter.acquire().await);
        let started = Instant::now();
        // This one waits for its slot (1 s); a pause of 5 s begins meanwhile.
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move { drop(limiter.acquire().await) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        limiter.pause_all(Duration::from_secs(5));
        waiting.await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(5100),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn limits_requests_in_flight() {
        let limiter = std::sync::Arc::new(RateLimiter::new(0.0, 2));
        let a = limiter.acquire().await;
        let _b = limiter.acquire().await;
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let _c = limiter.acquire().await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third request waits");
        drop(a);
        waiting.await.unwrap();
    }
}
