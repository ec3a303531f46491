//! The device on a tap's stand-in: frames whole, vnet header through.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;

use super::*;

#[test]
fn tx_frames_reach_the_tap_byte_exact() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, ALL);
    let f = frame(3000, 1);
    g.tx.write(TX_BASE, &f);
    // The header in its own buffer (as Linux lays it out), the rest split unevenly.
    let len = g.transmit(&[
        Buf::readable(TX_BASE, 12),
        Buf::readable(TX_BASE + 12, 1000),
        Buf::readable(TX_BASE + 1012, 1988),
    ]);
    assert_eq!(len, 0, "the device writes nothing into transmit buffers");
    assert_eq!(g.host_recv(WAIT).expect("frame on the tap"), f);
    // An indirect chain, and a frame of the largest size.
    let big = frame(MAX_FRAME_LEN, 2);
    g.tx.write(TX_BASE + 0x2_0000, &big);
    g.tx.offer_indirect(
        TX_BASE + 0x1_0000,
        &[
            Buf::readable(TX_BASE + 0x2_0000, 12),
            Buf::readable(TX_BASE + 0x2_0000 + 12, MAX_FRAME_LEN as u32 - 12),
        ],
    );
    g.tx.kick();
    assert!(g.tx.wait_used(WAIT).is_some());
    assert_eq!(g.host_recv(WAIT).expect("big frame"), big);
    assert!(g.irq.used.load(Ordering::SeqCst) >= 1);
    assert_eq!(g.dev.stats().tx_frames.load(Ordering::SeqCst), 2);
}

#[test]
fn rx_without_mrg_rxbuf_fills_one_chain() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, no_mrg());
    // Header and data in two buffers of one chain.
    let at = RX_BASE;
    g.rx.offer(&[Buf::writable(at, 12), Buf::writable(at + 0x100, 4096)]);
    g.rx.kick();
    let f = frame(1500, 3);
    g.host_send(&f);
    assert_eq!(g.rx.wait_used(WAIT).expect("used").1, 1500);
    let mut got = g.rx.read(at, 12);
    got.extend(g.rx.read(at + 0x100, 1488));
    assert_eq!(got, as_received(&f, 1, true));
    // A frame larger than the chain is dropped; the chain stays for the next frame.
    g.offer_rx(1, 1, 2048);
    g.rx.kick();
    g.host_send(&frame(3000, 4));
    let small = frame(100, 5);
    g.host_send(&small);
    let (slot, len) = g.received();
    assert_eq!((slot, len), (1, 100));
    assert_eq!(
        g.rx.read(RX_BASE + RX_SLOT, 100),
        as_received(&small, 1, true)
    );
    assert_eq!(g.dev.stats().rx_dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn rx_with_mrg_rxbuf_spreads_a_frame_over_buffers() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, ALL);
    g.offer_rx(0, 8, 1536);
    g.rx.kick();
    let f = frame(5000, 6);
    g.host_send(&f);
    let mut got = Vec::new();
    for (i, want) in [1536, 1536, 1536, 392].into_iter().enumerate() {
        let (slot, len) = g.received();
        assert_eq!((slot, len), (i as u64, want));
        got.extend(g.rx.read(RX_BASE + slot * RX_SLOT, len as usize));
    }
    assert_eq!(got, as_received(&f, 4, true));
    // The next frame starts in the next buffer, alone.
    let small = frame(60, 7);
    g.host_send(&small);
    assert_eq!(g.received(), (4, 60));
    assert_eq!(
        g.rx.read(RX_BASE + 4 * RX_SLOT, 60),
        as_received(&small, 1, true)
    );
    // The largest frame over 1536-byte buffers: 43 of them.
    g.offer_rx(8, 40, 1536);
    g.rx.kick();
    let big = frame(MAX_FRAME_LEN, 8);
    g.host_send(&big);
    let mut got = Vec::new();
    for _ in 0..43 {
        let (slot, len) = g.received();
        got.extend(g.rx.read(RX_BASE + slot * RX_SLOT, len as usize));
    }
    assert_eq!(got, as_received(&big, 43, true));
}

#[test]
fn header_flags_are_cleared_without_guest_csum() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, ALL & !(1 << VIRTIO_NET_F_GUEST_CSUM));
    g.offer_rx(0, 1, 2048);
    g.rx.kick();
    let f = frame(200, 9);
    g.host_send(&f);
    assert_eq!(g.received(), (0, 200));
    assert_eq!(g.rx.read(RX_BASE, 200), as_received(&f, 1, false));
}

#[test]
fn malformed_tx_chains_are_returned_and_dropped() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, ALL);
    g.tx.write(TX_BASE, &frame(4096, 10));
    // Shorter than the vnet and Ethernet headers.
    assert_eq!(g.transmit(&[Buf::readable(TX_BASE, 8)]), 0);
    // Write-only, and a writable buffer after the frame.
    assert_eq!(g.transmit(&[Buf::writable(TX_BASE, 100)]), 0);
    g.transmit(&[Buf::readable(TX_BASE, 100), Buf::writable(TX_BASE, 100)]);
    // Outside guest memory, or wrapping the address space.
    g.transmit(&[
        Buf::readable(TX_BASE, 12),
        Buf::readable(MEM_SIZE as u64, 100),
    ]);
    g.transmit(&[Buf::readable(u64::MAX - 10, 100)]);
    // Longer than the largest frame, and a chain claiming 4 GiB.
    g.transmit(&[Buf::readable(TX_BASE, 40000), Buf::readable(TX_BASE, 40000)]);
    g.transmit(&[Buf::readable(TX_BASE, u32::MAX)]);
    // A chain looping on itself, and one pointing past the descriptor table: both cut short.
    let at = g.tx.next_index(1);
    g.tx.offer_raw(&[SplitDescriptor::new(
        TX_BASE,
        64,
        VRING_DESC_F_NEXT as u16,
        at,
    )]);
    g.tx.offer_raw(&[SplitDescriptor::new(
        TX_BASE,
        64,
        VRING_DESC_F_NEXT as u16,
        999,
    )]);
    g.tx.kick();
    assert!(g.tx.wait_used(WAIT).is_some() && g.tx.wait_used(WAIT).is_some());
    assert_eq!(
        g.host_recv(QUIET),
        None,
        "nothing malformed reaches the tap"
    );
    assert_eq!(g.dev.stats().tx_dropped.load(Ordering::SeqCst), 9);
    // The device works on.
    let f = frame(64, 11);
    g.tx.write(TX_BASE, &f);
    g.transmit(&[Buf::readable(TX_BASE, 64)]);
    assert_eq!(g.host_recv(WAIT).expect("frame"), f);
}

#[test]
fn malformed_rx_chains_are_returned_empty() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, ALL);
    let slot = |n: u64| RX_BASE + n * RX_SLOT;
    // Read-only, outside memory, too small for the header: each returned with length 0.
    g.rx.offer(&[Buf::readable(slot(0), 2048)]);
    g.rx.offer(&[Buf::writable(MEM_SIZE as u64 + 0x1000, 2048)]);
    g.rx.offer(&[Buf::writable(slot(2), 4)]);
    g.offer_rx(3, 1, 2048);
    g.rx.kick();
    let f = frame(300, 12);
    g.host_send(&f);
    for _ in 0..3 {
        assert_eq!(g.received().1, 0);
    }
    assert_eq!(g.received(), (3, 300));
    assert_eq!(g.rx.read(slot(3), 300), as_received(&f, 1, true));
    // A chain holding nothing in the middle of a frame: the frame is dropped, every chain it
    // took comes back empty, and the next frame is delivered.
    g.offer_rx(4, 1, 1536);
    g.rx.offer(&[Buf::readable(slot(5), 2048)]);
    g.offer_rx(6, 1, 2048);
    g.rx.kick();
    g.host_send(&frame(3000, 13));
    assert_eq!(g.received(), (4, 0));
    assert_eq!(g.received().1, 0);
    let next = frame(100, 14);
    g.host_send(&next);
    assert_eq!(g.received(), (6, 100));
    assert_eq!(g.rx.read(slot(6), 100), as_received(&next, 1, true));
}

#[test]
fn a_guest_that_never_refills_does_not_spin_the_worker() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, ALL);
    let stats = g.dev.stats();
    let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(200 + i, i as u8)).collect();
    for f in &frames {
        g.host_send(f);
    }
    std::thread::sleep(QUIET);
    let woken = stats.wakeups.load(Ordering::SeqCst);
    assert!(woken <= 5, "{woken} wakeups for 5 frames and no buffers");
    std::thread::sleep(QUIET * 3);
    assert_eq!(
        stats.wakeups.load(Ordering::SeqCst),
        woken,
        "the worker spins"
    );
    assert_eq!(g.rx.wait_used(Duration::ZERO), None);
    // EVENT_IDX: the guest is asked to kick on its next buffer.
    assert_eq!(g.rx.avail_event(), g.rx.avail_idx());
    // Sending still works meanwhile.
    let out = frame(80, 20);
    g.tx.write(TX_BASE, &out);
    g.transmit(&[Buf::readable(TX_BASE, 80)]);
    assert_eq!(g.host_recv(WAIT).expect("tx while rx waits"), out);
    // Buffers come: every frame is there, in order, none lost.
    g.offer_rx(0, 5, 2048);
    g.rx.kick();
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(g.received(), (i as u64, f.len() as u32));
        assert_eq!(
            g.rx.read(RX_BASE + i as u64 * RX_SLOT, f.len()),
            as_received(f, 1, true)
        );
    }
    assert_eq!(stats.rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn too_few_buffers_for_a_frame_wait_for_more() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, ALL);
    g.offer_rx(0, 2, 1536);
    g.rx.kick();
    let f = frame(4000, 21);
    g.host_send(&f);
    std::thread::sleep(QUIET);
    assert_eq!(
        g.rx.wait_used(Duration::ZERO),
        None,
        "half a frame is not delivered"
    );
    // The two chains stay available; the kick is asked for past them.
    assert_eq!(g.rx.avail_event(), 2);
    g.offer_rx(2, 1, 1536);
    g.rx.kick();
    let mut got = Vec::new();
    for i in 0..3 {
        let (slot, len) = g.received();
        assert_eq!(slot, i);
        got.extend(g.rx.read(RX_BASE + slot * RX_SLOT, len as usize));
    }
    assert_eq!(got, as_received(&f, 3, true));
}

#[test]
fn a_closed_tap_stops_receive_without_spinning() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, ALL);
    let stats = g.dev.stats();
    g.offer_rx(0, 4, 2048);
    g.rx.kick();
    let (_, host) = seqpacket_pair();
    // Close the host's end by replacing it.
    drop(std::mem::replace(&mut g.host, host));
    assert_settles(&stats);
    // Transmit chains are still returned (their frames lost).
    g.tx.write(TX_BASE, &frame(64, 22));
    g.transmit(&[Buf::readable(TX_BASE, 64)]);
    assert_eq!(stats.tx_dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn reset_stops_and_reactivation_serves_again() {
    let mem = guest_memory();
    let mut g = Guest::start(&mem, ALL);
    assert_eq!(g.backend.offload.load(Ordering::SeqCst), tap_offloads(ALL));
    assert!(g.dev.reset());
    assert_eq!(g.backend.offload.load(Ordering::SeqCst), 0);
    // A frame sent while no driver is there waits in the tap.
    let f = frame(90, 23);
    g.host_send(&f);
    g.rx = DriverQueue::new(&mem, 0x2_0000, 128);
    g.tx = DriverQueue::new(&mem, 0x3_0000, 128);
    g.rx_slots.clear();
    g.activate(no_mrg() & !(1 << VIRTIO_RING_F_EVENT_IDX));
    assert_eq!(
        g.backend.offload.load(Ordering::SeqCst),
        tap_offloads(no_mrg())
    );
    g.offer_rx(0, 1, 2048);
    g.rx.kick();
    assert_eq!(g.received(), (0, 90));
    assert_eq!(g.rx.read(RX_BASE, 90), as_received(&f, 1, true));
    let out = frame(70, 24);
    g.tx.write(TX_BASE, &out);
    g.transmit(&[Buf::readable(TX_BASE, 70)]);
    assert_eq!(g.host_recv(WAIT).expect("frame"), out);
    let err = g
        .dev
        .activate(mem.clone(), counting_interrupt(), vec![g.rx.active()], ALL)
        .unwrap_err();
    assert!(matches!(err, ActivateError::QueueCount { want: 2, got: 1 }));
}

#[test]
fn offloads_follow_what_the_guest_can_receive() {
    let f = |bits: &[u32]| bits.iter().fold(0u64, |acc, &b| acc | bit(b));
    let cases = [
        (0, 0),
        (f(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4]), 0),
        (f(&[VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_ECN]), 0),
        (f(&[VIRTIO_NET_F_GUEST_CSUM]), libc::TUN_F_CSUM),
        (
            f(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4]),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4,
        ),
        (
            f(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN]),
            libc::TUN_F_CSUM,
        ),
        (
            NET_FEATURES | OFFLOAD_FEATURES,
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN,
        ),
    ];
    for (features, want) in cases {
        assert_eq!(tap_offloads(features), want, "features {features:#x}");
    }
}

#[test]
fn config_space_and_features() {
    let (ours, _host) = seqpacket_pair();
    let tap = Arc::new(FakeTap {
        sock: ours,
        offload: AtomicU32::new(0),
    });
    let mac = MacAddr::parse("02:aB:cd:00:11:ff").unwrap();
    let dev = NetDevice::new(tap.clone(), Some(mac), Some(9000)).unwrap();
    let mut config = [0xffu8; 16];
    dev.read_config(0, &mut config);
    assert_eq!(
        config,
        [2, 0xab, 0xcd, 0, 0x11, 0xff, 1, 0, 1, 0, 0x28, 0x23, 0, 0, 0, 0]
    );
    let mut status = [0u8; 2];
    dev.read_config(6, &mut status);
    assert_eq!(u16::from_le_bytes(status), VIRTIO_NET_S_LINK_UP as u16);
    let features = dev.device_features();
    for feature in [
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_MTU,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_EVENT_IDX,
    ] {
        assert_ne!(features & bit(feature), 0, "feature {feature}");
    }
    for feature in [
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_MQ,
        VIRTIO_NET_F_GUEST_UFO,
        VIRTIO_NET_F_HOST_UFO,
    ] {
        assert_eq!(features & bit(feature), 0, "feature {feature}");
    }
    assert_eq!(dev.queue_max_sizes(), &[256, 256]);
    // No MTU: the feature is not offered. No MAC: a random local unicast one.
    let dev = NetDevice::new(tap.clone(), None, None).unwrap();
    assert_eq!(dev.device_features() & bit(VIRTIO_NET_F_MTU), 0);
    let random = dev.mac();
    assert_eq!(random.0[0] & 3, 2, "{random}");
    assert!(matches!(
        NetDevice::new(tap, None, Some(67)),
        Err(NetError::Mtu(67))
    ));
}

#[test]
fn mac_addresses_parse_strictly() {
    let mac = MacAddr::parse("02:5F:00:0a:Bc:01").unwrap();
    assert_eq!(mac.0, [2, 0x5f, 0, 0x0a, 0xbc, 1]);
    assert_eq!(mac.to_string(), "02:5f:00:0a:bc:01");
    for bad in [
        "",
        "02:00:00:00:00",
        "02:00:00:00:00:00:00",
        "02-00-00-00-00-01",
        "2:00:00:00:00:01",
        "+2:00:00:00:00:01",
        "02:00:00:00:00:0g",
        "01:00:5e:00:00:01",
        "00:00:00:00:00:00",
    ] {
        assert!(MacAddr::parse(bad).is_err(), "{bad:?}");
    }
}
