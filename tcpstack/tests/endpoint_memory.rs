//! What an idle connection and a TIME-WAIT entry cost in the endpoint's heap, counted by a
//! global allocator that keeps the live byte total: at most 4 KiB an idle established
//! connection; a TIME-WAIT entry stores 52 bytes (asserted in `endpoint::time_wait_table`), and
//! with the hash table's and the timer heap's slack at most 128.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use tcpstack::endpoint::{ConnectionHandle, Endpoint, EndpointConfig};
use tcpstack::wire::{self, SeqNum, TcpFlags, TcpHeader};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The count is process-wide: one measurement at a time.
static MEASURING: Mutex<()> = Mutex::new(());

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PORT: u16 = 80;

fn packet(port: u16, seq: u32, ack: u32, flags: TcpFlags) -> Vec<u8> {
    let header = TcpHeader {
        src_port: port,
        dst_port: PORT,
        seq: SeqNum(seq),
        ack: SeqNum(ack),
        flags,
        window: 65535,
        ..TcpHeader::default()
    };
    let mut out = Vec::new();
    wire::emit_ipv4_tcp(PEER, LOCAL, &header, &[], 1, &mut out);
    out
}

fn drain(ep: &mut Endpoint, now: Instant, buf: &mut Vec<u8>) -> Vec<TcpHeader> {
    let mut out = Vec::new();
    while ep.poll_transmit(now, buf) {
        out.push(wire::parse_ipv4_tcp(buf).unwrap().tcp);
    }
    out
}

/// Live heap bytes now.
fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Accepts `count` connections from ports 10000.. and returns their handles.
fn accept_idle(ep: &mut Endpoint, count: u16, now: Instant) -> Vec<ConnectionHandle> {
    let mut buf = Vec::with_capacity(2048);
    let mut handles = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        let port = 10000 + i;
        ep.handle_packet(&packet(port, 1000, 0, TcpFlags::SYN), now);
        let syn_ack = drain(ep, now, &mut buf)[0];
        let ack = syn_ack.seq.0.wrapping_add(1);
        ep.handle_packet(&packet(port, 1001, ack, TcpFlags::ACK), now);
        drain(ep, now, &mut buf);
        while ep.poll_event().is_some() {}
        handles.push(ep.accept(SocketAddrV4::new(LOCAL, PORT)).unwrap());
        while ep.poll_event().is_some() {}
    }
    handles
}

/// Numbers of connections that put the hash tables at their fullest and at their emptiest
/// (just past a doubling), so that the bound holds wherever the tables stand.
const COUNTS: [u16; 2] = [3584, 4097];

#[test]
fn an_idle_established_connection_costs_at_most_4_kib() {
    let _one_at_a_time = MEASURING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for count in COUNTS {
        let now = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default(), LOCAL, 7, now);
        ep.listen(SocketAddrV4::new(LOCAL, PORT)).unwrap();
        let before = live();
        let handles = accept_idle(&mut ep, count, now);
        let ours = handles.capacity() * std::mem::size_of::<ConnectionHandle>();
        let per_connection = (live() - before) as usize - ours;
        let per_connection = per_connection / usize::from(count);
        eprintln!("{count} idle connections: {per_connection} bytes each");
        assert_eq!(ep.connection_count(), usize::from(count));
        assert!(per_connection <= 4096, "{per_connection} bytes");
    }
}

#[test]
fn a_time_wait_entry_costs_a_small_fraction_of_a_connection() {
    let _one_at_a_time = MEASURING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for count in COUNTS {
        let now = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default(), LOCAL, 7, now);
        ep.listen(SocketAddrV4::new(LOCAL, PORT)).unwrap();
        let before = live();
        let handles = accept_idle(&mut ep, count, now);
        let mut buf = Vec::with_capacity(2048);
        for (i, handle) in handles.iter().enumerate() {
            ep.connection_mut(*handle).unwrap().close();
            let fin = drain(&mut ep, now, &mut buf)[0];
            assert!(fin.flags.fin());
            let port = 10000 + i as u16;
            let flags = TcpFlags::FIN | TcpFlags::ACK;
            ep.handle_packet(&packet(port, 1001, fin.seq.0.wrapping_add(1), flags), now);
            drain(&mut ep, now, &mut buf);
            while ep.poll_event().is_some() {}
        }
        assert_eq!(ep.connection_count(), 0);
        assert_eq!(ep.time_wait_count(), usize::from(count));
        drop(handles);
        let per_entry = (live() - before) as usize / usize::from(count);
        eprintln!("{count} TIME-WAIT entries: {per_entry} bytes each");
        assert!(per_entry <= 128, "{per_entry} bytes");
    }
}
