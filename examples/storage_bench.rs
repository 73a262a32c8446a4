//! Figures for `src/storage` on this machine's disk: appends and fsyncs per second with group
//! commit of N updates per `sync`, the latency of a `sync` (p50, p99), and the cost of a restart
//! (snapshot write, recovery of snapshot plus log). Prints a table; not a test.
//!
//!     cargo run --release --example storage_bench -- --dir DIR [--seconds 3] [--batches 1,8,64,512]
//!         [--key-bytes 16] [--keys 1000000]
//!
//! DIR must not be tmpfs for real figures (`df DIR`); `scripts/bench-storage` runs it on the
//! disk under the target directory and, for comparison, on /dev/shm.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chainrep::core::{Store, Update};
use chainrep::storage::{Log, LogConfig};

struct Args {
    dir: PathBuf,
    seconds: f64,
    batches: Vec<usize>,
    key_bytes: usize,
    keys: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::from("target/storage-bench"),
        seconds: 3.0,
        batches: vec![1, 8, 64, 512],
        key_bytes: 16,
        keys: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(value()?),
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--batches" => {
                a.batches = value()?
                    .split(',')
                    .map(|b| b.trim().parse().map_err(|e| format!("--batches: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--key-bytes" => a.key_bytes = value()?.parse().map_err(|e| format!("--key-bytes: {e}"))?,
            "--keys" => a.keys = value()?.parse().map_err(|e| format!("--keys: {e}"))?,
            other => return Err(format!("unknown argument {other:?} (see the file's comment)")),
        }
    }
    Ok(a)
}

fn key(i: u64, bytes: usize) -> String {
    let mut k = format!("k{i:x}");
    while k.len() < bytes {
        k.push('_');
    }
    k
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn fresh(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn group_commit(a: &Args, batch: usize) -> Result<(), String> {
    let dir = a.dir.join(format!("batch-{batch}"));
    fresh(&dir)?;
    let (mut log, _) = Log::open_dir(&dir, LogConfig::default()).map_err(|e| e.to_string())?;
    let mut lat = Vec::new();
    let mut xid = 0;
    let start = Instant::now();
    let budget = Duration::from_secs_f64(a.seconds);
    while start.elapsed() < budget {
        for _ in 0..batch {
            xid += 1;
            let u = Update {
                xid,
                key: key(xid % 10_000, a.key_bytes),
                value: xid as i32,
                origin: None,
            };
            log.append(&u).map_err(|e| e.to_string())?;
        }
        let t = Instant::now();
        log.sync().map_err(|e| e.to_string())?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let s = log.stats();
    println!(
        "| {batch:>5} | {:>10.0} | {:>8.0} | {:>8} | {:>8} | {:>6.1} | {:>5} |",
        xid as f64 / secs,
        s.file_syncs as f64 / secs,
        percentile(&lat, 0.5).as_micros(),
        percentile(&lat, 0.99).as_micros(),
        s.bytes_written as f64 / secs / 1e6,
        s.bytes_written / xid.max(1),
    );
    drop(log);
    std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())
}

/// A restart's cost: snapshot of `keys` keys, then as many updates again in the log, then open.
fn restart(a: &Args) -> Result<(), String> {
    let dir = a.dir.join("restart");
    fresh(&dir)?;
    let (mut log, _) = Log::open_dir(&dir, LogConfig::default()).map_err(|e| e.to_string())?;
    let store: Store = (0..a.keys).map(|i| (key(i, a.key_bytes), 1 + (i % 1000) as i32)).collect();
    let t = Instant::now();
    log.write_snapshot(&store, a.keys).map_err(|e| e.to_string())?;
    let snap_time = t.elapsed();
    let snap_bytes = log.snapshot_bytes();
    for i in 0..a.keys {
        let u = Update {
            xid: a.keys + 1 + i,
            key: key(i, a.key_bytes),
            value: 7,
            origin: None,
        };
        log.append(&u).map_err(|e| e.to_string())?;
        if i % 1024 == 1023 {
            log.sync().map_err(|e| e.to_string())?;
        }
    }
    log.sync().map_err(|e| e.to_string())?;
    let log_bytes = log.log_bytes();
    let segments = log.segment_count();
    drop(log);
    let t = Instant::now();
    let (_, rec) = Log::open_dir(&dir, LogConfig::default()).map_err(|e| e.to_string())?;
    let open_time = t.elapsed();
    assert_eq!(rec.store.len() as u64, a.keys);
    println!(
        "snapshot of {} keys: {:.1} MiB in {:.0} ms; log of {} updates: {:.1} MiB in {} segment(s)",
        a.keys,
        snap_bytes as f64 / (1 << 20) as f64,
        snap_time.as_secs_f64() * 1e3,
        rec.records_replayed,
        log_bytes as f64 / (1 << 20) as f64,
        segments
    );
    println!(
        "recovery (read snapshot, replay log): {:.0} ms, {:.2} M records/s replayed",
        open_time.as_secs_f64() * 1e3,
        rec.records_replayed as f64 / open_time.as_secs_f64() / 1e6
    );
    drop(rec);
    std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("storage_bench: {e}");
            std::process::exit(2);
        }
    };
    println!("dir {}, {} s per row, keys of {} bytes", a.dir.display(), a.seconds, a.key_bytes);
    println!("| batch | updates/s  | fsyncs/s | sync p50 µs | sync p99 µs | MB/s | B/update |");
    println!("|---|---|---|---|---|---|---|");
    for &b in &a.batches {
        if let Err(e) = group_commit(&a, b) {
            eprintln!("storage_bench: batch {b}: {e}");
            std::process::exit(1);
        }
    }
    if a.keys > 0 {
        if let Err(e) = restart(&a) {
            eprintln!("storage_bench: restart: {e}");
            std::process::exit(1);
        }
    }
}
