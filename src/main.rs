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

use std::time::Duration;

use podium_member::supervise::{self, ExecConfig};
use podium_member::{Member, MemberConfig, files, print_changes};
use podium_operator::leadership;
use podium_operator::lists::ListMode;
use podium_operator::metrics::Metrics;
use podium_operator::runtime::{self, Options};
use podium_operator::server::{self, Health};

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
    /// Follow this pod's role (POD_NAME, POD_NAMESPACE): print it, keep files, or run a command
    /// while leading.
    Member(MemberArgs),
}

#[derive(clap::Args)]
struct MemberArgs {
    /// Kubeconfig file; without it, the in-cluster config or $KUBECONFIG is used.
    #[arg(long, env = "PODIUM_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// How long the watch may stay broken before the role is `unknown`.
    #[arg(long, default_value = "5s", value_parser = duration)]
    unknown_after: Duration,
    /// Log format (logs go to stderr).
    #[arg(long, value_enum, default_value = "text", env = "PODIUM_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    action: MemberAction,
}

#[derive(Subcommand)]
enum MemberAction {
    /// Print one JSON line per change: {"role","term","group","leader","at"}.
    Watch,
    /// Run CMD only while this pod leads, with PODIUM_TERM set; SIGTERM on losing leadership.
    Exec {
        /// How long CMD has after SIGTERM before SIGKILL.
        #[arg(long, default_value = "10s", value_parser = duration)]
        grace: Duration,
        /// When the pod stops while leading a make-before-break group: how long CMD keeps working
        /// after the demotion, for the successor to learn that it leads.
        #[arg(long, default_value = "250ms", value_parser = duration)]
        handover_linger: Duration,
        /// Stop CMD once the role has been `unknown` this long (default: keep it running; the
        /// term fences it).
        #[arg(long, value_parser = duration)]
        step_down_after_unknown: Option<Duration>,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Keep DIR/role, DIR/term and DIR/leader current (written whole, renamed into place).
    Files {
        /// The directory, e.g. an emptyDir shared with the application.
        dir: PathBuf,
    },
}

/// Parses `10s`, `500ms`, `1m`.
fn duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 10s or 500ms: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file; without it, the in-cluster config or $KUBECONFIG is used.
    #[arg(long, env = "PODIUM_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "PODIUM_NAMESPACE")]
    namespace: Option<String>,
    /// Cache and consider only pods matching this label selector (e.g. `podium.dev/member=true`):
    /// the cache and the watch then cost what those pods cost, not what the cluster holds.
    #[arg(long, env = "PODIUM_POD_SELECTOR")]
    pod_selector: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "PODIUM_LOG_FORMAT")]
    log_format: LogFormat,
    /// Address of the /healthz, /readyz and /metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:8080", env = "PODIUM_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Name reported on Events and held in the controller Lease (defaults to $POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Routine API writes (and Events) in flight at once, with twice as many routine reconciles;
    /// a failover's writes are not counted until it has moved leadership (see
    /// --failover-concurrency). Writes that move leadership within one group are always made in
    /// order.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// How many failovers move leadership at once, in slots of their own: a storm of leader
    /// losses sends its promotions together. Once a failover's leadership writes are
    /// acknowledged, what it writes next (status, when the new leader's term was recorded
    /// beforehand; other followers; Events) waits for routine slots, behind promotions.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    failover_concurrency: u16,
    /// Run several replicas: only the holder of the controller Lease writes.
    #[arg(long)]
    leader_elect: bool,
    /// Name of the controller Lease.
    #[arg(long, default_value = "podium-controller")]
    lease_name: String,
    /// Namespace of the controller Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "podium-system")]
    lease_namespace: String,
    /// Seconds the controller Lease stays valid without renewal: the longest a standby waits after the active replica dies.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_duration: u64,
    /// How the pod and group caches fill: `auto` streams the initial list where the API server
    /// serves streaming lists (WatchList) and pages it otherwise; `paged` always pages it;
    /// `streaming` skips the start-up probe (and still falls back if the server refuses).
    #[arg(long, value_enum, default_value = "auto", env = "PODIUM_LIST_MODE")]
    list_mode: ListModeArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListModeArg {
    Auto,
    Streaming,
    Paged,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => match podium_api::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Member(args) => {
            init_logging(args.log_format, true);
            block_on("podium member stopped", member(args))
        }
        Command::Run(args) => {
            init_logging(args.log_format, false);
            block_on("podium stopped", async {
                run(args).await.map(|()| 0).map_err(|e| e.to_string())
            })
        }
    }
}

fn init_logging(format: LogFormat, stderr: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = if stderr {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    } else {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(move || -> Box<dyn std::io::Write> {
            if stderr {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            }
        });
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs a command to its exit code on a fresh runtime; `stopped` is logged with any error.
fn block_on(
    stopped: &str,
    action: impl std::future::Future<Output = Result<i32, String>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(action);
    // Do not wait for idle blocking threads (e.g. a DNS lookup) on the way out.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            error!(error = %e, "{stopped}");
            ExitCode::FAILURE
        }
    }
}

async fn member(args: MemberArgs) -> Result<i32, String> {
    let mut config = MemberConfig::from_env(args.unknown_after).map_err(|e| e.to_string())?;
    if let MemberAction::Exec {
        step_down_after_unknown,
        ..
    } = &args.action
    {
        config.step_down_after_unknown = *step_down_after_unknown;
    }
    let client = client(args.kubeconfig.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let member = Member::start(client, config)
        .await
        .map_err(|e| e.to_string())?;
    match args.action {
        MemberAction::Watch => print_changes(&member)
            .await
            .map(|()| 0)
            .map_err(|e| format!("writing to stdout: {e}")),
        MemberAction::Files { dir } => files::keep(&member, &dir)
            .await
            .map(|()| 0)
            .map_err(|e| format!("writing {}: {e}", dir.display())),
        MemberAction::Exec {
            grace,
            handover_linger,
            command,
            ..
        } => {
            let config = ExecConfig {
                command,
                grace,
                handover_linger,
            };
            supervise::exec(&member, &config)
                .await
                .map_err(|e| e.to_string())
        }
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
    Ok(podium_member::client::build(config)?)
}

/// Refuses a pod selector the API server refuses, before anything starts: a watch with it
/// would only fail and retry for ever.
async fn check_pod_selector(
    client: &kube::Client,
    namespace: Option<&str>,
    selector: &str,
) -> Result<(), String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = match namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    let params = kube::api::ListParams::default().labels(selector).limit(1);
    match api.list_metadata(&params).await {
        Err(kube::Error::Api(e)) if e.code == 400 => {
            Err(format!("--pod-selector {selector:?}: {}", e.message))
        }
        // Anything else (no permission yet, the API server not up) the watch reports and retries.
        _ => Ok(()),
    }
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
        podium_member::signals::terminated().await;
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

    let identity = args.instance.clone().unwrap_or_else(default_identity);
    let (active_tx, active_rx) = tokio::sync::watch::channel(!args.leader_elect);
    metrics.set_active(!args.leader_elect);
    // The Lease is released only after the controller has finished its in-flight writes.
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let fence = if args.leader_elect {
        leadership::Fence::leased()
    } else {
        leadership::Fence::open()
    };
    let election = args.leader_elect.then(|| {
        let cfg = leadership::Config {
            lease: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: identity.clone(),
            duration_secs: args.lease_duration,
        };
        let release = async move {
            let _ = release_rx.await;
        };
        tokio::spawn(leadership::run(
            client.clone(),
            cfg,
            active_tx,
            fence.clone(),
            metrics.clone(),
            release,
        ))
    });

    if let Some(sel) = &args.pod_selector {
        check_pod_selector(&client, args.namespace.as_deref(), sel).await?;
    }
    let opts = Options {
        namespace: args.namespace,
        pod_selector: args.pod_selector,
        instance: Some(identity),
        active: active_rx,
        concurrency: args.concurrency,
        failover_concurrency: args.failover_concurrency,
        fence,
        list_mode: match args.list_mode {
            ListModeArg::Auto => None,
            ListModeArg::Streaming => Some(ListMode::Streaming),
            ListModeArg::Paged => Some(ListMode::Paged),
        },
    };
    info!(
        namespace = opts.namespace.as_deref().unwrap_or("<all>"),
        leader_elect = args.leader_elect,
        "starting controller"
    );
    runtime::run(client, opts, metrics, stopped(), move || {
        ready.store(true, Ordering::Relaxed)
    })
    .await;
    let _ = release_tx.send(());
    if let Some(election) = election {
        election.await??;
    }
    server.await??;
    info!("stopped");
    Ok(())
}

/// Host name and process id: unique among replicas even on one machine.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "podium".into());
    format!("{host}-{}", std::process::id())
}
