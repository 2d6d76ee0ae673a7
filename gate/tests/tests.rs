//! Integration tests of the gate: one test binary, one module per topic.

mod catalogue;
mod chained_ctes;
mod corpus;
mod cost;
mod mongo;
mod props;
mod tally;
