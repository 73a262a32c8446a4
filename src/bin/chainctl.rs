//! `chainctl`: the command-line client. Finds head and tail through ZooKeeper.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use chainrep::bench::{self, BenchConfig, Mix, Target};
use chainrep::cli::{default_root, load_tls, TlsRole, VariantArg};
use chainrep::client::{ChainClient, ClientError, ClientOptions};
use chainrep::core::Variant;
use chainrep::runtime::zk::ZkConfig;

/// What `chainctl --help` says about exit codes; docs/statuses.md has every status behind them.
const EXIT_CODES: &str = "\
Exit codes:
  0  done (status: listed, even if some replica did not answer)
  1  refused or failed with nothing applied (invalid argument, out of range, overloaded, the
     wrong variant, no answer from the chain in time); ZooKeeper unreachable; a shell line failed
  2  bad command line
  3  outcome unknown: the write may or may not have been applied (read the key to find out)";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Client for a chainrep chain: inc, del, get, status, or an interactive shell",
    after_help = EXIT_CODES
)]
struct Args {
    /// ZooKeeper connection string: host:port[,host:port...][/chroot]
    #[arg(long)]
    zk: Option<String>,
    /// ZooKeeper node the replicas register under (default /headchain, or /tailchain with
    /// --variant tail).
    #[arg(long)]
    root: Option<String>,
    /// Which chain.proto service the chain speaks: `head` (the head answers once the write is
    /// durable) or `tail` (the tail calls this client back on its own gRPC server).
    #[arg(long, value_enum, default_value_t = VariantArg::Head)]
    variant: VariantArg,
    /// --variant tail: where to listen for the tail's callbacks (default 127.0.0.1:0, any free
    /// port).
    #[arg(long)]
    callback_listen: Option<std::net::SocketAddr>,
    /// --variant tail: host:port the tail should call back (default: the callback listen
    /// address). Needed when listening on 0.0.0.0, or behind a forwarded port.
    #[arg(long)]
    callback_advertise: Option<String>,
    /// Time one operation may take, retries included.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    timeout_ms: u64,
    /// PEM certificate of the chain's CA: talk TLS to the replicas (chain-replica --tls-ca).
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate to present (with --tls-key and --tls-ca). Not needed for inc,
    /// del, get and status; --variant tail on a TLS chain needs one for its callback server.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM")]
    tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Add N (may be negative) to KEY.
    Inc {
        key: String,
        #[arg(allow_hyphen_values = true)]
        delta: i32,
    },
    /// Set KEY to 0.
    Del { key: String },
    /// Print KEY's value (0 if never written).
    Get {
        key: String,
        /// Print {"key": KEY, "value": N} instead of the value alone.
        #[arg(long)]
        json: bool,
    },
    /// Members in chain order with role, address, session id and last applied xid.
    Status {
        /// One JSON object: {"root", "variant", "members": [{"role", "address", "session_id",
        /// "last_xid", "synced", "keys", "metrics_url"}]} in chain order; null where a
        /// replica did not answer.
        #[arg(long)]
        json: bool,
    },
    /// Read `inc KEY N` / `del KEY` / `get KEY` lines from standard input (the default).
    Shell,
    /// Closed-loop load: ops/s and p50/p99/p99.9 latency per operation.
    Bench(BenchArgs),
    /// Write keys PREFIX0..PREFIX{N-1} once each (inc 1), for memory and state-transfer figures.
    Fill {
        #[arg(long)]
        keys: u64,
        #[arg(long, default_value = "fill")]
        prefix: String,
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        concurrency: u64,
    },
    /// Write and read one key in a loop, printing `INVOKED_MILLIS DONE_MILLIS ok|fail write|read`
    /// (Unix milliseconds) as each completes: outages show as gaps, e.g. while a replica is
    /// killed. The invocation time tells an operation started after an event from one that was
    /// already on its way.
    Probe {
        #[arg(long, default_value = "probe")]
        key: String,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
    },
    /// Serve a gRPC service that answers at once, as the one-hop ceiling for `bench --target noop`.
    NoopServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    #[arg(long, value_enum, default_value_t = BenchTarget::Chain)]
    target: BenchTarget,
    /// etcd client endpoints (host:port, comma-separated) for --target etcd.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Address of `chainctl noop-server` for --target noop.
    #[arg(long)]
    noop: Option<String>,
    /// Requests in flight at once (one per worker).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Operation weights, e.g. inc=90,get=10.
    #[arg(long, default_value = "inc=90,get=10")]
    mix: Mix,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,
    /// Increments are drawn from LO..HI (inclusive).
    #[arg(long, default_value = "1..10", value_parser = parse_range)]
    value_range: (i32, i32),
    /// One JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BenchTarget {
    Chain,
    Etcd,
    Noop,
}

fn parse_range(s: &str) -> Result<(i32, i32), String> {
    let (lo, hi) = s.split_once("..").ok_or_else(|| format!("{s:?} is not LO..HI"))?;
    let lo: i32 = lo.trim().parse().map_err(|_| format!("{lo:?} is not an int32"))?;
    let hi: i32 = hi.trim().parse().map_err(|_| format!("{hi:?} is not an int32"))?;
    if lo > hi {
        return Err(format!("empty range {s:?}"));
    }
    Ok((lo, hi))
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("--{name} must be between 0 and 86400 seconds, got {v}"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::Head => "head",
        Variant::Tail => "tail",
    }
}

fn report(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        ClientError::Unknown(_) => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

async fn run_bench(chain: Option<std::sync::Arc<ChainClient>>, b: BenchArgs) -> ExitCode {
    let (duration, warmup) = match (seconds("duration", b.duration), seconds("warmup", b.warmup)) {
        (Ok(d), Ok(w)) => (d, w),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let target = match (b.target, chain) {
        (BenchTarget::Chain, Some(c)) => Target::Chain(c),
        (BenchTarget::Chain, None) => {
            eprintln!("error: --target chain needs --zk HOSTS");
            return ExitCode::from(2);
        }
        (BenchTarget::Etcd, _) => {
            if b.etcd.is_empty() {
                eprintln!("error: --target etcd needs --etcd HOST:PORT[,HOST:PORT...]");
                return ExitCode::from(2);
            }
            let mut clients = Vec::new();
            for e in &b.etcd {
                match bench::lazy_channel(e) {
                    Ok(ch) => clients.push(chainrep::pb::etcdserverpb::kv_client::KvClient::new(ch)),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            Target::Etcd(clients)
        }
        (BenchTarget::Noop, _) => match b.noop.as_deref().map(bench::lazy_channel) {
            Some(Ok(ch)) => Target::Noop(chainrep::pb::adb::head_chain_replica_client::HeadChainReplicaClient::new(ch)),
            Some(Err(e)) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            None => {
                eprintln!("error: --target noop needs --noop HOST:PORT (see `chainctl noop-server`)");
                return ExitCode::from(2);
            }
        },
    };
    let cfg = BenchConfig {
        concurrency: b.concurrency as usize,
        duration,
        warmup,
        mix: b.mix,
        keys: b.keys,
        value_range: b.value_range,
    };
    let report = bench::run(std::sync::Arc::new(target), &cfg).await;
    if b.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    ExitCode::SUCCESS
}

async fn fill(client: std::sync::Arc<ChainClient>, keys: u64, prefix: String, concurrency: u64) -> ExitCode {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next, prefix) = (client.clone(), next.clone(), prefix.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i: u64 = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= keys {
                    return Ok::<(), String>(());
                }
                client
                    .inc(&format!("{prefix}{i}"), 1)
                    .await
                    .map_err(|e| format!("key {prefix}{i}: {e}"))?;
            }
        }));
    }
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("error: fill worker failed: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("wrote {keys} keys in {secs:.1} s ({:.0} keys/s)", keys as f64 / secs);
    ExitCode::SUCCESS
}

async fn probe(client: &ChainClient, key: &str, duration: Duration) -> ExitCode {
    // Wall-clock stamps, so a script can line them up with when it killed a replica.
    let stamp = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    };
    let started = std::time::Instant::now();
    // Writes and reads in loops of their own: a read must not wait behind a write stuck on a
    // dead head, or the read outage would look as long as the write outage.
    let writes = async {
        while started.elapsed() < duration {
            let invoked = stamp();
            let ok = client.inc(key, 1).await.is_ok();
            println!("{invoked} {} {} write", stamp(), if ok { "ok" } else { "fail" });
            if !ok {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let reads = async {
        while started.elapsed() < duration {
            let invoked = stamp();
            let ok = client.get(key).await.is_ok();
            println!("{invoked} {} {} read", stamp(), if ok { "ok" } else { "fail" });
            if !ok {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    tokio::join!(writes, reads);
    ExitCode::SUCCESS
}

async fn noop_server(listen: std::net::SocketAddr) -> ExitCode {
    let service = chainrep::pb::adb::head_chain_replica_server::HeadChainReplicaServer::new(bench::NoopService);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    match tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(chainrep::runtime::node::MAX_STREAMS_PER_CONNECTION))
        .add_service(service)
        .serve_with_incoming(incoming)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: no-op server failed: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run_line(client: &ChainClient, line: &str) -> Result<Option<String>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] => Ok(None),
        ["inc", key, n] => {
            let delta: i32 = n.parse().map_err(|_| format!("not an int32: {n:?}"))?;
            client.inc(key, delta).await.map(|_| Some("ok".into())).map_err(|e| e.to_string())
        }
        ["del", key] => client.del(key).await.map(|_| Some("ok".into())).map_err(|e| e.to_string()),
        ["get", key] => client.get(key).await.map(|v| Some(v.to_string())).map_err(|e| e.to_string()),
        _ => Err(format!("unknown command {line:?}: use `inc KEY N`, `del KEY` or `get KEY`")),
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where the chain is and how to talk to it, from the flags; the error is a usage error.
fn client_setup(args: &Args) -> Result<(ZkConfig, ClientOptions), String> {
    let zk_hosts = args.zk.clone().ok_or("--zk HOSTS is required (ZooKeeper connection string)")?;
    let variant = Variant::from(args.variant);
    let root = args.root.clone().unwrap_or_else(|| default_root(variant).to_string());
    if variant == Variant::Head && (args.callback_advertise.is_some() || args.callback_listen.is_some()) {
        return Err("--callback-listen and --callback-advertise only apply to --variant tail".into());
    }
    let tls = load_tls(TlsRole::Client, args.tls_cert.as_ref(), args.tls_key.as_ref(), args.tls_ca.as_ref())?;
    let zk = ZkConfig {
        connect: zk_hosts,
        root,
        session_timeout: Duration::from_secs(10),
    };
    let mut opts = ClientOptions {
        op_timeout: Duration::from_millis(args.timeout_ms),
        variant,
        callback_advertise: args.callback_advertise.clone(),
        tls,
        ..ClientOptions::default()
    };
    if let Some(listen) = args.callback_listen {
        opts.callback_listen = listen;
    }
    Ok((zk, opts))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error,zookeeper_async=off".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut args = Args::parse();
    let command = args.command.take().unwrap_or(Command::Shell);
    match command {
        Command::NoopServer { listen } => return noop_server(listen).await,
        Command::Bench(b) if !matches!(b.target, BenchTarget::Chain) => return run_bench(None, b).await,
        _ => {}
    }
    let (zk, opts) = match client_setup(&args) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let variant = opts.variant;
    let client = match ChainClient::connect(&zk, opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error: cannot start the client (ZooKeeper at {}, {} variant): {e:#}",
                zk.connect,
                variant_name(variant)
            );
            return ExitCode::from(1);
        }
    };
    let client = std::sync::Arc::new(client);
    let code = run_command(&client, command, &zk.root, variant).await;
    if let Ok(c) = std::sync::Arc::try_unwrap(client) {
        c.close().await;
    }
    code
}

async fn run_command(client: &std::sync::Arc<ChainClient>, command: Command, root: &str, variant: Variant) -> ExitCode {
    match command {
        Command::NoopServer { .. } => ExitCode::SUCCESS,
        Command::Bench(b) => run_bench(Some(client.clone()), b).await,
        Command::Inc { key, delta } => match client.inc(&key, delta).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        },
        Command::Del { key } => match client.del(&key).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        },
        Command::Get { key, json } => match client.get(&key).await {
            Ok(v) if json => {
                println!("{}", serde_json::json!({ "key": key, "value": v }));
                ExitCode::SUCCESS
            }
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => report(&e),
        },
        Command::Fill { keys, prefix, concurrency } => fill(client.clone(), keys, prefix, concurrency).await,
        Command::Probe { key, seconds: secs } => match seconds("seconds", secs) {
            Ok(d) => probe(client, &key, d).await,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Status { json: false } => print_status(client, root).await,
        Command::Status { json: true } => print_status_json(client, root, variant).await,
        Command::Shell => shell(client).await,
    }
}

async fn print_status(client: &ChainClient, root: &str) -> ExitCode {
    let status = client.status().await;
    if status.is_empty() {
        println!("no replicas under {root}");
    }
    println!(
        "{:<10} {:<22} {:<18} {:>10} {:>8} {:>8}",
        "ROLE", "ADDRESS", "SESSION", "LAST_XID", "SYNCED", "KEYS"
    );
    for s in status {
        let (xid, synced, keys) = match &s.described {
            Some(d) => (d.last_applied_xid.to_string(), d.synced.to_string(), d.keys.to_string()),
            None => (s.latest_xid.map_or("?".into(), |x| x.to_string()), "?".into(), "?".into()),
        };
        println!(
            "{:<10} {:<22} {:<18} {:>10} {:>8} {:>8}",
            s.position,
            s.member.addr,
            format!("{:x}", s.member.id),
            xid,
            synced,
            keys
        );
    }
    ExitCode::SUCCESS
}

/// `status --json`: what `print_status` shows, for scripts. Session ids are hex strings, as
/// in ZooKeeper's znode names (and because JSON numbers lose precision past 2^53); what a
/// replica did not tell (it did not answer `Describe`) is null.
async fn print_status_json(client: &ChainClient, root: &str, variant: Variant) -> ExitCode {
    let members: Vec<serde_json::Value> = client
        .status()
        .await
        .iter()
        .map(|s| {
            let d = s.described.as_ref();
            serde_json::json!({
                "role": s.position,
                "address": s.member.addr,
                "session_id": format!("{:x}", s.member.id),
                "last_xid": d.map(|d| d.last_applied_xid).or(s.latest_xid),
                "synced": d.map(|d| d.synced),
                "keys": d.map(|d| d.keys),
                "metrics_url": d.and_then(|d| (!d.metrics_url.is_empty()).then_some(d.metrics_url.as_str())),
            })
        })
        .collect();
    let out = serde_json::json!({
        "root": root,
        "variant": variant_name(variant),
        "members": members,
    });
    println!("{out}");
    ExitCode::SUCCESS
}

/// `inc k n` / `del k` / `get k` lines from standard input until it ends; exit 1 if any failed.
async fn shell(client: &ChainClient) -> ExitCode {
    let stdin = std::io::stdin();
    let interactive = std::io::IsTerminal::is_terminal(&stdin);
    let mut failed = false;
    loop {
        if interactive {
            print!("> ");
            let _ = std::io::stdout().flush();
        }
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: reading standard input: {e}");
                failed = true;
                break;
            }
        }
        match run_line(client, line.trim()).await {
            Ok(Some(out)) => println!("{out}"),
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
