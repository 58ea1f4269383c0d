//! Queue-level behaviour: upstream publishers, dead letters.
