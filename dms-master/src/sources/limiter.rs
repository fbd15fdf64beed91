//! `RateLimiter`: one per provider, shared by every task that fetches from it. It spaces
//! request starts to its current rate, holds at most `max_concurrency` requests in flight, and
//! a rate-limit answer with `Retry-After` pauses everyone, not just the request that got it.
//!
//! # The adaptive rate
//!
//! A provider's real limit is unknown and changes (Yahoo publishes none), so a fixed rate
//! either leaves most of the allowance unused or meets waves of 429s. An adaptive limiter
//! learns the rate from the answers, the way TCP learns a path's capacity:
//!
//! - **Probe.** From its starting rate (`requests_per_second`) the rate doubles after each
//!   window of served requests (one second's worth at the current rate, at least 4) until the
//!   first sign of overload (TCP's slow start), so a low start costs seconds, not minutes.
//! - **Increase.** After that it grows by a step of 5% after each window of served requests,
//!   here one second's worth and at least 16, so a step is earned only after enough answers to
//!   show its effect, at any rate.
//! - **Decrease.** A 429, a 408 or 5xx, or a timeout multiplies the rate by 0.7, once per
//!   congestion event: the answers to requests that started before that decrease were sent at
//!   the old rate and were already under way, so they neither cut it again nor count toward an
//!   increase. Requests waiting for their turn are re-spaced at once to the lower rate.
//! - Only requests that had to wait for their turn count toward an increase: when the work does
//!   not use the whole rate, nothing is learned about a higher one, and the rate does not drift
//!   up to its ceiling untested.
//! - The rate stays within its floor and ceiling (`min_requests_per_second`,
//!   `max_requests_per_second`).
//!
//! Against a provider that allows `L` requests/s, the rate climbs past `L`, is cut to about
//! `0.7 L` by the first 429, and climbs back in about six windows, so a 429 comes about once
//! per hundred requests and the provider's burst allowance absorbs the time spent below `L`.
//!
//! Key types: [`RateLimiter`]; the [`Slot`] a request holds while in flight, finished with the
//! [`Answer`] it got; [`RateStatus`], what status and metrics show.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Factor applied to the rate at each congestion event.
pub const DECREASE: f64 = 0.7;
/// Step of an increase, as a fraction of the current rate.
pub const INCREASE: f64 = 0.05;
/// Factor of an increase while probing (before the first congestion event).
pub const PROBE: f64 = 2.0;
/// Fewest served requests in a window while probing.
pub const MIN_PROBE_WINDOW: f64 = 4.0;
/// Fewest served requests in a window after the first congestion event.
pub const MIN_WINDOW: f64 = 16.0;

/// Floor and ceiling of an adaptive rate, in requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateBounds {
    pub min: f64,
    pub max: f64,
}

/// What a request's answer says about the provider's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Answered normally (data, or "no such symbol").
    Served,
    /// The provider limits or is overloaded: a 429, a 408 or 5xx, a timeout.
    Overloaded,
    /// Nothing learned about the rate (connection refused, a refused request).
    Other,
}

/// The rate of a provider, as status and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateStatus {
    /// Whether the rate adapts to the provider's answers.
    pub adaptive: bool,
    /// Request starts per second allowed now.
    pub requests_per_second: f64,
    /// Floor and ceiling of the rate (both the fixed rate when not adaptive).
    pub min_requests_per_second: f64,
    pub max_requests_per_second: f64,
    /// No overload seen yet: the rate is still doubling per window.
    pub probing: bool,
    /// Congestion events so far (each cut the rate once).
    pub decreases: u64,
}

/// The control law of an adaptive rate: pure arithmetic on the answers, no clock.
#[derive(Debug, Clone)]
struct AdaptiveRate {
    rate: f64,
    bounds: RateBounds,
    probing: bool,
    /// Served requests counted in the current window.
    window: f64,
    /// Incremented at each decrease; a request carries the epoch it started in.
    epoch: u64,
}

impl AdaptiveRate {
    fn new(start: f64, bounds: RateBounds) -> Self {
        AdaptiveRate {
            rate: start.clamp(bounds.min, bounds.max),
            bounds,
            probing: start < bounds.max,
            window: 0.0,
            epoch: 0,
        }
    }

    /// A request of `epoch` was served; `waited` says whether it had to wait for its turn.
    fn served(&mut self, epoch: u64, waited: bool) {
        if epoch != self.epoch || !waited || self.rate >= self.bounds.max {
            return;
        }
        self.window += 1.0;
        let min_window = if self.probing {
            MIN_PROBE_WINDOW
        } else {
            MIN_WINDOW
        };
        if self.window < self.rate.max(min_window) {
            return;
        }
        self.window = 0.0;
        let next = if self.probing {
            self.rate * PROBE
        } else {
            self.rate * (1.0 + INCREASE)
        };
        self.rate = next.min(self.bounds.max);
    }

    /// A request of `epoch` found the provider overloaded.
    fn overloaded(&mut self, epoch: u64) {
        if epoch != self.epoch {
            return; // sent before the last decrease: part of the same congestion event
        }
        self.rate = (self.rate * DECREASE).max(self.bounds.min);
        self.probing = false;
        self.window = 0.0;
        self.epoch += 1;
    }
}

#[derive(Debug)]
enum Law {
    Fixed(f64),
    Adaptive(AdaptiveRate),
}

#[derive(Debug)]
struct State {
    law: Law,
    /// Start time of the last request (its scheduled time when it had to wait).
    last_start: Option<Instant>,
    paused_until: Instant,
}

impl State {
    fn rate(&self) -> f64 {
        match &self.law {
            Law::Fixed(r) => *r,
            Law::Adaptive(a) => a.rate,
        }
    }

    fn spacing(&self) -> Duration {
        let rate = self.rate();
        if rate > 0.0 && rate.is_finite() {
            Duration::from_secs_f64(1.0 / rate)
        } else {
            Duration::ZERO
        }
    }

    fn epoch(&self) -> u64 {
        match &self.law {
            Law::Fixed(_) => 0,
            Law::Adaptive(a) => a.epoch,
        }
    }
}

/// Spacing and concurrency limits for one provider.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
    in_flight: Semaphore,
}

/// Held while a request is in flight; [`Slot::finish`] reports its answer.
#[derive(Debug)]
pub struct Slot<'a> {
    limiter: &'a RateLimiter,
    _permit: SemaphorePermit<'a>,
    epoch: u64,
    waited: bool,
}

impl Slot<'_> {
    /// Reports what the provider answered, and frees the slot.
    pub fn finish(self, answer: Answer) {
        let mut state = self.limiter.lock();
        if let Law::Adaptive(a) = &mut state.law {
            match answer {
                Answer::Served => a.served(self.epoch, self.waited),
                Answer::Overloaded => a.overloaded(self.epoch),
                Answer::Other => {}
            }
        }
    }
}

impl RateLimiter {
    /// A fixed rate: at most `requests_per_second` request starts per second (none: 0 or not
    /// finite) and `max_concurrency` requests in flight.
    pub fn new(requests_per_second: f64, max_concurrency: usize) -> Self {
        Self::with_law(Law::Fixed(requests_per_second), max_concurrency)
    }

    /// An adaptive rate starting at `requests_per_second`, kept within `bounds`, with at most
    /// `max_concurrency` requests in flight.
    pub fn adaptive(requests_per_second: f64, bounds: RateBounds, max_concurrency: usize) -> Self {
        Self::with_law(
            Law::Adaptive(AdaptiveRate::new(requests_per_second, bounds)),
            max_concurrency,
        )
    }

    fn with_law(law: Law, max_concurrency: usize) -> Self {
        RateLimiter {
            state: Mutex::new(State {
                law,
                last_start: None,
                paused_until: Instant::now(),
            }),
            in_flight: Semaphore::new(max_concurrency.max(1)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot and the next start time; the slot is held until finished or
    /// dropped (a dropped slot reports nothing).
    pub async fn acquire(&self) -> Slot<'_> {
        let permit = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let mut waited = false;
        loop {
            // The due time is computed afresh after every wait: a decrease or a pause that
            // came meanwhile holds this request too.
            let due = {
                let mut state = self.lock();
                let now = Instant::now();
                let spacing = state.spacing();
                let spaced = state.last_start.map_or(now, |l| l + spacing);
                let due = spaced.max(state.paused_until);
                if due <= now {
                    // Late by less than one spacing: keep to the schedule, so timer delays do
                    // not lower the rate; later than that (idle), start from now.
                    let start = if now.duration_since(due) < spacing {
                        due
                    } else {
                        now
                    };
                    state.last_start = Some(start);
                    return Slot {
                        limiter: self,
                        _permit: permit,
                        epoch: state.epoch(),
                        waited,
                    };
                }
                if spaced > now {
                    waited = true;
                }
                due
            };
            tokio::time::sleep_until(due).await;
        }
    }

    /// Pauses every caller for `delay` from now (the provider asked us to slow down).
    pub fn pause_all(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut state = self.lock();
        if until > state.paused_until {
            state.paused_until = until;
        }
    }

    /// The rate now, with its bounds.
    pub fn status(&self) -> RateStatus {
        let state = self.lock();
        match &state.law {
            Law::Fixed(r) => RateStatus {
                adaptive: false,
                requests_per_second: *r,
                min_requests_per_second: *r,
                max_requests_per_second: *r,
                probing: false,
                decreases: 0,
            },
            Law::Adaptive(a) => RateStatus {
                adaptive: true,
                requests_per_second: a.rate,
                min_requests_per_second: a.bounds.min,
                max_requests_per_second: a.bounds.max,
                probing: a.probing,
                decreases: a.epoch,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const BOUNDS: RateBounds = RateBounds {
        min: 0.5,
        max: 100.0,
    };

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
        let limiter = Arc::new(RateLimiter::new(1.0, 4));
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
        let limiter = Arc::new(RateLimiter::new(0.0, 2));
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

    #[tokio::test(start_paused = true)]
    async fn a_fixed_rate_ignores_the_answers() {
        let limiter = RateLimiter::new(2.0, 4);
        for answer in [Answer::Served, Answer::Overloaded, Answer::Served] {
            limiter.acquire().await.finish(answer);
        }
        let s = limiter.status();
        assert!(!s.adaptive);
        assert_eq!(s.requests_per_second, 2.0);
        assert_eq!(s.decreases, 0);
    }

    /// Acquires and finishes `n` requests one after another with `answer`; returns how long
    /// it took.
    async fn run(limiter: &RateLimiter, n: usize, answer: Answer) -> Duration {
        let started = Instant::now();
        for _ in 0..n {
            limiter.acquire().await.finish(answer);
        }
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_doubles_per_window_while_probing_and_the_spacing_follows() {
        let limiter = RateLimiter::adaptive(2.0, BOUNDS, 4);
        // The first request starts at once (nothing to wait for) and teaches nothing.
        run(&limiter, 1, Answer::Served).await;
        assert_eq!(limiter.status().requests_per_second, 2.0);
        // A probing window is at least 4 served requests: 4 at 2/s take 2 s.
        let took = run(&limiter, 4, Answer::Served).await;
        assert_eq!(took, Duration::from_secs(2));
        let s = limiter.status();
        assert_eq!(s.requests_per_second, 4.0);
        assert!(s.probing);
        // The next window runs at the doubled rate: 4 at 4/s.
        let took = run(&limiter, 4, Answer::Served).await;
        assert_eq!(took, Duration::from_secs(1));
        assert_eq!(limiter.status().requests_per_second, 8.0);
        // Then a window is one second's worth: 8 requests at 8/s, 16 at 16/s.
        run(&limiter, 8, Answer::Served).await;
        assert_eq!(limiter.status().requests_per_second, 16.0);
        run(&limiter, 15, Answer::Served).await;
        assert_eq!(limiter.status().requests_per_second, 16.0);
        let took = run(&limiter, 1, Answer::Served).await;
        assert!(
            took >= Duration::from_millis(62) && took <= Duration::from_millis(63),
            "1/16 s apart: {took:?}"
        );
        assert_eq!(limiter.status().requests_per_second, 32.0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overload_cuts_the_rate_once_per_congestion_event() {
        let limiter = RateLimiter::adaptive(20.0, BOUNDS, 8);
        run(&limiter, 1, Answer::Served).await;
        // Eight requests in flight together, all sent at 20/s.
        let mut in_flight = Vec::new();
        for _ in 0..8 {
            in_flight.push(limiter.acquire().await);
        }
        // Every one of them comes back 429: one congestion event, one cut.
        for slot in in_flight {
            slot.finish(Answer::Overloaded);
        }
        let s = limiter.status();
        assert_eq!(s.requests_per_second, 14.0);
        assert_eq!(s.decreases, 1);
        assert!(!s.probing, "probing ends at the first overload");
        // A request sent after the cut that is refused again is a new event.
        limiter.acquire().await.finish(Answer::Overloaded);
        let s = limiter.status();
        assert!((s.requests_per_second - 9.8).abs() < 1e-9, "{s:?}");
        assert_eq!(s.decreases, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_to_requests_sent_before_a_cut_do_not_raise_the_rate() {
        let limiter = RateLimiter::adaptive(20.0, BOUNDS, 64);
        run(&limiter, 1, Answer::Served).await;
        let mut before = Vec::new();
        for _ in 0..40 {
            before.push(limiter.acquire().await);
        }
        limiter.acquire().await.finish(Answer::Overloaded);
        assert_eq!(limiter.status().requests_per_second, 14.0);
        // 40 successes of requests sent at the old rate: more than a window, no increase.
        for slot in before {
            slot.finish(Answer::Served);
        }
        assert_eq!(limiter.status().requests_per_second, 14.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_re_spaces_requests_already_waiting() {
        let limiter = Arc::new(RateLimiter::adaptive(10.0, BOUNDS, 8));
        run(&limiter, 1, Answer::Served).await;
        let in_flight = limiter.acquire().await;
        let started = Instant::now();
        // This one waits for its turn, due 100 ms after the last start.
        let waiting = {
            let limiter = limiter.clone();
            tokio::spawn(async move { drop(limiter.acquire().await) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        in_flight.finish(Answer::Overloaded);
        waiting.await.unwrap();
        // At 7/s its turn is 1/7 s after the last start, not 1/10 s.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(142) && took < Duration::from_millis(150),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_stays_within_its_floor_and_ceiling() {
        let bounds = RateBounds { min: 1.0, max: 5.0 };
        let limiter = RateLimiter::adaptive(2.0, bounds, 4);
        run(&limiter, 1, Answer::Served).await;
        run(&limiter, 200, Answer::Served).await;
        let s = limiter.status();
        assert_eq!(s.requests_per_second, 5.0, "capped at the ceiling: {s:?}");
        // 200 requests at a 5/s ceiling take at least 40 s.
        let took = run(&limiter, 200, Answer::Served).await;
        assert!(took >= Duration::from_secs(39), "{took:?}");
        for _ in 0..10 {
            limiter.acquire().await.finish(Answer::Overloaded);
        }
        let s = limiter.status();
        assert_eq!(s.requests_per_second, 1.0, "held at the floor: {s:?}");
        assert_eq!(s.decreases, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_cut_the_rate_recovers_in_steps_of_five_percent_per_window() {
        let limiter = RateLimiter::adaptive(20.0, BOUNDS, 4);
        run(&limiter, 1, Answer::Served).await;
        limiter.acquire().await.finish(Answer::Overloaded);
        assert_eq!(limiter.status().requests_per_second, 14.0);
        // Each step is 5% and takes a window: one second's worth of requests, at least 16.
        let mut expected = 14.0_f64;
        let mut served = 0;
        let mut steps = 0;
        while limiter.status().requests_per_second < 20.0 {
            let window = expected.max(16.0).ceil() as usize;
            run(&limiter, window - 1, Answer::Served).await;
            assert_eq!(limiter.status().requests_per_second, expected, "mid-window");
            run(&limiter, 1, Answer::Served).await;
            expected *= 1.05;
            let rate = limiter.status().requests_per_second;
            assert!((rate - expected).abs() < 1e-9, "{rate} after a window");
            expected = rate;
            served += window;
            steps += 1;
        }
        // 14 → 20 at 5% a step: 8 steps, 140 served requests, about 8 s.
        assert_eq!(steps, 8);
        assert_eq!(served, 140);
        assert!(!limiter.status().probing);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_did_not_wait_for_their_turn_teach_nothing() {
        let limiter = RateLimiter::adaptive(10.0, BOUNDS, 4);
        // One request every second at a rate of 10/s: the rate is not what holds them back.
        for _ in 0..100 {
            limiter.acquire().await.finish(Answer::Served);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(limiter.status().requests_per_second, 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_leave_the_rate_alone() {
        let limiter = RateLimiter::adaptive(10.0, BOUNDS, 4);
        run(&limiter, 50, Answer::Other).await;
        let s = limiter.status();
        assert_eq!(s.requests_per_second, 10.0);
        assert_eq!(s.decreases, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn converges_near_an_unknown_limit_with_few_overloads() {
        // A provider with a token bucket of 20 requests/s and a burst of 20, answering each
        // request 50 ms after it started; 8 workers; the limiter starts at 2/s.
        let limiter = Arc::new(RateLimiter::adaptive(2.0, BOUNDS, 16));
        let bucket = Arc::new(Mutex::new((20.0_f64, Instant::now())));
        let counts = Arc::new(Mutex::new((0u64, 0u64)));
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (limiter, bucket, counts) = (limiter.clone(), bucket.clone(), counts.clone());
            workers.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let slot = limiter.acquire().await;
                    let allowed = {
                        let mut b = bucket.lock().unwrap();
                        let now = Instant::now();
                        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * 20.0).min(20.0);
                        b.1 = now;
                        if b.0 >= 1.0 {
                            b.0 -= 1.0;
                            true
                        } else {
                            false
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let mut c = counts.lock().unwrap();
                    if allowed {
                        c.0 += 1;
                        slot.finish(Answer::Served);
                    } else {
                        c.1 += 1;
                        slot.finish(Answer::Overloaded);
                    }
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        let (served, refused) = *counts.lock().unwrap();
        let total = served + refused;
        // 120 s at 20/s plus the burst: 2,420 served at most; the probe from 2/s costs a few
        // seconds.
        assert!(served >= 2_250, "served {served}, refused {refused}");
        assert!(
            (refused as f64) < 0.02 * total as f64,
            "served {served}, refused {refused}"
        );
        let rate = limiter.status().requests_per_second;
        assert!((12.0..35.0).contains(&rate), "{rate}");
    }
}
