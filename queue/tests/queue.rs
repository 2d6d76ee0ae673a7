//! The store through its public API, on real files: every state change, idempotency, restarts,
//! a `kill -9` mid-stream, the size cap, a full disk, audit tampering, and damaged columns.

mod support;

mod audit;
mod cap;
mod crash;
mod damaged;
mod states;
