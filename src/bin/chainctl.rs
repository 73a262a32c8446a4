//! `chainctl`: the command-line client. Finds head and tail through ZooKeeper.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use chainrep::client::{ChainClient, ClientError, ClientOptions};
use chainrep::runtime::zk::ZkConfig;

#[derive(Parser, Debug)]
#[command(version, about = "Client for a chainrep chain: inc, del, get, status, or an interactive shell")]
struct Args {
    /// ZooKeeper connection string: host:port[,host:port...][/chroot]
    #[arg(long)]
    zk: String,
    #[arg(long, default_value = "/headchain")]
    root: String,
    /// Time one operation may take, retries included.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    timeout_ms: u64,
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
    Get { key: String },
    /// Members in chain order with role, address, session id and last applied xid.
    Status,
    /// Read `inc KEY N` / `del KEY` / `get KEY` lines from standard input (the default).
    Shell,
}

fn report(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        ClientError::Unknown(_) => ExitCode::from(3),
        _ => ExitCode::from(1),
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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error,zookeeper_async=off".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let zk = ZkConfig { connect: args.zk.clone(), root: args.root.clone(), session_timeout: Duration::from_secs(10) };
    let opts = ClientOptions { op_timeout: Duration::from_millis(args.timeout_ms), ..ClientOptions::default() };
    let client = match ChainClient::connect(&zk, opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot reach ZooKeeper at {}: {e:#}", args.zk);
            return ExitCode::from(1);
        }
    };
    let code = match args.command.unwrap_or(Command::Shell) {
        Command::Inc { key, delta } => match client.inc(&key, delta).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        },
        Command::Del { key } => match client.del(&key).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        },
        Command::Get { key } => match client.get(&key).await {
            Ok(v) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Err(e) => report(&e),
        },
        Command::Status => {
            let status = client.status().await;
            if status.is_empty() {
                println!("no replicas under {}", args.root);
            }
            println!("{:<10} {:<22} {:<18} {:>10} {:>8} {:>8}", "ROLE", "ADDRESS", "SESSION", "LAST_XID", "SYNCED", "KEYS");
            for s in status {
                let (xid, synced, keys) = match &s.described {
                    Some(d) => (d.last_applied_xid.to_string(), d.synced.to_string(), d.keys.to_string()),
                    None => (s.latest_xid.map_or("?".into(), |x| x.to_string()), "?".into(), "?".into()),
                };
                println!("{:<10} {:<22} {:<18} {:>10} {:>8} {:>8}", s.position, s.member.addr, format!("{:x}", s.member.id), xid, synced, keys);
            }
            ExitCode::SUCCESS
        }
        Command::Shell => {
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
                match run_line(&client, line.trim()).await {
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
    };
    client.close().await;
    code
}
