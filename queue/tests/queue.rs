//! The store through its public API, on real files: every state change, idempotency, restarts,
//! a `kill -9` mid-stream, the size cap, a full disk, audit tampering, damaged columns, and the
//! per-command cost (commits, statement preparations, checkpoints).

mod support;

mod audit;
mod cap;
mod cost;
mod crash;
mod damaged;
mod states;
