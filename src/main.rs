//! The `podium` command: run the operator or print its CRD.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tracing::{error, info};

use podium::metrics::Metrics;
use podium::reconcile::{self, Options};
use podium::server::{self, Health};

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
    /// Run the operator.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file; without it, the in-cluster config or $KUBECONFIG is used.
    #[arg(long, env = "PODIUM_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "PODIUM_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "PODIUM_LOG_FORMAT")]
    log_format: LogFormat,
    /// Address of the /healthz, /readyz and /metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:8080", env = "PODIUM_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Name reported on Events (defaults to $POD_NAME or the host name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => match podium::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            init_logging(args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    error!(error = %e, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %e, "podium stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client, Box<dyn std::error::Error>> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = client(args.kubeconfig.as_ref()).await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let health = Health {
        ready: ready.clone(),
        metrics: metrics.clone(),
    };
    let (addr, serve) = server::bind(args.http_addr, health, stopped()).await?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    let server = tokio::spawn(serve);

    metrics.set_active(true);
    let opts = Options {
        namespace: args.namespace,
        instance: args.instance,
    };
    info!(
        namespace = opts.namespace.as_deref().unwrap_or("<all>"),
        "starting controller"
    );
    reconcile::run(client, opts, metrics, stopped(), move || {
        ready.store(true, Ordering::Relaxed)
    })
    .await;
    server.await??;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
