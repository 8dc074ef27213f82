//! Two stacks joined by an in-memory link, for the runtime tests.

#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tcpstack::io::memory::{self, LinkConfig};
use tcpstack::runtime::Stack;

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

pub fn server_addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(SERVER_IP, port)
}

/// (server, client) on a perfect link.
pub fn stacks() -> (Stack, Stack) {
    stacks_over(LinkConfig::default())
}

/// (server, client) on a link that behaves as `config` says.
pub fn stacks_over(config: LinkConfig) -> (Stack, Stack) {
    let (a, b) = memory::link(config);
    let server = Stack::builder()
        .backend(a)
        .address(SERVER_IP)
        .seed(1)
        .build()
        .expect("server stack");
    let client = Stack::builder()
        .backend(b)
        .address(CLIENT_IP)
        .seed(2)
        .build()
        .expect("client stack");
    (server, client)
}

/// Fails the test instead of hanging it.
pub async fn within<F: Future>(seconds: u64, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(seconds), future)
        .await
        .expect("the test did not finish in time")
}

/// Deterministic bytes that are not a short repeating cycle.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(12345);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}
