//! A real, throw-away ZooKeeper server for integration tests.
//!
//! The server is Debian's ZooKeeper (`scripts/install-deps` installs it) started directly with
//! `java -cp <jars> org.apache.zookeeper.server.ZooKeeperServerMain <zoo.cfg>`: no systemd, no
//! `/etc/zookeeper`, so tests never touch a system-wide instance and can run several servers side
//! by side. Each server listens on a free port on 127.0.0.1 only and keeps its data in its own
//! temporary directory.
//!
//! `start`, `stop` and `restart` block the calling thread (up to a few seconds while the JVM
//! starts). From async tests that keep ZooKeeper clients running meanwhile, use a multi-threaded
//! runtime (`#[tokio::test(flavor = "multi_thread")]`) and wrap the call in
//! `tokio::task::block_in_place`, or the clients stall while the JVM boots.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a JVM gets to start serving before `start` gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `tickTime` of the test server. ZooKeeper only grants session timeouts between 2 and 20 ticks
/// unless told otherwise, so a short tick lets tests use sessions of a second or two.
pub const TICK_MS: u64 = 200;
pub const MIN_SESSION_TIMEOUT_MS: u64 = 600;
pub const MAX_SESSION_TIMEOUT_MS: u64 = 60_000;

pub struct ZkServer {
    dir: tempfile::TempDir,
    port: u16,
    classpath: String,
    java: PathBuf,
    child: Option<Child>,
}

impl ZkServer {
    /// Starts a fresh server on a free loopback port and waits until it serves sessions.
    pub fn start() -> anyhow::Result<ZkServer> {
        let classpath = zookeeper_classpath()?;
        let java = java_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("zk-test-")
            .tempdir()
            .context("cannot create a temporary directory for ZooKeeper")?;
        let port = free_port()?;
        let mut server = ZkServer {
            dir,
            port,
            classpath,
            java,
            child: None,
        };
        server.write_config()?;
        server.launch()?;
        Ok(server)
    }

    /// `127.0.0.1:PORT`, ready for `ZkConfig::connect`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's own log (stdout and stderr of the JVM), appended across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    /// The last `lines` lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to exit. Sessions and znodes
    /// survive in the data directory; clients see the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Kill by our own child's pid only; `kill` fails harmlessly if it already exited.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data directory, so persistent
    /// znodes and (unexpired) sessions come back.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let data = self.data_dir();
        fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let cfg = format!(
            "tickTime={TICK_MS}\n\
             initLimit=10\n\
             syncLimit=5\n\
             dataDir={data}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             minSessionTimeout={MIN_SESSION_TIMEOUT_MS}\n\
             maxSessionTimeout={MAX_SESSION_TIMEOUT_MS}\n\
             maxClientCnxns=0\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=\n\
             autopurge.purgeInterval=0\n",
            data = data.display(),
            port = self.port,
        );
        let path = self.config_path();
        fs::write(&path, cfg).with_context(|| format!("cannot write {}", path.display()))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("zoo.cfg")
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("cannot open {}", self.log_path().display()))?;
        let log2 = log.try_clone().context("cannot duplicate the log file handle")?;
        let child = Command::new(&self.java)
            // A small, quick-starting JVM: tests run several servers on two cores.
            .args(["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-Djava.net.preferIPv4Stack=true")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-Dzookeeper.jmx.log4j.disable=true")
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=info")
            .arg("-Dorg.slf4j.simpleLogger.showDateTime=true")
            .arg("-cp")
            .arg(&self.classpath)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .with_context(|| format!("cannot run {}", self.java.display()))?;
        self.child = Some(child);
        if let Err(e) = self.wait_serving() {
            let tail = self.log_tail(30);
            self.stop();
            return Err(e.context(format!("ZooKeeper on port {} did not start; log tail:\n{tail}", self.port)));
        }
        Ok(())
    }

    /// A TCP accept is not enough: ZooKeeper binds its port before it has loaded its data and
    /// drops connections until then. Wait for a real session handshake instead.
    fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_err = String::from("no attempt yet");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("the JVM exited with {status}");
                }
            }
            match handshake(self.addr()) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("no ZooKeeper session within {START_TIMEOUT:?}: {last_err}")
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens a session with the raw wire protocol and closes it again.
pub fn handshake(addr: SocketAddr) -> io::Result<()> {
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.set_write_timeout(Some(Duration::from_secs(2)))?;
    // ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd (16 zero
    // bytes), readOnly.
    let mut body = Vec::with_capacity(45);
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&(MIN_SESSION_TIMEOUT_MS as i32).to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&16i32.to_be_bytes());
    body.extend_from_slice(&[0u8; 16]);
    body.push(0);
    sock.write_all(&(body.len() as i32).to_be_bytes())?;
    sock.write_all(&body)?;
    let mut len = [0u8; 4];
    sock.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(16..=1024).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("odd ConnectResponse length {len}"),
        ));
    }
    let mut resp = vec![0u8; len as usize];
    sock.read_exact(&mut resp)?;
    let timeout = i32::from_be_bytes([resp[4], resp[5], resp[6], resp[7]]);
    if timeout <= 0 {
        return Err(io::Error::other("server refused the session"));
    }
    // closeSession (xid 1, opcode -11), so probe sessions do not linger until they expire.
    let mut close = Vec::with_capacity(12);
    close.extend_from_slice(&8i32.to_be_bytes());
    close.extend_from_slice(&1i32.to_be_bytes());
    close.extend_from_slice(&(-11i32).to_be_bytes());
    sock.write_all(&close)?;
    let _ = sock.read(&mut [0u8; 16]);
    Ok(())
}

/// A port nothing listens on right now. Another process could take it before ZooKeeper binds
/// it; on a test machine that is rare enough.
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind a probe socket on 127.0.0.1")?;
    Ok(l.local_addr().context("probe socket has no address")?.port())
}

pub fn java_binary() -> anyhow::Result<PathBuf> {
    if let Some(java) = std::env::var_os("JAVA") {
        return Ok(PathBuf::from(java));
    }
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        let java = Path::new(&home).join("bin/java");
        if java.is_file() {
            return Ok(java);
        }
    }
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let java = dir.join("java");
        if java.is_file() {
            return Ok(java);
        }
    }
    for java in ["/usr/bin/java", "/usr/lib/jvm/default-java/bin/java"] {
        if Path::new(java).is_file() {
            return Ok(PathBuf::from(java));
        }
    }
    bail!("no java found (set JAVA or JAVA_HOME, or run scripts/install-deps)")
}

/// Directories where ZooKeeper's jars may live: Debian (`libzookeeper-java` puts them in
/// /usr/share/java, older packages used /usr/share/zookeeper) and an upstream tarball
/// (`$ZOOKEEPER_HOME/lib`).
fn jar_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os("ZOOKEEPER_HOME") {
        dirs.push(Path::new(&home).join("lib"));
        dirs.push(PathBuf::from(home));
    }
    for d in ["/usr/share/zookeeper/lib", "/usr/share/zookeeper", "/usr/share/java"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// Whether `name` is the ZooKeeper server jar itself (not jute, recipes, contrib, tests...).
fn is_server_jar(name: &str) -> bool {
    if name == "zookeeper.jar" {
        return true;
    }
    // zookeeper-3.8.0.jar: a version right after the dash.
    name.strip_prefix("zookeeper-")
        .and_then(|rest| rest.strip_suffix(".jar"))
        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()) && !v.contains("tests"))
}

/// Jars ZooKeeper needs besides itself. Debian's zookeeper.jar names its dependencies in its
/// manifest `Class-Path`, but listing the ones that exist keeps this working when a package
/// drops the manifest or the jars come from a tarball. A logging backend (slf4j-simple) makes
/// the server log readable in `zookeeper.log`; without one slf4j silently logs nothing.
const COMPANION_JARS: &[&str] = &[
    "zookeeper-jute",
    "slf4j-api",
    "slf4j-simple",
    "netty-buffer",
    "netty-codec",
    "netty-common",
    "netty-handler",
    "netty-resolver",
    "netty-transport",
    "netty-transport-native-epoll",
    "netty-transport-native-unix-common",
    "commons-cli",
    "commons-io",
    "metrics-core",
    "snappy-java",
    "jline",
    "audience-annotations",
];

/// The Java classpath for running a ZooKeeper server. `ZOOKEEPER_CLASSPATH` overrides the search.
pub fn zookeeper_classpath() -> anyhow::Result<String> {
    if let Ok(cp) = std::env::var("ZOOKEEPER_CLASSPATH") {
        if !cp.trim().is_empty() {
            return Ok(cp);
        }
    }
    let dirs = jar_dirs();
    for dir in &dirs {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        // Prefer the unversioned symlink Debian maintains, so upgrades keep working.
        let Some(server) = names
            .iter()
            .find(|n| *n == "zookeeper.jar")
            .or_else(|| names.iter().find(|n| is_server_jar(n)))
        else {
            continue;
        };
        let mut cp = vec![dir.join(server)];
        let is_lib_dir = dir.file_name().is_some_and(|n| n == "lib");
        if is_lib_dir {
            // An upstream `lib/` holds exactly ZooKeeper's dependencies: take them all.
            cp.extend(names.iter().filter(|n| n.ends_with(".jar") && *n != server).map(|n| dir.join(n)));
        } else {
            for base in COMPANION_JARS {
                if let Some(jar) = find_jar(&names, base) {
                    cp.push(dir.join(jar));
                } else if let Some(jar) = dirs.iter().find_map(|d| find_jar_in(d, base)) {
                    cp.push(jar);
                }
            }
        }
        let cp: Vec<String> = cp.iter().map(|p| p.display().to_string()).collect();
        return Ok(cp.join(":"));
    }
    bail!(
        "ZooKeeper jars not found in {}; run scripts/install-deps (Debian package `zookeeper`) or set ZOOKEEPER_HOME / ZOOKEEPER_CLASSPATH",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// `base.jar`, or else `base-<version>.jar`.
fn find_jar<'a>(names: &'a [String], base: &str) -> Option<&'a String> {
    let plain = format!("{base}.jar");
    names.iter().find(|n| **n == plain).or_else(|| {
        names.iter().find(|n| {
            n.strip_prefix(base)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()) && v.ends_with(".jar"))
        })
    })
}

fn find_jar_in(dir: &Path, base: &str) -> Option<PathBuf> {
    let names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    find_jar(&names, base).map(|n| dir.join(n))
}
