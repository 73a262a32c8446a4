//! `chain-replica`: one link of a chain.
//!
//! ```text
//! chain-replica --zk HOSTS --listen IP:PORT [--advertise HOST:PORT] [--root /headchain] ...
//! chain-replica ZKHOST:PORT PORT          # the seed's positional form, listening on 127.0.0.1:PORT
//! ```
//!
//! `--tls-cert PEM --tls-key PEM --tls-ca PEM` turn on TLS (README, "Security");
//! `--metrics-listen IP:PORT` serves Prometheus metrics (docs/metrics.md).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use chainrep::cli::{default_root, load_tls, TlsRole, VariantArg};
use chainrep::core::Variant;
use chainrep::runtime::node::{self, NodeConfig};
use chainrep::runtime::zk::{parse_connect_string, ZkConfig};

#[derive(Parser, Debug)]
#[command(version, about = "A chain-replication replica speaking chain.proto, with membership in ZooKeeper")]
struct Args {
    /// ZooKeeper connection string: host:port[,host:port...][/chroot]
    #[arg(long)]
    zk: Option<String>,
    /// Address to serve gRPC on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// host:port that other replicas and clients should use (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// ZooKeeper node under which replicas register (default /headchain, or /tailchain with --variant tail).
    #[arg(long)]
    root: Option<String>,
    #[arg(long, value_enum, default_value_t = VariantArg::Head)]
    variant: VariantArg,
    /// ZooKeeper session timeout; a dead replica leaves the chain after about this long.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1000..=60_000))]
    session_timeout_ms: u64,
    /// How long a successor may leave updates unacknowledged before this replica asks
    /// ZooKeeper to evict it from the chain (a broken link between live replicas). Defaults to
    /// 1.5 x the session timeout, so that ZooKeeper removes a crashed replica first; keep it
    /// above the session timeout plus ZooKeeper's tickTime. 0 turns it off.
    /// See docs/gray-failures.md.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    suspicion_timeout_ms: Option<u64>,
    /// Longest key accepted from clients, in bytes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_key_bytes: u64,
    /// Client writes waiting for the tail before the head answers RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_pending_writes: u64,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (docs/metrics.md). Off by default.
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Keep the store in a write-ahead log in DIR (created if missing) and acknowledge a write
    /// only once every replica it passed through has it on disk; restarted on DIR, the replica
    /// brings its data back. Without it the replica keeps everything in memory only.
    /// See docs/storage.md.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// PEM certificate (chain) this replica presents, as a server to everyone and as a client
    /// to its peers. With --tls-key and --tls-ca: serve TLS only, and take replica-to-replica
    /// calls only from callers with a certificate from --tls-ca.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM")]
    tls_key: Option<std::path::PathBuf>,
    /// PEM certificate of the CA that signed every replica's certificate.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// The seed's positional form: ZKHOST:PORT PORT
    #[arg(conflicts_with_all = ["zk", "listen"], num_args = 0..=2, value_names = ["ZKHOST:PORT", "PORT"])]
    positional: Vec<String>,
}

fn config(args: Args) -> Result<NodeConfig, String> {
    let (zk, listen) = match args.positional.as_slice() {
        [] => {
            let zk = args.zk.ok_or("missing --zk HOSTS (ZooKeeper connection string)")?;
            let listen = args.listen.ok_or("missing --listen IP:PORT")?;
            (zk, listen)
        }
        [zk, port] => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("PORT must be a number from 1 to 65535, got {port:?}"))?;
            if port == 0 {
                return Err("PORT must be a number from 1 to 65535, got 0".into());
            }
            (zk.clone(), SocketAddr::from(([127, 0, 0, 1], port)))
        }
        _ => return Err("the positional form takes two arguments: ZKHOST:PORT PORT".into()),
    };
    parse_connect_string(&zk).map_err(|e| format!("bad --zk {zk:?}: {e}"))?;
    let variant = Variant::from(args.variant);
    let root = args.root.unwrap_or_else(|| default_root(variant).to_string());
    if !root.starts_with('/') || (root.len() > 1 && root.ends_with('/')) {
        return Err(format!("--root must be an absolute ZooKeeper path like /headchain, got {root:?}"));
    }
    let zk = ZkConfig {
        connect: zk,
        root,
        session_timeout: Duration::from_millis(args.session_timeout_ms),
    };
    let mut cfg = NodeConfig::new(zk, listen, variant);
    if listen.ip().is_unspecified() && args.advertise.is_none() {
        return Err(format!(
            "listening on {listen} needs --advertise HOST:PORT so peers know where to connect"
        ));
    }
    cfg.advertise = args.advertise;
    cfg.metrics_listen = args.metrics_listen;
    cfg.data_dir = args.data_dir;
    cfg.core.max_key_bytes = args.max_key_bytes as usize;
    cfg.core.max_pending_writes = args.max_pending_writes as usize;
    if let Some(ms) = args.suspicion_timeout_ms {
        cfg.core.suspicion_ms = ms;
    }
    cfg.tls = load_tls(
        TlsRole::Replica,
        args.tls_cert.as_ref(),
        args.tls_key.as_ref(),
        args.tls_ca.as_ref(),
    )?;
    Ok(cfg)
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,zookeeper_async=off".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chain-replica: {e}");
            return ExitCode::from(2);
        }
    };
    let mut running = match node::start(cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chain-replica: {e:#}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "chain-replica: serving on {} (advertised as {})",
        running.local_addr, running.advertise
    );
    if let Some(url) = &running.metrics_url {
        eprintln!("chain-replica: metrics at {url}");
    }
    let outcome = tokio::select! {
        biased;
        r = running.wait() => r,
        _ = shutdown_signal() => Ok(()),
    };
    running.shutdown().await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chain-replica: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
