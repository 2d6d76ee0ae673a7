//! Integration tests: one test binary, one module per topic.
//!
//! The end-to-end modules run the real `mini-connector` binary against the real reference
//! gateway (in-process, TLS 1.3 on loopback, port 0) and a real SQLite database.

mod support;
#[path = "../drivers/tests/tally_fake.rs"]
mod tally_fake;

mod cli_audit;
mod cli_configure;
mod cli_control;
mod cli_db;
mod cli_diag;
mod cli_doctor;
mod cli_generate;
mod cli_json;
mod cli_notify;
mod cli_schema;
mod cli_service;
mod cli_sql_check;
mod cli_truth;
mod control_golden;
mod e2e_auth;
mod e2e_cluster;
mod e2e_compression;
mod e2e_control_api;
mod e2e_differential;
mod e2e_failover;
mod e2e_fallback;
mod e2e_faults;
mod e2e_flow;
mod e2e_gate;
mod e2e_hostile;
mod e2e_keepalive;
mod e2e_lifecycle;
mod e2e_link;
mod e2e_mongodb;
mod e2e_postgres;
mod e2e_proxy;
mod e2e_query;
mod e2e_tally;
#[cfg(unix)] // the updater replaces a running binary by rename: Unix only (Windows updates through the MSI)
mod e2e_update;
mod e2e_upload;
mod protocol_golden;
mod relay;
mod setup_lib;
mod view_privacy;
