//! `kubectl podium`: the command line, and the dispatch of each command to its module.
//!
//! kubectl runs `kubectl-podium` from PATH for `kubectl podium …`, passing the arguments that
//! follow `podium`; the flags `-n`, `--kubeconfig` and `--context` are therefore the plugin's own.

mod actions;
mod cluster;
mod facts;
mod standing;
mod status;
mod table;
mod watch;
mod why;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kube::ResourceExt;

use crate::cluster::{Error, Target};

#[derive(Parser)]
#[command(
    name = "kubectl-podium",
    bin_name = "kubectl podium",
    version,
    about = "Inspect and steer podium's ElectionGroups: who leads, why, handoffs, pause"
)]
struct Cli {
    /// Namespace; default: the kubeconfig context's.
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig file; default: $KUBECONFIG, else ~/.kube/config, else in-cluster.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; default: the current context.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Leader, term, readiness and next handoff of a group (all groups without GROUP), and
    /// where each selected pod stands.
    Status {
        /// The ElectionGroup.
        group: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Who leads and since when, why the group has no leader, or why POD does not lead.
    Why {
        /// The ElectionGroup.
        group: String,
        /// A pod of the namespace.
        pod: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Hand leadership over: to POD, or to the next candidate (podium.dev/handoff-to).
    Handoff {
        /// The ElectionGroup.
        group: String,
        /// The pod to lead next; default: the next candidate.
        #[arg(long, value_name = "POD")]
        to: Option<String>,
    },
    /// Freeze the group: no leader changes (spec.paused: true).
    Pause {
        /// The ElectionGroup.
        group: String,
    },
    /// Unfreeze the group (spec.paused: false).
    Resume {
        /// The ElectionGroup.
        group: String,
    },
    /// Print a line per change of leader, term, Ready or pause, until Ctrl-C.
    Watch {
        /// The ElectionGroup.
        group: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned columns, or sentences for `why`.
    Table,
    /// JSON.
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let t = Target::connect(
        cli.kubeconfig.as_deref(),
        cli.context.as_deref(),
        cli.namespace.as_deref(),
    )
    .await?;
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Status { group, output } => {
            let (facts, unreadable) = t.facts(group.as_deref()).await?;
            let views: Vec<_> = facts
                .groups
                .iter()
                .filter(|g| group.as_deref().is_none_or(|n| g.name_any() == n))
                .map(|g| standing::view(&facts, g))
                .collect();
            match (output, group, views.first()) {
                (Output::Json, Some(_), Some(v)) => emit_json(&mut out, v),
                (Output::Json, _, _) => emit_json(
                    &mut out,
                    &status::NamespaceView {
                        namespace: t.namespace.clone(),
                        groups: views,
                        unreadable,
                    },
                ),
                (Output::Table, _, _) => {
                    emit(&mut out, &status::render(&views, &unreadable, facts.now))
                }
            }
        }
        Command::Why { group, pod, output } => {
            let (facts, _) = t.facts(Some(&group)).await?;
            let g = facts
                .group(&group)
                .ok_or_else(|| t.not_found("ElectionGroup", &group))?;
            let v = standing::view(&facts, g);
            let answer = match &pod {
                None => why::group(&v, facts.now),
                Some(name) => {
                    let labels = facts
                        .pods
                        .iter()
                        .find(|p| p.name_any() == *name)
                        .map(|p| p.labels().clone());
                    why::pod(
                        &v,
                        name,
                        labels.as_ref(),
                        &facts::selector_text(g),
                        facts.now,
                    )
                }
            };
            match output {
                Output::Json => emit_json(&mut out, &answer),
                Output::Table => {
                    let mut text = answer.reasons.join("\n");
                    text.push('\n');
                    emit(&mut out, &text)
                }
            }
        }
        Command::Handoff { group, to } => {
            let (text, warnings) = actions::handoff(&t, &group, to.as_deref()).await?;
            for w in warnings {
                let _ = writeln!(std::io::stderr(), "warning: {w}");
            }
            emit(&mut out, &text)
        }
        Command::Pause { group } => emit(&mut out, &actions::set_paused(&t, &group, true).await?),
        Command::Resume { group } => emit(&mut out, &actions::set_paused(&t, &group, false).await?),
        Command::Watch { group } => watch::watch(&t, &group, &mut out).await,
    }
}

fn emit(out: &mut impl Write, text: &str) -> Result<(), Error> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(e.to_string()))
}

fn emit_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Output(e.to_string()))?;
    text.push('\n');
    emit(out, &text)
}
