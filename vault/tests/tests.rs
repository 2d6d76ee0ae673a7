//! The vault crate's one integration test binary: one module per topic.

mod support;

mod apikey;
mod concurrency;
mod golden;
mod kdf;
mod migration;
#[cfg(unix)]
mod permissions;
mod roundtrip;
mod secrecy;
mod tamper;
mod wrong_machine;
