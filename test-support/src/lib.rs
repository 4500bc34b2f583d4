//! Real servers for the tests, benches and examples of the resilience crate
//! family: etcd, Redis and a DNS server, each started from its binary on
//! free loopback ports and killed on drop.
//!
//! This crate is not published and no library of the family depends on
//! it, except as a dev-dependency: it spawns processes, blocks on
//! `std::process` and `std::fs` calls, and reads an environment variable,
//! all of which is fine in a test and wrong in a crate users ship.
//!
//! # Missing servers
//!
//! Each `start` looks for its binary on `PATH` (then in `/usr/bin`,
//! `/usr/sbin`, `/sbin`). When the binary is missing it prints why the test
//! does not run and returns `None`, so that `cargo test` passes on a
//! machine without the servers; with [`REQUIRE_SERVERS`]
//! (`RESILIENCE_REQUIRE_SERVERS=1`, set by CI) a missing binary panics
//! instead, so that a test against a real server cannot pass without
//! running. On Debian the packages are `etcd-server`, `redis-server` and
//! `dnsmasq-base`.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn run() {
//! use resilience_test_support::RedisServer;
//!
//! let Some(redis) = RedisServer::start().await else { return };
//! println!("connect to {}", redis.url());
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `etcd`: [`EtcdServer`] (the `etcd` binary, 3.4 or later), with a
//!   `resilience_core::etcd::EtcdClient` of it.
//! - `redis`: [`RedisServer`] (the `redis-server` binary), which can also be
//!   paused and resumed to play a hung Redis.
//! - `dns`: [`DnsServer`] (the `dnsmasq` binary) with the records a test
//!   gives it.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "etcd")]
mod etcd;
mod process;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub use crate::dns::DnsServer;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use crate::etcd::EtcdServer;
pub use crate::process::{REQUIRE_SERVERS, find_binary, servers_required};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::redis::RedisServer;
