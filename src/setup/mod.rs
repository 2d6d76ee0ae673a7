//! Setup work (configure, key, databases, schema, service) for the CLI and the desktop app.

use std::path::Path;

use crate::protocol::control::{ControlReply, SetupRequest};

/// Carries out one setup request against the configuration at `config_path`.
pub fn execute(config_path: &Path, request: SetupRequest) -> ControlReply {
    let _ = (config_path, request);
    ControlReply::error("BAD_REQUEST", "setup is not available in this build")
}
