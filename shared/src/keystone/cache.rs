//! Token validations remembered for a bounded time, keyed by the SHA-256 of the token so that no
//! token sits in memory longer than its request, nor in a key or a log line.
//!
//! A valid token is remembered until the earlier of its expiry and `now + bound`; `bound` is the
//! revocation bound: a token revoked in Keystone keeps working here for at most that long (Zaqar's
//! keystonemiddleware remembers for 300 s by default). An invalid token is remembered for `bound`
//! too (a token never becomes valid later). Keystone being unreachable is never remembered.

use super::token::Verdict;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub type TokenKey = [u8; 32];

pub fn key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

/// The first bytes of a key as hex: enough to follow one token through the logs, useless to replay it.
pub fn key_hint(key: &TokenKey) -> String {
    key[..4].iter().map(|b| format!("{b:02x}")).collect()
}

pub struct TokenCache {
    entries: HashMap<TokenKey, (Verdict, i64)>,
    bound_ms: i64,
    capacity: usize,
}

impl TokenCache {
    pub fn new(bound_ms: i64, capacity: usize) -> Self {
        TokenCache { entries: HashMap::new(), bound_ms, capacity }
    }

    /// The remembered verdict, if still fresh at `now_ms`. A valid token past its expiry is invalid
    /// whatever was remembered.
    pub fn get(&mut self, key: &TokenKey, now_ms: i64) -> Option<Verdict> {
        let (verdict, until) = self.entries.get(key)?;
        if *until <= now_ms {
            self.entries.remove(key);
            return None;
        }
        match verdict {
            Verdict::Valid(id) if id.expires_at * 1000 <= now_ms => Some(Verdict::Invalid),
            v => Some(v.clone()),
        }
    }

    /// Remembers a verdict; `Unavailable` and a zero bound are not remembered.
    pub fn put(&mut self, key: TokenKey, verdict: Verdict, now_ms: i64) {
        let until = match &verdict {
            Verdict::Unavailable => return,
            Verdict::Valid(id) => (now_ms + self.bound_ms).min(id.expires_at * 1000),
            Verdict::Invalid => now_ms + self.bound_ms,
        };
        if until <= now_ms {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, u)| *u > now_ms);
            if self.entries.len() >= self.capacity {
                // Still full of fresh entries: drop the one that would expire first.
                if let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, u))| *u).map(|(k, _)| *k) {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(key, (verdict, until));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystone::token::Identity;

    fn valid(expires_at: i64) -> Verdict {
        Verdict::Valid(Identity { user_id: "u".into(), project_id: Some("p".into()), roles: vec![], expires_at })
    }

    #[test]
    fn keys_are_hashes_not_tokens() {
        let k = key("gAAAAABsecret");
        assert_eq!(k, key("gAAAAABsecret"));
        assert_ne!(k, key("gAAAAABsecreT"));
        assert!(!key_hint(&k).contains("secret"));
        assert_eq!(key_hint(&k).len(), 8);
    }

    #[test]
    fn valid_tokens_last_until_the_bound() {
        let mut c = TokenCache::new(60_000, 10);
        c.put(key("t"), valid(10_000), 1_000_000);
        assert_eq!(c.get(&key("t"), 1_059_999), Some(valid(10_000)));
        assert_eq!(c.get(&key("t"), 1_060_000), None, "revocation bound reached: ask Keystone again");
        assert!(c.is_empty());
    }

    #[test]
    fn valid_tokens_last_no_longer_than_their_expiry() {
        let mut c = TokenCache::new(60_000, 10);
        c.put(key("t"), valid(1_010), 1_000_000);
        assert_eq!(c.get(&key("t"), 1_009_999), Some(valid(1_010)));
        assert_eq!(c.get(&key("t"), 1_010_000), None);
        // Already expired: not remembered at all.
        c.put(key("old"), valid(999), 1_000_000);
        assert_eq!(c.get(&key("old"), 1_000_000), None);
    }

    #[test]
    fn invalid_is_remembered_unavailable_is_not() {
        let mut c = TokenCache::new(60_000, 10);
        c.put(key("bad"), Verdict::Invalid, 0);
        c.put(key("later"), Verdict::Unavailable, 0);
        assert_eq!(c.get(&key("bad"), 59_999), Some(Verdict::Invalid));
        assert_eq!(c.get(&key("later"), 1), None);
    }

    #[test]
    fn zero_bound_disables_caching() {
        let mut c = TokenCache::new(0, 10);
        c.put(key("t"), valid(i64::MAX / 2000), 0);
        c.put(key("bad"), Verdict::Invalid, 0);
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_is_a_hard_limit() {
        let mut c = TokenCache::new(60_000, 3);
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            c.put(key(t), Verdict::Invalid, i as i64);
        }
        c.put(key("d"), Verdict::Invalid, 10);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&key("a"), 10), None, "the entry expiring first made room");
        assert_eq!(c.get(&key("d"), 10), Some(Verdict::Invalid));
        // Expired entries are dropped before fresh ones.
        c.put(key("e"), Verdict::Invalid, 60_001);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&key("d"), 60_001), Some(Verdict::Invalid));
    }
}
