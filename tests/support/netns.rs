//! Network namespaces for the gray-failure tests (tests/gray_failure.rs): a test builds its own
//! little network, runs ZooKeeper and replicas inside it, and drops packets with `iptables`
//! inside one namespace, so faults can hit one link, or one direction of it, and nothing else.
//!
//! Layout of one [`Net`]: a `hub` namespace holding a bridge, and one namespace per node whose
//! `eth0` is a veth into that bridge, with a private address `10.213.<subnet>.<n>/24`. Every
//! interface, address and rule lives inside the test's own namespaces; the root namespace only
//! ever sees the names under /run/netns. Names are `crg<pid>-<tag>-<node>`, so a later run can
//! tell leftovers of a killed run (their pid is gone) from a run still going.
//!
//! Cleanup on every exit path: [`Net`]'s `Drop` kills whatever still runs in its namespaces and
//! deletes them (deleting a namespace destroys its veths and rules with it), and runs during a
//! panic's unwinding as well. A test binary killed outright cannot run `Drop`, so the processes
//! it started carry `PR_SET_PDEATHSIG` (they die with the thread that started them) and
//! [`sweep_leftovers`] removes the namespaces at the next run.
//!
//! Needs root, `ip` (iproute2) and `iptables`; `scripts/install-deps` installs the tools.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::chain::{replica_binary, SESSION_TIMEOUT_MS};
use super::zk::{handshake, java_binary, zookeeper_classpath, MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS, TICK_MS};

/// Start of every namespace name this module creates.
pub const PREFIX: &str = "crg";
/// The namespace holding the bridge.
const HUB: &str = "hub";
const BRIDGE: &str = "br0";
/// Port every replica listens on: each has an address of its own, so they need not differ.
pub const REPLICA_PORT: u16 = 7000;
pub const ZK_PORT: u16 = 2181;

/// Why this machine cannot run the namespace tests, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, veths, iptables)".into());
    }
    for tool in ["ip", "iptables"] {
        if tool_path(tool).is_none() {
            return Some(format!("needs `{tool}` (scripts/install-deps installs iproute2 and iptables)"));
        }
    }
    None
}

/// `sbin` directories are not on every root PATH (`sudo`, CI runners), so look there too.
fn tool_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn ip() -> PathBuf {
    tool_path("ip").unwrap_or_else(|| PathBuf::from("ip"))
}

/// Runs `cmd` to completion; an error carries its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_cmd<I, S>(args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(ip()).args(args))
}

/// Every namespace name under /run/netns (`ip netns list` adds ` (id: N)` to some).
fn list_namespaces() -> Vec<String> {
    ip_cmd(["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The pid in a name made by [`Net::new`], `crg<pid>-...`.
fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Kills every process inside `ns` and waits (up to 5 s) until none is left, so that deleting
/// the name frees the namespace, and its veths, at once. Only processes this module started
/// (or an earlier run of it) live in these namespaces.
fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = ip_cmd(["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                eprintln!("netns: processes {pids:?} in {ns} did not die");
            }
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) with a pid read from the namespace; the worst case is ESRCH.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn delete_namespace(ns: &str) {
    kill_all_in(ns);
    if let Err(e) = ip_cmd(["netns", "del", ns]) {
        eprintln!("netns: cannot delete {ns}: {e:#}");
    }
}

/// Removes namespaces left by an earlier run of these tests that was killed before its `Drop`s
/// ran: named with our prefix, and the pid in the name is not a running test binary of ours.
/// Runs once per test binary.
pub fn sweep_leftovers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let me = std::process::id();
        for ns in list_namespaces() {
            let Some(pid) = owner_pid(&ns) else { continue };
            if pid == me {
                continue;
            }
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with("gray_failure") {
                continue;
            }
            // Past the harness's capture: worth seeing in every run that does it.
            let _ = writeln!(io::stderr(), "netns: removing {ns}, left over by an earlier run (pid {pid})");
            delete_namespace(&ns);
        }
    });
}

pub struct NetNode {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// A hub with a bridge and one namespace per node; removed, with everything inside, on drop.
pub struct Net {
    prefix: String,
    nodes: Vec<NetNode>,
    /// Every namespace created so far, so a half-built `Net` is cleaned up too.
    created: Vec<String>,
}

impl Net {
    /// Nodes get `10.213.<subnet>.2`, `.3`, ... in the order of `names`. The range is private
    /// and only ever configured inside these namespaces, so it cannot clash with the host's
    /// networks; a subnet per test only makes the logs easier to tell apart.
    pub fn new(tag: &str, subnet: u8, names: &[&str]) -> anyhow::Result<Net> {
        let mut net = Net {
            prefix: format!("{PREFIX}{}-{tag}", std::process::id()),
            nodes: Vec::new(),
            created: Vec::new(),
        };
        let hub = net.add_namespace(HUB)?;
        ip_cmd(["-n", &hub, "link", "add", BRIDGE, "type", "bridge"])?;
        ip_cmd(["-n", &hub, "link", "set", BRIDGE, "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = net.add_namespace(name)?;
            let host = u8::try_from(i + 2).context("too many nodes for one /24")?;
            let addr = Ipv4Addr::new(10, 213, subnet, host);
            // The hub end is named after the node; both ends live in our namespaces only, so
            // the names cannot clash with anything else's.
            let hub_end = format!("v-{name}");
            ip_cmd([
                "-n", &hub, "link", "add", &hub_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip_cmd(["-n", &hub, "link", "set", &hub_end, "master", BRIDGE, "up"])?;
            ip_cmd(["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip_cmd(["-n", &ns, "link", "set", "eth0", "up"])?;
            ip_cmd(["-n", &ns, "link", "set", "lo", "up"])?;
            net.nodes.push(NetNode {
                name: name.to_string(),
                ns,
                ip: addr,
            });
        }
        Ok(net)
    }

    fn add_namespace(&mut self, name: &str) -> anyhow::Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        ip_cmd(["netns", "add", &ns])?;
        self.created.push(ns.clone());
        Ok(ns)
    }

    pub fn node(&self, name: &str) -> &NetNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this net"))
    }

    pub fn ip(&self, name: &str) -> Ipv4Addr {
        self.node(name).ip
    }

    /// Moves the calling thread into `name`'s network namespace. Only this thread: others keep
    /// theirs, but threads it starts afterwards (a tokio runtime's workers) inherit it.
    pub fn enter(&self, name: &str) -> anyhow::Result<()> {
        let path = format!("/run/netns/{}", self.node(name).ns);
        let f = fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
        // SAFETY: a valid descriptor of a network namespace file, kept open for the call.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("setns into {path}"));
        }
        Ok(())
    }

    /// Runs `f` on a thread inside `name`'s namespace.
    pub fn in_namespace<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter(name)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `program` inside `name`'s namespace. `ip netns exec` execs it, so the child's pid is the
    /// program's own.
    fn command(&self, name: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(ip());
        cmd.args(["netns", "exec", &self.node(name).ns]).arg(program);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            cmd.pre_exec(|| {
                // Dies with the thread that started it, even if the test binary is SIGKILLed
                // and no Drop runs. Kept across exec (ip and the programs are not setuid).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Starts `program args` inside `name`'s namespace, stdout and stderr to `log`.
    pub fn spawn(
        &self,
        name: &str,
        program: impl AsRef<OsStr>,
        args: &[String],
        env: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<NsChild> {
        let out = fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot duplicate a log file handle")?;
        let program = program.as_ref().to_owned();
        let child = self
            .command(name, &program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {program:?} in {}", self.node(name).ns))?;
        Ok(NsChild {
            child: Some(child),
            label: format!("{name}:{}", Path::new(&program).display()),
            log: log.to_path_buf(),
        })
    }

    /// A head-variant or tail-variant `chain-replica` on `<node ip>:7000`, with the session
    /// timeout of the other integration tests.
    pub fn spawn_replica(&self, name: &str, zk: &str, root: &str, variant: &str, log: &Path) -> anyhow::Result<NsReplica> {
        let addr = SocketAddrV4::new(self.ip(name), REPLICA_PORT).to_string();
        let args: Vec<String> = [
            "--zk",
            zk,
            "--listen",
            &addr,
            "--root",
            root,
            "--variant",
            variant,
            "--session-timeout-ms",
            &SESSION_TIMEOUT_MS.to_string(),
        ]
        .map(String::from)
        .to_vec();
        // info: the log then shows every view change and reconfiguration, for the post-mortem.
        let env = [("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))];
        let child = self.spawn(name, replica_binary(), &args, &env, log)?;
        Ok(NsReplica {
            node: name.to_string(),
            addr,
            proc: child,
        })
    }

    /// The classic replica (tests/interop/classic_replica.py: another implementation of
    /// chain.proto, head variant) on `<node ip>:7000`, with the same session timeout.
    pub fn spawn_classic(&self, name: &str, zk: &str, root: &str, log: &Path) -> anyhow::Result<NsReplica> {
        let py = super::python::python();
        super::python::require_python_packages(&py);
        let addr = SocketAddrV4::new(self.ip(name), REPLICA_PORT).to_string();
        let script = super::python::repo().join("tests/interop/classic_replica.py");
        let proto = super::python::proto();
        let args: Vec<String> = vec![
            "-u".into(),
            script.display().to_string(),
            "--zk".into(),
            zk.into(),
            "--listen".into(),
            addr.clone(),
            "--root".into(),
            root.into(),
            "--session-timeout-ms".into(),
            SESSION_TIMEOUT_MS.to_string(),
            "--proto".into(),
            proto.display().to_string(),
        ];
        let child = self.spawn(name, &py, &args, &[], log)?;
        Ok(NsReplica {
            node: name.to_string(),
            addr,
            proc: child,
        })
    }

    /// Installs DROP rules in `name`'s namespace (filter table, appended); they are removed by
    /// [`Cut::heal`], on drop, or with the namespace.
    pub fn cut(&self, name: &str, rules: Vec<Rule>) -> anyhow::Result<Cut<'_>> {
        let mut cut = Cut {
            net: self,
            node: name.to_string(),
            rules: Vec::new(),
        };
        for rule in rules {
            self.iptables(name, "-A", &rule)?;
            cut.rules.push(rule);
        }
        Ok(cut)
    }

    fn iptables(&self, name: &str, op: &str, rule: &Rule) -> anyhow::Result<()> {
        let (chain, dir, peer) = match rule {
            Rule::DropFrom(peer) => ("INPUT", "-s", peer),
            Rule::DropTo(peer) => ("OUTPUT", "-d", peer),
        };
        let peer = peer.to_string();
        let tool = tool_path("iptables").unwrap_or_else(|| PathBuf::from("iptables"));
        // -w: wait for the xtables lock, which parallel tests in other namespaces share.
        run(self.command(name, tool).args(["-w", op, chain, dir, &peer, "-j", "DROP"])).map(|_| ())
    }

    /// The rules in `name`'s namespace, as `iptables -S` prints them.
    pub fn rules(&self, name: &str) -> anyhow::Result<String> {
        let tool = tool_path("iptables").unwrap_or_else(|| PathBuf::from("iptables"));
        run(self.command(name, tool).args(["-w", "-S"]))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Nodes first, the hub last: each node's veth goes with its namespace.
        for ns in self.created.iter().rev() {
            delete_namespace(ns);
        }
    }
}

/// One DROP rule, in the namespace of the node it is installed in.
#[derive(Clone, Debug)]
pub enum Rule {
    /// Packets arriving from this address.
    DropFrom(Ipv4Addr),
    /// Packets leaving for this address.
    DropTo(Ipv4Addr),
}

/// DROP rules in force in one namespace.
pub struct Cut<'a> {
    net: &'a Net,
    node: String,
    rules: Vec<Rule>,
}

impl Cut<'_> {
    pub fn heal(mut self) -> anyhow::Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> anyhow::Result<()> {
        while let Some(rule) = self.rules.pop() {
            self.net.iptables(&self.node, "-D", &rule)?;
        }
        Ok(())
    }
}

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("netns: cannot remove rules in {}: {e:#}", self.node);
        }
    }
}

/// A process started inside a namespace; killed by its pid on drop.
pub struct NsChild {
    child: Option<Child>,
    label: String,
    pub log: PathBuf,
}

impl NsChild {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "{} ({}):\n{}",
            self.label,
            self.log.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct NsReplica {
    pub node: String,
    /// `ip:port`, as it registers in ZooKeeper.
    pub addr: String,
    pub proc: NsChild,
}

/// A ZooKeeper server inside a namespace, on `<node ip>:2181`.
pub struct NsZk {
    pub proc: NsChild,
    pub addr: SocketAddr,
}

impl NsZk {
    /// `dir` holds its data, config and log. Waits for a real session handshake, made from
    /// `probe_from` (a node on the bridge), as zk.rs does for its loopback servers.
    pub fn start(net: &Net, name: &str, probe_from: &str, dir: &Path) -> anyhow::Result<NsZk> {
        let ip = net.ip(name);
        let addr = SocketAddr::V4(SocketAddrV4::new(ip, ZK_PORT));
        let data = dir.join("data");
        fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let cfg = format!(
            "tickTime={TICK_MS}\n\
             initLimit=10\n\
             syncLimit=5\n\
             dataDir={data}\n\
             clientPort={ZK_PORT}\n\
             clientPortAddress={ip}\n\
             minSessionTimeout={MIN_SESSION_TIMEOUT_MS}\n\
             maxSessionTimeout={MAX_SESSION_TIMEOUT_MS}\n\
             maxClientCnxns=0\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=\n\
             autopurge.purgeInterval=0\n",
            data = data.display(),
        );
        let cfg_path = dir.join("zoo.cfg");
        fs::write(&cfg_path, cfg).with_context(|| format!("cannot write {}", cfg_path.display()))?;
        let args: Vec<String> = [
            "-Xms32m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.net.preferIPv4Stack=true",
            "-Dzookeeper.admin.enableServer=false",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp",
            &zookeeper_classpath()?,
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            &cfg_path.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        let mut proc = net.spawn(name, java_binary()?, &args, &[], &dir.join("zookeeper.log"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = proc.exited() {
                bail!("ZooKeeper exited with {status}; {}", proc.log_tail(30));
            }
            let last = match net.in_namespace(probe_from, || handshake(addr))? {
                Ok(()) => return Ok(NsZk { proc, addr }),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("no ZooKeeper session at {addr} within 60 s: {last}; {}", proc.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }
}
