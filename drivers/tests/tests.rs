//! Integration tests of the `drivers` crate: one binary, one module per topic.

mod common;
mod connect;
mod dialects;
mod discovery;
mod durable;
mod limits;
mod mongodb;
mod params;
mod query_cells;
mod read_only;
mod round_trips;
mod servers;
mod session;
mod suite;
mod tally;
mod tally_fake;
mod tls;
