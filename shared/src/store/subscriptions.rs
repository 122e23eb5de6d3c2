//! Subscriptions storage (issue 4).
