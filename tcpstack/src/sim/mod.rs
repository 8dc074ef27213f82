//! A deterministic network simulator: two endpoints joined by a lossy link with a virtual clock.
