//! The CLI (lb-toml.md, "What the CLI must accept").

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use aya::programs::XdpMode;
use clap::{Parser, Subcommand, ValueEnum};
use lb_userspace::{
    agent::{self, AgentOptions},
    config,
    dataplane::DEFAULT_PIN_DIR,
    realserver, runtime_files, stats,
};

/// An XDP replacement for LVS (ipvsadm) + keepalived.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Interface to balance on (the keepalived `interface`). Twice for
    /// two-armed NAT: first the outside (clients), then the inside (real servers).
    #[arg(long)]
    iface: Vec<String>,
    /// lb.toml (keepalived.conf in TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// XDP attach mode: native (driver) or skb (generic).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    xdp_mode: XdpModeArg,
    /// error, warn, info, debug or trace (debug also shows data-plane logs).
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
    /// Where the maps are pinned.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_path: PathBuf,
    /// Connections the flow table holds (IPVS's connection table size);
    /// its memory is logged at start.
    #[arg(long, default_value_t = lb_common::FLOW_TABLE_DEFAULT_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=MAX_FLOW_TABLE_SIZE))]
    flow_table_size: u32,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// On SIGTERM/SIGINT leave the XDP program forwarding and the maps
    /// pinned; the next agent started with the same --pin-path adopts them
    /// (hitless restart: connections and counters survive).
    #[arg(long)]
    keep_dataplane: bool,
}

/// A sanity bound: 64M connections is ~6 GiB of kernel memory.
const MAX_FLOW_TABLE_SIZE: i64 = 64 * 1024 * 1024;
/// `drain` waits this long for the connections to end (IPVS's
/// established timeout is 900 s; most web connections end far sooner).
const DEFAULT_DRAIN_TIMEOUT_S: u64 = 300;

#[derive(Clone, Copy, ValueEnum)]
enum XdpModeArg {
    Native,
    Skb,
}

#[derive(Subcommand)]
enum RealserverAction {
    /// VIP on lo, ARP settings (and for tun, IPIP decapsulation) — rs.sh start.
    Start {
        #[arg(long)]
        vip: std::net::IpAddr,
        #[arg(long, value_enum, default_value_t = realserver::Mode::Dr)]
        mode: realserver::Mode,
        /// The interface the balancer's packets arrive on (required for tun).
        #[arg(long)]
        iface: Option<String>,
    },
    /// Restores exactly what start changed — rs.sh stop. Idempotent. Takes
    /// start's flags; what start recorded decides.
    Stop {
        #[arg(long)]
        vip: std::net::IpAddr,
        #[arg(long, value_enum)]
        mode: Option<realserver::Mode>,
        #[arg(long)]
        iface: Option<String>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Configure this host as a real server (the seed's rs.sh).
    Realserver {
        #[command(subcommand)]
        action: RealserverAction,
    },
    /// Validate a config file: exit 0, or print every error with file:line:column.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Make the running agent re-read its config (SIGHUP) and apply only
    /// the difference; prints what changed, or why the file was refused.
    Reload {
        /// Where the running agent pinned its maps (names the agent).
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_path: PathBuf,
    },
    /// Take this balancer out of its ECMP group ([bgp]): withdraw every
    /// VIP, keep forwarding the connections already here, and return once
    /// none is left (or fail at --timeout; the VIPs stay withdrawn).
    Drain {
        /// Announce again instead.
        #[arg(long)]
        cancel: bool,
        /// Seconds to wait for the connections to end.
        #[arg(long, default_value_t = DEFAULT_DRAIN_TIMEOUT_S)]
        timeout: u64,
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_path: PathBuf,
    },
    /// The running agent's VRRP states, checker states and map fill.
    Status {
        /// JSON for tooling.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_path: PathBuf,
    },
    /// Convert a keepalived.conf to lb.toml (on stdout); a warning on
    /// stderr for each keyword that cannot be carried over.
    ImportKeepalived {
        /// keepalived.conf (its includes are read too).
        file: PathBuf,
    },
    /// The man page (roff) of this CLI, for packaging.
    #[command(hide = true)]
    Manpage,
    /// The virtual server table of the running agent, as `ipvsadm -L -n`.
    List {
        /// Numeric output (addresses and ports are always printed numerically).
        #[arg(short = 'n', long)]
        numeric: bool,
        /// The connection table, as `ipvsadm -L -c -n`.
        #[arg(short = 'c', long)]
        connection: bool,
        /// Totals: Conns InPkts OutPkts InBytes OutBytes (ipvsadm --stats).
        #[arg(long, conflicts_with_all = ["connection", "rate", "save"])]
        stats: bool,
        /// Per second, measured over one second: CPS InPPS OutPPS InBPS
        /// OutBPS (ipvsadm --rate).
        #[arg(long, conflicts_with_all = ["connection", "save"])]
        rate: bool,
        /// Exact numbers instead of K/M/G (with --stats or --rate).
        #[arg(long, short = 'x')]
        exact: bool,
        /// The table as ipvsadm commands (ipvsadm -S -n).
        #[arg(long, short = 'S', conflicts_with = "connection")]
        save: bool,
        /// JSON for tooling instead of ipvsadm's layout (the table with its
        /// totals, or with --rate its rates, or with -c the connections).
        #[arg(long, conflicts_with = "save")]
        json: bool,
        /// Where the running agent pinned its maps.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_path: PathBuf,
    },
}

fn init_tracing(level: log::LevelFilter) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // netlink-packet-route warns about every kernel attribute newer than
        // itself; that is noise to an operator.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{level},netlink_packet_route=error"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

fn check(path: &Path) -> Result<()> {
    let config = config::load(path).map_err(|e| anyhow!("{e}"))?;
    for note in config::not_acted_on(&config) {
        println!("note: not acted on yet: {note}");
    }
    println!("{}: OK", path.display());
    Ok(())
}

/// System administration commands.
const MAN_SECTION: &str = "8";

/// How long `reload` waits for the agent's verdict (a changed VRRP
/// instance takes up to a few seconds to leave cleanly).
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long `list --rate` measures.
const RATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Errors are printed as one line ("error: what failed: why"), never as a
/// Debug dump with a backtrace.
fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Manpage) => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command())
                .section(MAN_SECTION)
                .render(&mut std::io::stdout())?;
            Ok(())
        }
        Some(Command::ImportKeepalived { file }) => {
            let imported = config::keepalived::import(&file)?;
            for warning in &imported.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", imported.toml);
            Ok(())
        }
        Some(Command::Reload { pin_path }) => {
            let outcome = runtime_files::request_reload(&pin_path, RELOAD_TIMEOUT)?;
            println!("{outcome}");
            Ok(())
        }
        Some(Command::Drain {
            cancel,
            timeout,
            pin_path,
        }) => {
            let outcome = if cancel {
                lb_userspace::drain::cancel(&pin_path)?
            } else {
                lb_userspace::drain::drain(&pin_path, std::time::Duration::from_secs(timeout))?
            };
            println!("{outcome}");
            Ok(())
        }
        Some(Command::Status { json, pin_path }) => {
            let status = runtime_files::read_status(&pin_path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(())
        }
        Some(Command::Realserver { action }) => {
            init_tracing(log::LevelFilter::Info);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match action {
                RealserverAction::Start { vip, mode, iface } => {
                    rt.block_on(realserver::start(vip, mode, iface.as_deref()))
                }
                RealserverAction::Stop { vip, mode, iface } => {
                    rt.block_on(realserver::stop(vip, mode, iface.as_deref()))
                }
            }
        }
        Some(Command::List {
            numeric: _,
            connection,
            stats: totals,
            rate,
            exact,
            save,
            json,
            pin_path,
        }) => {
            use stats::{list, save, snapshot, traffic};
            let out = if connection {
                let conns = snapshot::read_connections(&pin_path)?;
                if json {
                    serde_json::to_string_pretty(&conns)? + "\n"
                } else {
                    list::format_connections(&conns)
                }
            } else if rate {
                let table = snapshot::read_rates(&pin_path, RATE_INTERVAL)?;
                if json {
                    serde_json::to_string_pretty(&table)? + "\n"
                } else {
                    traffic::format_traffic(&table, traffic::Kind::Rate, exact)
                }
            } else if json {
                serde_json::to_string_pretty(&snapshot::read_table(&pin_path)?)? + "\n"
            } else {
                let table = snapshot::read_table(&pin_path)?;
                if totals {
                    traffic::format_traffic(&table, traffic::Kind::Stats, exact)
                } else if save {
                    save::format_save(&table)
                } else {
                    list::format_list(&table)
                }
            };
            print!("{out}");
            Ok(())
        }
        None => {
            let run = cli.run;
            let (Some(iface), Some(config)) = (run.iface.first().cloned(), run.config) else {
                return Err(anyhow!(
                    "usage: lb-userspace --iface IFACE --config FILE (or a subcommand: check, list, reload, status, import-keepalived, realserver; see --help)"
                ));
            };
            if run.iface.len() > 2 {
                return Err(anyhow!(
                    "--iface at most twice: the outside interface, then the inside one (two-armed NAT)"
                ));
            }
            init_tracing(run.log_level);
            let opts = AgentOptions {
                iface,
                inside_iface: run.iface.get(1).cloned(),
                config_path: config,
                xdp_mode: match run.xdp_mode {
                    XdpModeArg::Native => XdpMode::Driver,
                    XdpModeArg::Skb => XdpMode::Skb,
                },
                pin_dir: run.pin_path,
                log_level: run.log_level,
                flow_table_size: run.flow_table_size,
                metrics_listen: run.metrics_listen,
                keep_dataplane: run.keep_dataplane,
            };
            // One runtime thread: capabilities are per thread, and the agent
            // drops what it no longer needs after attaching (privileges.rs).
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(lb_userspace::privileges::on_thread_start)
                .build()?
                .block_on(agent::run(opts))
        }
    }
}
