//! The read-only gate (being built: issue #3).
