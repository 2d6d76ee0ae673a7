//! Integration tests of the gate: one test binary, one module per topic.

mod catalogue;
mod corpus;
mod cost;
mod props;
