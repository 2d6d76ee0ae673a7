//! `generate completions SHELL` and `generate man`: shell completions and man pages generated
//! from the command-line definition itself (`clap_complete`, `clap_mangen`), so they never
//! drift from `--help`. Hidden from the help: the release script (`scripts/release.sh`) runs
//! it and the packages install the output (bash, zsh, fish completions; `man 1
//! mini-connector` and one page per subcommand). `generate systemd-unit` prints the unit the
//! Linux packages install (the same text `service install` writes, filled for /usr/bin).

use std::path::PathBuf;

use super::{Fail, Outcome};

/// `generate`: completions and man pages for packaging.
#[derive(Debug, clap::Subcommand)]
pub enum GenerateCmd {
    /// Print the completion script for SHELL on stdout (or write it into --out DIR under the
    /// shell's usual file name).
    #[command(after_help = "\
Examples:
  mini-connector generate completions bash > /usr/share/bash-completion/completions/mini-connector
  mini-connector generate completions zsh --out /usr/share/zsh/vendor-completions
  mini-connector generate completions powershell >> $PROFILE")]
    Completions {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
        /// Write the script into this directory instead of stdout.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print the man page (roff) on stdout, or with --out DIR write `mini-connector.1` and one
    /// page per subcommand (`mini-connector-db.1`, ...) there.
    Man {
        /// Write every page into this directory instead of printing the main one.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print the systemd unit `service install` would write for these paths (the packages
    /// install it as /lib/systemd/system/mini-connector.service).
    SystemdUnit {
        /// The program the unit runs.
        #[arg(long, value_name = "PATH", default_value = "/usr/bin/mini-connector")]
        exe: PathBuf,
        /// The configuration it runs with.
        #[arg(long, value_name = "PATH", default_value = "/etc/mini-connector/config.json")]
        config: PathBuf,
        /// The account it runs as.
        #[arg(long, value_name = "NAME", default_value = "mini-connector")]
        user: String,
    },
}

/// Runs `generate` for `cli`, the program's whole command-line definition.
pub fn generate(command: GenerateCmd, mut cli: clap::Command) -> Outcome {
    let name = cli.get_name().to_owned();
    match command {
        GenerateCmd::Completions { shell, out: None } => {
            clap_complete::generate(shell, &mut cli, name, &mut std::io::stdout());
            Ok(())
        }
        GenerateCmd::Completions { shell, out: Some(dir) } => {
            create(&dir)?;
            let path = clap_complete::generate_to(shell, &mut cli, name, &dir)
                .map_err(|e| Fail::runtime(anyhow::anyhow!("cannot write into {}: {e}", dir.display())))?;
            println!("wrote {}", path.display());
            Ok(())
        }
        GenerateCmd::Man { out: None } => clap_mangen::Man::new(cli)
            .render(&mut std::io::stdout())
            .map_err(|e| Fail::runtime(anyhow::anyhow!("cannot write the man page: {e}"))),
        GenerateCmd::Man { out: Some(dir) } => {
            create(&dir)?;
            clap_mangen::generate_to(cli, &dir)
                .map_err(|e| Fail::runtime(anyhow::anyhow!("cannot write into {}: {e}", dir.display())))?;
            println!("wrote the man pages into {}", dir.display());
            Ok(())
        }
        #[cfg(unix)]
        GenerateCmd::SystemdUnit { exe, config, user } => {
            let unit =
                mini_connector::setup::service::systemd::render(&exe, &config, &user).map_err(Fail::usage)?;
            print!("{unit}");
            Ok(())
        }
        #[cfg(not(unix))]
        GenerateCmd::SystemdUnit { .. } => Err(Fail::usage("systemd units are for Linux")),
    }
}

fn create(dir: &std::path::Path) -> Outcome {
    std::fs::create_dir_all(dir)
        .map_err(|e| Fail::runtime(anyhow::anyhow!("cannot create {}: {e}", dir.display())))
}
