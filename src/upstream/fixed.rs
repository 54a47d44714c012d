//! The endpoints of an upstream that lists only IP addresses and runs no
//! health checks, the common case of a route in front of one legacy
//! backend. They never change, so they need none of the discovery and
//! health bookkeeping of pingora-load-balancing's `Backends`, whose sets
//! cost about 4 KiB a pool: most of a route's memory in a config of
//! 10 000 routes. Only ejection takes one out of rotation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::Endpoint;

pub struct FixedEndpoints {
    /// In the order configured: an endpoint's index is its origin.
    addrs: Box<[SocketAddr]>,
    ready: Box<[AtomicBool]>,
    turn: AtomicUsize,
}

impl FixedEndpoints {
    /// `addrs` must not be empty (a pool's addresses never are).
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        debug_assert!(!addrs.is_empty());
        let ready = addrs.iter().map(|_| AtomicBool::new(true)).collect();
        Self {
            addrs: addrs.into_boxed_slice(),
            ready,
            turn: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Round robin over the ready endpoints: from this request's turn, the
    /// first one ready; with none ready, the turn's own (refusing every
    /// request would be sure to fail). Allocates nothing.
    pub fn select(&self) -> Endpoint {
        let count = self.addrs.len();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % count;
        let chosen = (0..count)
            .map(|step| (turn + step) % count)
            .find(|&index| self.ready[index].load(Ordering::Relaxed))
            .unwrap_or(turn);
        Endpoint {
            addr: self.addrs[chosen],
            origin: chosen,
        }
    }

    pub fn set_ready(&self, addr: SocketAddr, ready: bool) {
        for (index, _) in self.addrs.iter().enumerate().filter(|(_, a)| **a == addr) {
            self.ready[index].store(ready, Ordering::Relaxed);
        }
    }

    /// Every endpoint, and whether it gets traffic.
    pub fn states(&self) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
        self.addrs
            .iter()
            .zip(self.ready.iter())
            .map(|(addr, ready)| (*addr, ready.load(Ordering::Relaxed)))
    }
}
