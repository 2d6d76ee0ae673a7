//! Mini Connector's desktop app (wip).
pub mod model;
