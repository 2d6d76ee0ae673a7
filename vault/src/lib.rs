//! The credential vault (being built: issue #5).
