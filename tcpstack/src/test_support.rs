//! Shared by the unit tests.
//!
//! Every `cargo test` run is deterministic, property tests included: each `proptest!` block
//! takes [`proptest_config`], whose RNG starts from [`PROPTEST_SEED`] instead of a fresh random
//! seed. Proptest's environment variables still apply on top: `PROPTEST_RNG_SEED=<u64>`
//! explores other cases, `PROPTEST_CASES` changes how many. A failing case is still written to
//! `proptest-regressions/` beside the test's source and replayed first on later runs; commit
//! that file with the fix.

use proptest::test_runner::{Config, RngSeed};

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::io::memory::MemoryBackend;
use crate::runtime::{Stack, StackBuilder};
use crate::tcp::FourTuple;

/// The seed of every property test unless `PROPTEST_RNG_SEED` gives another.
pub(crate) const PROPTEST_SEED: u64 = 0x7463_7073_7461_636b;

/// Proptest's default configuration (its case count and failure persistence) with a fixed RNG
/// seed. Set `cases` on top for a test's own count.
pub(crate) fn proptest_config() -> Config {
    Config {
        rng_seed: RngSeed::Fixed(PROPTEST_SEED),
        ..Config::default()
    }
}

/// 198.18.0.1:80 and the peer 198.18.0.2 on `port`: the tuple the unit tests of the ISN, SYN
/// cookies and TIME-WAIT table hash and store.
pub(crate) fn tuple(port: u16) -> FourTuple {
    FourTuple {
        local: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 80),
        remote: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), port),
    }
}

/// A server (198.18.0.1, seed 1) and a client (198.18.0.2, seed 2) on the two ends of an
/// in-memory link; `server` adds to the server's builder (a capture, say).
pub(crate) fn memory_stacks(
    (server_end, client_end): (MemoryBackend, MemoryBackend),
    server: impl FnOnce(StackBuilder) -> StackBuilder,
) -> (Stack, Stack) {
    let server = server(Stack::builder().backend(server_end))
        .address([198, 18, 0, 1].into())
        .seed(1)
        .build()
        .expect("server stack");
    let client = Stack::builder()
        .backend(client_end)
        .address([198, 18, 0, 2].into())
        .seed(2)
        .build()
        .expect("client stack");
    (server, client)
}

#[cfg(test)]
mod tests {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    use super::*;

    #[test]
    fn property_tests_draw_the_same_cases_every_run() {
        let draw = || {
            let mut runner = TestRunner::new(proptest_config());
            let tree = proptest::collection::vec(proptest::num::u64::ANY, 8)
                .new_tree(&mut runner)
                .expect("no rejection");
            tree.current()
        };
        assert_eq!(draw(), draw());
        let config = proptest_config();
        assert_eq!(config.cases, Config::default().cases);
        assert!(config.failure_persistence.is_some());
    }
}
