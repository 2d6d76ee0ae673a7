//! The desktop app's integration tests: one binary, one module per topic.

mod xvfb;
