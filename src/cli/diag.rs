//! `diag bundle [--out FILE] [--json]`: the diagnostic bundle of spec §8.2 (see
//! `mini_connector::diag`). When an agent answers on the control socket it builds the bundle
//! (and adds its live status); otherwise this process does. Never overwrites a file.

use std::path::PathBuf;

use mini_connector::protocol::control::{BundleInfo, ControlReply, ControlRequest};

use super::{ConfigArg, Fail, Outcome, absolute, print_json};
use crate::exit;

/// `diag`: support tools.
#[derive(Debug, clap::Subcommand)]
pub enum DiagCmd {
    /// Write a ZIP for support: the last 24 h of logs, the last 50 command records (query text
    /// redacted), system and network facts, the configuration and schema without credentials or
    /// private objects, the error log and the doctor report. Never a credential, API key, row
    /// data, the machine key or a private name.
    #[command(after_help = "Exit codes: 0 written; 1 I/O error; 2 bad configuration or the file exists.")]
    Bundle {
        #[command(flatten)]
        config: ConfigArg,
        /// Where to write the ZIP (default: mini-connector-diag-<connector>-<UTC time>.zip in the
        /// current directory). An existing file is never overwritten.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `diag` command.
pub fn diag(command: DiagCmd) -> Outcome {
    match command {
        DiagCmd::Bundle { config: arg, out, json } => {
            let config = arg.load()?;
            let out = match out {
                Some(out) => absolute(&out),
                None => {
                    absolute(&PathBuf::from(mini_connector::diag::default_file_name(&config.connector_name)))
                }
            };
            if out.exists() {
                return Err(Fail::usage(format!(
                    "{} exists; choose another file with --out (a bundle never overwrites)",
                    out.display()
                )));
            }
            let (info, by_agent) = build(&arg, &config, &out)?;
            if json {
                let mut value = serde_json::to_value(&info).unwrap_or_default();
                value["builtBy"] = (if by_agent { "agent" } else { "cli" }).into();
                print_json(&value);
            } else {
                println!(
                    "diagnostic bundle written: {} ({} bytes, {} files{})",
                    info.path,
                    info.bytes,
                    info.files.len(),
                    if by_agent { ", built by the running agent" } else { "; no agent running" }
                );
            }
            Ok(())
        }
    }
}

/// Asks the running agent, else builds here. An agent that cannot write there (a service
/// under its own user) leaves it to this process.
fn build(
    arg: &ConfigArg,
    config: &mini_connector::config::AgentConfig,
    out: &std::path::Path,
) -> Result<(BundleInfo, bool), Fail> {
    let socket = mini_connector::control::socket_path(&arg.path(), config.control_socket.as_deref());
    if socket.exists() {
        let request = ControlRequest::DiagBundle { out: Some(out.display().to_string()) };
        match mini_connector::control::call(&socket, &request) {
            Ok(ControlReply::Bundle(info)) => return Ok((info, true)),
            Ok(ControlReply::Error { code, message }) if code == "FILE_EXISTS" || code == "INVALID_INPUT" => {
                return Err(Fail::usage(message));
            }
            Ok(ControlReply::Error { code, message }) => {
                eprintln!(
                    "note: the running agent could not write the bundle ({message}, {code}); building it here"
                );
            }
            // An older agent, or none answering: build it here.
            Ok(_) | Err(_) => {}
        }
    }
    match mini_connector::diag::bundle(&arg.path(), Some(out)) {
        Ok(info) => Ok((info, false)),
        Err(e @ mini_connector::diag::DiagError::Exists(_)) => Err(Fail::usage(e)),
        Err(mini_connector::diag::DiagError::Config(e)) => Err(e.into()),
        Err(e) => Err(Fail { code: exit::FAILURE, error: e.into() }),
    }
}
