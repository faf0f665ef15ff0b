//! Tiered response cache (memory, Redis, disk) for analysis responses.
