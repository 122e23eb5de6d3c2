//! Pools and flavors storage (admin).
