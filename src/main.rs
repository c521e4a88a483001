//! The `podium` command: run the operator or print its CRD.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "podium",
    version,
    about = "Gives a set of pods exactly one leader"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ElectionGroup CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Crd => match podium::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
