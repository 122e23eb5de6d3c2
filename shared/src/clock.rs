//! Time source. Production reads the system clock; tests move a manual clock instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// Milliseconds added to the system clock; tests advance it.
    Offset(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual() -> Self {
        Clock::Offset(Arc::new(AtomicI64::new(0)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        match self {
            Clock::System => sys,
            Clock::Offset(off) => sys + off.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward; a no-op on the system clock.
    pub fn advance_secs(&self, secs: i64) {
        if let Clock::Offset(off) = self {
            off.fetch_add(secs * 1000, Ordering::SeqCst);
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` as Zaqar prints `created` in stats.
pub fn iso_z(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z")).unwrap_or_default()
}
