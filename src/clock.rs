//! Time, injected. Production reads the system clock; tests and `tminus
//! shell` use a [`VirtualClock`] they move forward by hand. Nothing else in
//! the crate asks the system for the time. Two helpers use the monotonic
//! clock for what has nothing to do with the bot's time: [`Stopwatch`]
//! measures how long work takes (metrics, a probe's latency), and
//! [`Deadline`] holds a platform's rate-limit window.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::domain::Dur;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until told to move. Millisecond precision, as
/// the store keeps times.
#[derive(Debug)]
pub struct VirtualClock {
    now: Mutex<DateTime<Utc>>,
}

impl VirtualClock {
    pub fn new(start: DateTime<Utc>) -> VirtualClock {
        let start = DateTime::from_timestamp_millis(start.timestamp_millis()).unwrap_or(start);
        VirtualClock {
            now: Mutex::new(start),
        }
    }

    /// Starting at the real time now.
    pub fn starting_now() -> VirtualClock {
        VirtualClock::new(SystemClock.now())
    }

    pub fn advance(&self, by: Dur) -> DateTime<Utc> {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by.to_chrono();
        *now
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long something took.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch(std::time::Instant::now())
    }

    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    pub fn millis(&self) -> u128 {
        self.0.elapsed().as_millis()
    }
}

/// A moment on the monotonic clock a wait lasts until.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(std::time::Instant);

impl Deadline {
    pub fn after(wait: std::time::Duration) -> Deadline {
        Deadline(std::time::Instant::now() + wait)
    }

    /// How long is left, or `None` once it has passed.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        self.0
            .checked_duration_since(std::time::Instant::now())
            .filter(|left| !left.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_when_told() {
        let start: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let clock = VirtualClock::new(start);
        assert_eq!(clock.now(), start);
        assert_eq!(
            clock.advance(Dur::from_mins(30)),
            start + chrono::Duration::minutes(30)
        );
        assert_eq!(clock.now(), start + chrono::Duration::minutes(30));
    }
}
