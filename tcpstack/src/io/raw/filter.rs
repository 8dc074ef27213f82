//! The classic BPF socket filter of the raw backend: accept untagged, unfragmented IPv4/TCP
//! frames addressed to a reserved endpoint or to the active-open port range of an address, and
//! ICMP destination-unreachable messages quoting TCP to one of those addresses (the endpoint
//! matches what they quote to a connection, RFC 5927); the socket never sees anything else.
//! Every jump is local (a check is followed by its own `ret`), so the program stays valid
//! however many endpoints are reserved.

use std::net::{Ipv4Addr, SocketAddrV4};

/// One cBPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// linux/filter.h opcodes.
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_W_ABS: u16 = 0x20;
const LD_H_IND: u16 = 0x48;
const LD_B_IND: u16 = 0x50;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// Bytes of an accepted frame the socket gets: all of it.
const ACCEPT: u32 = 0x0004_0000;
const DROP: u32 = 0;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> Instruction {
    Instruction { code, jt, jf, k }
}

/// What the filter lets through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reservations {
    pub listeners: Vec<SocketAddrV4>,
    /// (local address, first port, last port) of active opens, inclusive.
    pub active_ranges: Vec<(Ipv4Addr, u16, u16)>,
}

pub fn program(reserved: &Reservations) -> Vec<Instruction> {
    let icmp = icmp_block(reserved);
    let mut p = vec![
        // Ethernet II carrying IPv4 (a VLAN tag makes this 0x8100: not ours).
        op(LD_H_ABS, 0, 0, 12),
        op(JEQ_K, 1, 0, 0x0800),
        op(RET_K, 0, 0, DROP),
        // Not a fragment: MF clear and offset zero (RFC 791 §3.1).
        op(LD_H_ABS, 0, 0, 20),
        op(JSET_K, 0, 1, 0x3fff),
        op(RET_K, 0, 0, DROP),
        // X = IPv4 header length, so [x + 14] starts the transport header.
        op(LDX_B_MSH, 0, 0, 14),
        // TCP goes past the ICMP checks.
        op(LD_B_ABS, 0, 0, 23),
        op(JEQ_K, icmp.len() as u8, 0, 6),
    ];
    p.extend(icmp);
    for listener in &reserved.listeners {
        p.extend([
            op(LD_W_ABS, 0, 0, 30),
            op(JEQ_K, 0, 3, u32::from(*listener.ip())),
            op(LD_H_IND, 0, 0, 16),
            op(JEQ_K, 0, 1, u32::from(listener.port())),
            op(RET_K, 0, 0, ACCEPT),
        ]);
    }
    for &(addr, first, last) in &reserved.active_ranges {
        p.extend([
            op(LD_W_ABS, 0, 0, 30),
            op(JEQ_K, 0, 4, u32::from(addr)),
            op(LD_H_IND, 0, 0, 16),
            op(JGE_K, 0, 2, u32::from(first)),
            op(JGT_K, 1, 0, u32::from(last)),
            op(RET_K, 0, 0, ACCEPT),
        ]);
    }
    p.push(op(RET_K, 0, 0, DROP));
    p
}

/// ICMP type 3 (destination unreachable, RFC 792) quoting a TCP segment, to one of the
/// reserved addresses; anything else that is not TCP is dropped. At most 60 addresses get ICMP
/// (the jump over this block is 8 bits), far more than one stack serves.
fn icmp_block(reserved: &Reservations) -> Vec<Instruction> {
    let mut addresses: Vec<Ipv4Addr> = reserved
        .listeners
        .iter()
        .map(|l| *l.ip())
        .chain(reserved.active_ranges.iter().map(|r| r.0))
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses.truncate(60);
    let mut p = vec![
        op(JEQ_K, 1, 0, 1),
        op(RET_K, 0, 0, DROP),
        op(LD_B_IND, 0, 0, 14),
        op(JEQ_K, 1, 0, 3),
        op(RET_K, 0, 0, DROP),
        // The protocol of the quoted datagram, after the 8-byte ICMP header: errors about
        // anything but TCP (the kernel's protocol-unreachable answers, say) are not ours.
        op(LD_B_IND, 0, 0, 14 + 8 + 9),
        op(JEQ_K, 1, 0, 6),
        op(RET_K, 0, 0, DROP),
        op(LD_W_ABS, 0, 0, 30),
    ];
    for addr in addresses {
        p.extend([op(JEQ_K, 0, 1, u32::from(addr)), op(RET_K, 0, 0, ACCEPT)]);
    }
    p.push(op(RET_K, 0, 0, DROP));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cBPF interpreter for the opcodes above, with the kernel's rule that a load past the
    /// end of the packet drops it.
    fn run(program: &[Instruction], packet: &[u8]) -> u32 {
        let (mut a, mut x) = (0u32, 0u32);
        let mut pc = 0usize;
        let load = |at: usize, len: usize| -> Option<u32> {
            let bytes = packet.get(at..at + len)?;
            Some(bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)))
        };
        loop {
            let i = program[pc];
            pc += 1;
            let k = i.k as usize;
            match i.code {
                LD_H_ABS => match load(k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_ABS => match load(k, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_W_ABS => match load(k, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_B_IND => match load(x as usize + k, 1) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LD_H_IND => match load(x as usize + k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDX_B_MSH => match load(k, 1) {
                    Some(v) => x = (v & 0xf) * 4,
                    None => return 0,
                },
                JEQ_K | JGT_K | JGE_K | JSET_K => {
                    let taken = match i.code {
                        JEQ_K => a == i.k,
                        JGT_K => a > i.k,
                        JGE_K => a >= i.k,
                        _ => a & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                other => panic!("opcode {other:#x} not interpreted"),
            }
        }
    }

    const US: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);

    fn frame(dst: Ipv4Addr, port: u16, ihl: u8, protocol: u8, fragment: u16) -> Vec<u8> {
        let ip_len = usize::from(ihl) * 4;
        let mut f = vec![0u8; 14 + ip_len + 20];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x40 | ihl;
        f[20..22].copy_from_slice(&fragment.to_be_bytes());
        f[23] = protocol;
        f[30..34].copy_from_slice(&dst.octets());
        f[14 + ip_len + 2..14 + ip_len + 4].copy_from_slice(&port.to_be_bytes());
        f
    }

    fn reservations() -> Reservations {
        Reservations {
            listeners: vec![SocketAddrV4::new(US, 7), SocketAddrV4::new(US, 8080)],
            active_ranges: vec![(US, 61000, 65535)],
        }
    }

    #[test]
    fn reserved_endpoints_and_the_range_are_accepted() {
        let p = program(&reservations());
        for port in [7, 8080, 61000, 62000, 65535] {
            assert_eq!(run(&p, &frame(US, port, 5, 6, 0)), ACCEPT, "port {port}");
        }
        // IPv4 options move the TCP header; the filter follows.
        assert_eq!(run(&p, &frame(US, 8080, 8, 6, 0)), ACCEPT);
        // DF alone is not a fragment.
        assert_eq!(run(&p, &frame(US, 8080, 5, 6, 0x4000)), ACCEPT);
    }

    #[test]
    fn everything_else_is_dropped() {
        let p = program(&reservations());
        for port in [6, 9, 22, 60999, 8081] {
            assert_eq!(run(&p, &frame(US, port, 5, 6, 0)), DROP, "port {port}");
        }
        assert_eq!(run(&p, &frame(OTHER, 8080, 5, 6, 0)), DROP, "other address");
        assert_eq!(run(&p, &frame(US, 8080, 5, 17, 0)), DROP, "UDP");
        assert_eq!(
            run(&p, &frame(US, 8080, 5, 6, 0x2000)),
            DROP,
            "first fragment"
        );
        assert_eq!(
            run(&p, &frame(US, 8080, 5, 6, 0x0010)),
            DROP,
            "later fragment"
        );
        let mut vlan = frame(US, 8080, 5, 6, 0);
        vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        assert_eq!(run(&p, &vlan), DROP, "VLAN tagged");
        let mut arp = frame(US, 8080, 5, 6, 0);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(run(&p, &arp), DROP, "ARP");
        let full = frame(US, 8080, 5, 6, 0);
        for cut in 0..36 {
            assert_eq!(run(&p, &full[..cut]), DROP, "truncated to {cut}");
        }
    }

    #[test]
    fn destination_unreachable_to_our_addresses_is_accepted() {
        let p = program(&reservations());
        let icmp = |dst: Ipv4Addr, ihl: u8, kind: u8| {
            let mut f = frame(dst, 0, ihl, 1, 0);
            let at = 14 + usize::from(ihl) * 4;
            f[at] = kind;
            f.resize(at + 8 + 20 + 8, 0);
            f[at + 8] = 0x45;
            f[at + 8 + 9] = 6;
            f
        };
        assert_eq!(run(&p, &icmp(US, 5, 3)), ACCEPT);
        assert_eq!(run(&p, &icmp(US, 7, 3)), ACCEPT, "after IPv4 options");
        assert_eq!(run(&p, &icmp(US, 5, 8)), DROP, "echo request");
        assert_eq!(run(&p, &icmp(US, 5, 0)), DROP, "echo reply");
        assert_eq!(run(&p, &icmp(OTHER, 5, 3)), DROP, "another address");
        let mut about_udp = icmp(US, 5, 3);
        about_udp[14 + 20 + 8 + 9] = 17;
        assert_eq!(run(&p, &about_udp), DROP, "quotes UDP");
        let mut about_253 = icmp(US, 5, 3);
        about_253[14 + 20 + 8 + 9] = 253;
        assert_eq!(run(&p, &about_253), DROP, "quotes protocol 253");
        assert_eq!(
            run(&p, &icmp(US, 5, 3)[..14 + 20 + 8 + 9]),
            DROP,
            "quote cut short"
        );
        let mut fragment = icmp(US, 5, 3);
        fragment[20] = 0x20;
        assert_eq!(run(&p, &fragment), DROP, "fragment");
        // TCP to reserved endpoints is unaffected by the ICMP block in front of it.
        assert_eq!(run(&p, &frame(US, 8080, 5, 6, 0)), ACCEPT);
    }

    #[test]
    fn nothing_reserved_accepts_nothing() {
        let p = program(&Reservations::default());
        assert_eq!(run(&p, &frame(US, 8080, 5, 6, 0)), DROP);
    }
}
