//! Integration tests of the reference gateway: real TLS on loopback, a fake agent.

mod common;

mod admin;
mod admin_load;
mod chunks;
mod cli_json;
mod cli_keys;
mod cluster;
mod compression;
mod durable;
mod encodings;
mod fleet;
mod keepalive;
mod limits;
mod longpoll;
mod offline;
// Measures the process through Linux `/proc`.
#[cfg(target_os = "linux")]
mod process;
mod query;
mod restart;
mod session;
mod storage;
mod tls_names;
