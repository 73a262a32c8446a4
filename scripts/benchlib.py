"""Process helpers shared by the benchmark scripts: free loopback ports, child processes
stopped by pid, a throw-away ZooKeeper and chain on 127.0.0.1, and `chainctl`."""

import os
import shutil
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
BIN = os.path.join(TARGET, "release")
ZK_CP = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"

children = []


def say(msg):
    print(f"==> {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args, log, env=None):
    out = open(log, "ab")
    env = {**os.environ, **env} if env else None
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    children.append(p)
    return p


def stop_all():
    # Replicas first (they leave ZooKeeper cleanly), ZooKeeper last: reverse start order.
    for p in reversed(children):
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 10
    for p in reversed(children):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    children.clear()


def wait_for(what, check, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"{os.path.basename(sys.argv[0])}: {what} did not come up within {timeout} s")


def zk_ok(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"ruok")
        return s.recv(4) == b"imok"


def ensure_deps(etcd=False):
    if not os.path.exists("/usr/share/java/zookeeper.jar"):
        say("scripts/install-deps (ZooKeeper)")
        subprocess.run([os.path.join(REPO, "scripts/install-deps")], check=True)
    if etcd and shutil.which("etcd") is None:
        say("apt-get install etcd-server")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "etcd-server"], check=True, env=env)
    say("cargo build --release --bins")
    subprocess.run(["cargo", "build", "--release", "--bins"], cwd=REPO, check=True)


def start_zookeeper(work):
    port = free_port()
    data = os.path.join(work, "zk-data")
    os.makedirs(data)
    cfg = os.path.join(work, "zoo.cfg")
    with open(cfg, "w") as f:
        f.write(
            f"tickTime=500\ndataDir={data}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
            "maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=ruok\n"
        )
    spawn(["java", "-Xmx256m", "-Dzookeeper.admin.enableServer=false", "-cp", ZK_CP,
           "org.apache.zookeeper.server.ZooKeeperServerMain", cfg], os.path.join(work, "zookeeper.log"))
    wait_for("ZooKeeper", lambda: zk_ok(port))
    return f"127.0.0.1:{port}"


def chainctl(zk, *args, timeout=120):
    return subprocess.run([os.path.join(BIN, "chainctl"), "--zk", zk, *args], capture_output=True, text=True, timeout=timeout)


def start_replica(work, zk, name, session_timeout_ms=4000, extra=(), addr=None, env=None):
    """Returns (process, address). `extra` are further chain-replica flags; `addr` reuses an address;
    `env` adds environment variables."""
    addr = addr or f"127.0.0.1:{free_port()}"
    p = spawn([os.path.join(BIN, "chain-replica"), "--zk", zk, "--listen", addr, "--session-timeout-ms", str(session_timeout_ms), *extra],
              os.path.join(work, f"{name}.log"), env)
    return p, addr


def chain_status(zk, root=None):
    """Rows of `chainctl status` as (role, address, session, last_xid, synced)."""
    out = chainctl(zk, *(["--root", root] if root else []), "status", timeout=10).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        if f[:1] and f[0] in ("head", "middle", "tail", "head+tail"):
            rows.append((f[0], f[1], f[2], f[3], f[4] == "true"))
    return rows


def wait_chain(zk, n, timeout=60, root=None):
    wait_for(f"a chain of {n} synced replicas", lambda: len(chain_status(zk, root)) == n and all(r[4] for r in chain_status(zk, root)), timeout)


def start_chain(work, zk, n=3):
    procs = [start_replica(work, zk, f"replica-{i + 1}") for i in range(n)]
    wait_chain(zk, n)
    return procs


