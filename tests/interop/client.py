#!/usr/bin/env python3
"""Interop check: a Python gRPC client, built only from chain.proto, against a running chain.

It knows nothing of this crate: stubs are generated from the shared chain.proto at run time and
head/tail are found the way any course client finds them, from the session-id children of the
chain's ZooKeeper root. That is what makes it an interop test rather than a second copy of the
Rust client's assumptions.

    client.py --zk 127.0.0.1:2181 [--variant head|tail] [--root /headchain] [--proto PATH]
              [--replicas 3] [--timeout 60]

Exits 0 when every scenario holds, 1 with a message naming the first mismatch otherwise,
2 when the environment (packages, proto, ZooKeeper, chain) is not there.
"""

import argparse
import importlib
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from concurrent import futures

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
HEX = re.compile(r"[0-9a-fA-F]+")
ADDR = re.compile(r"^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$")
RPC_TIMEOUT = 10.0

try:
    import grpc
    from grpc_tools import protoc
    from kazoo.client import KazooClient
except ImportError as e:  # the Rust test greps for this line to say what to run
    print(f"interop: missing Python package ({e}); run scripts/install-python-deps", file=sys.stderr)
    sys.exit(2)


class Mismatch(Exception):
    pass


def die(msg):
    print(msg, file=sys.stderr, flush=True)
    sys.exit(2)


def log(msg):
    print(msg, flush=True)


def default_proto():
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    for p in (os.path.join(repo, "..", "shared", "chain.proto"), os.path.join(repo, "proto", "chain.proto")):
        if os.path.isfile(p):
            return os.path.normpath(p)
    return None


def load_stubs(proto_path, workdir):
    """Compile chain.proto with grpc_tools into workdir and import the generated modules."""
    # Copied under a fixed name so the generated modules are always chain_pb2/chain_pb2_grpc,
    # whatever the shared file is called, and no stale stubs from elsewhere can be imported.
    shutil.copyfile(proto_path, os.path.join(workdir, "chain.proto"))
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{workdir}", f"-I{include}", f"--python_out={workdir}",
                      f"--grpc_python_out={workdir}", os.path.join(workdir, "chain.proto")])
    if rc != 0:
        die(f"interop: grpc_tools.protoc failed on {proto_path} (rc={rc})")
    sys.path.insert(0, workdir)
    return importlib.import_module("chain_pb2"), importlib.import_module("chain_pb2_grpc")


def parse_addr(raw, child):
    text = raw.decode("utf-8", "replace") if raw else ""
    for token in text.split():
        if ADDR.match(token):
            return token
    die(f"interop: znode {child} holds {text!r}, which names no host:port")


def members(zk, root):
    """Chain order: numeric session id, lowest first. Non-hex children are not replicas."""
    try:
        children = zk.get_children(root)
    except Exception:  # NoNodeError before the first replica creates the root
        return []
    out = []
    for c in children:
        if not HEX.fullmatch(c):
            continue
        try:
            data, _ = zk.get(f"{root.rstrip('/')}/{c}")
        except Exception:  # went away between list and read
            continue
        out.append((int(c, 16), c, parse_addr(data, c)))
    out.sort()
    return out


def expect(cond, what):
    if not cond:
        raise Mismatch(what)
    log(f"  ok: {what}")


class Chain:
    def __init__(self, args, pb, pb_grpc):
        self.args, self.pb, self.pb_grpc = args, pb, pb_grpc
        self.zk = KazooClient(hosts=args.zk, timeout=10.0)
        self.channels = {}
        self.view = []

    def start(self):
        try:
            self.zk.start(timeout=15)
        except Exception as e:
            die(f"interop: cannot reach ZooKeeper at {self.args.zk}: {e}")
        deadline = time.monotonic() + self.args.timeout
        while True:
            self.view = members(self.zk, self.args.root)
            if len(self.view) >= self.args.replicas:
                break
            if time.monotonic() > deadline:
                die(f"interop: {len(self.view)} replicas under {self.args.root} after "
                                 f"{self.args.timeout}s, expected {self.args.replicas}: {self.view}")
            time.sleep(0.2)
        log(f"chain under {self.args.root}: " + " -> ".join(f"{c}@{a}" for _, c, a in self.view))

    def close(self):
        for ch in self.channels.values():
            ch.close()
        try:
            self.zk.stop()
            self.zk.close()
        except Exception:
            pass

    def stub(self, i, service):
        addr = self.view[i][2]
        if addr not in self.channels:
            self.channels[addr] = grpc.insecure_channel(addr)
        return getattr(self.pb_grpc, f"{service}Stub")(self.channels[addr])

    @property
    def head(self):
        return 0

    @property
    def tail(self):
        return len(self.view) - 1

    def retry(self, what, call, ok):
        """Call until ok(result): only for readiness, never inside a checked scenario."""
        deadline = time.monotonic() + self.args.timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = call()
                if ok(last):
                    return last
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
            time.sleep(0.2)
        die(f"interop: chain not ready after {self.args.timeout}s: {what}: last answer {last!r}")


def value_of(resp, key, missing_ok):
    # rc=2 is chain.proto's "key doesn't exist", which reads as 0 like an absent counter.
    if resp.rc == 0 or (missing_ok and resp.rc == 2):
        return resp.value
    raise Mismatch(f"get {key!r} at the tail answered rc={resp.rc}, value={resp.value}")


def expect_out_of_range(call, what):
    try:
        resp = call()
    except grpc.RpcError as e:
        expect(e.code() == grpc.StatusCode.OUT_OF_RANGE,
               f"{what} fails with OUT_OF_RANGE (got {e.code().name}: {e.details()})")
        return
    raise Mismatch(f"{what} should fail with OUT_OF_RANGE, but answered rc={resp.rc}")


def run_head(chain):
    pb = chain.pb
    T = RPC_TIMEOUT
    head = lambda: chain.stub(chain.head, "HeadChainReplica")
    tail = lambda: chain.stub(chain.tail, "HeadChainReplica")
    k = f"interop-{random.getrandbits(32):08x}"

    def inc(key, n, at=None):
        return (at or head()).increment(pb.IncrementRequest(key=key, incrValue=n), timeout=T)

    def get(key, missing_ok=False):
        return value_of(tail().get(pb.GetRequest(key=key), timeout=T), key, missing_ok)

    chain.retry("head accepts a delete", lambda: head().delete(pb.DeleteRequest(key=k + "-ready"), timeout=T),
                lambda r: r.rc == 0)
    chain.retry("tail answers get", lambda: tail().get(pb.GetRequest(key=k + "-ready"), timeout=T),
                lambda r: r.rc in (0, 2))

    log("head variant: inc/get/del")
    expect(inc(k, 5).rc == 0, f"inc {k} 5 at the head: rc=0")
    expect(inc(k, -2).rc == 0, f"inc {k} -2 at the head: rc=0")
    v = get(k)
    expect(v == 3, f"get {k} at the tail == 3 (got {v})")
    expect(head().delete(pb.DeleteRequest(key=k), timeout=T).rc == 0, f"del {k} at the head: rc=0")
    v = get(k, missing_ok=True)
    expect(v == 0, f"get {k} after del == 0 (got {v})")
    v = get(k + "-never-written", missing_ok=True)
    expect(v == 0, f"get of a never-written key == 0 (got {v})")

    log("head variant: roles")
    for i in range(1, len(chain.view)):
        r = inc(k, 1, at=chain.stub(i, "HeadChainReplica"))
        expect(r.rc == 1, f"inc at non-head replica #{i} ({chain.view[i][2]}): rc=1 (got {r.rc})")
    for i in range(0, chain.tail):
        r = chain.stub(i, "HeadChainReplica").get(pb.GetRequest(key=k), timeout=T)
        expect(r.rc == 1, f"get at non-tail replica #{i} ({chain.view[i][2]}): rc=1 (got {r.rc})")
    v = get(k, missing_ok=True)
    expect(v == 0, f"refused increments left {k} at 0 (got {v})")

    log("head variant: int32 overflow")
    o = k + "-big"
    expect(inc(o, INT32_MAX - 10).rc == 0, f"inc {o} {INT32_MAX - 10}: rc=0")
    expect_out_of_range(lambda: inc(o, 11), f"inc {o} 11 (past INT32_MAX)")
    v = get(o)
    expect(v == INT32_MAX - 10, f"{o} unchanged after the refused increment (got {v})")
    expect(inc(o, 10).rc == 0, f"inc {o} 10 (exactly INT32_MAX): rc=0")
    expect(get(o) == INT32_MAX, f"{o} == INT32_MAX")
    n = k + "-neg"
    expect(inc(n, INT32_MIN + 5).rc == 0, f"inc {n} {INT32_MIN + 5}: rc=0")
    expect_out_of_range(lambda: inc(n, -6), f"inc {n} -6 (past INT32_MIN)")
    v = get(n)
    expect(v == INT32_MIN + 5, f"{n} unchanged after the refused decrement (got {v})")


class Callbacks:
    """The TailClient service: remembers which cxids the tail reported."""

    def __init__(self):
        self.done = set()
        self.cv = threading.Condition()

    def cxidProcessed(self, request, context):
        with self.cv:
            self.done.add(request.cxid)
            self.cv.notify_all()
        return self.pb.ChainResponse(rc=0)

    def wait(self, cxid, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while cxid not in self.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
        return True


def run_tail(chain):
    pb, pb_grpc = chain.pb, chain.pb_grpc
    T = RPC_TIMEOUT
    cb = Callbacks()
    cb.pb = pb
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_TailClientServicer_to_server(cb, server)
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        die("interop: could not bind the TailClient callback server on 127.0.0.1")
    server.start()
    log(f"TailClient callback server on 127.0.0.1:{port}")
    try:
        _run_tail(chain, cb, port, pb, T)
    finally:
        server.stop(grace=None)


def _run_tail(chain, cb, port, pb, T):
    head = lambda: chain.stub(chain.head, "TailChainReplica")
    tail = lambda: chain.stub(chain.tail, "TailChainReplica")
    k = f"interop-{random.getrandbits(32):08x}"
    cxids = iter(range(random.randrange(1, 1 << 30), INT32_MAX))

    def send(kind, key, n=None, at=None):
        cxid = next(cxids)
        stub = at or head()
        if kind == "inc":
            r = stub.increment(pb.TailIncrementRequest(key=key, incrValue=n, host="127.0.0.1", port=port, cxid=cxid),
                               timeout=T)
        else:
            r = stub.delete(pb.TailDeleteRequest(key=key, host="127.0.0.1", port=port, cxid=cxid), timeout=T)
        return r, cxid

    def write(kind, key, n=None):
        what = f"{kind} {key}" + (f" {n}" if n is not None else "")
        r, cxid = send(kind, key, n)
        expect(r.rc == 0, f"{what} at the head: rc=0 (cxid {cxid})")
        expect(cb.wait(cxid, chain.args.timeout), f"tail called cxidProcessed({cxid}) for {what}")

    def get(key, missing_ok=False):
        return value_of(tail().get(pb.GetRequest(key=key), timeout=T), key, missing_ok)

    def ready():
        r, cxid = send("del", k + "-ready")
        return r.rc == 0 and cb.wait(cxid, 2.0)

    chain.retry("head accepts a delete and the tail calls back", ready, bool)
    chain.retry("tail answers get", lambda: tail().get(pb.GetRequest(key=k + "-ready"), timeout=T),
                lambda r: r.rc in (0, 2))

    log("tail variant: inc/get/del with cxid callbacks")
    write("inc", k, 5)
    write("inc", k, -2)
    v = get(k)
    expect(v == 3, f"get {k} at the tail == 3 (got {v})")
    write("del", k)
    v = get(k, missing_ok=True)
    expect(v == 0, f"get {k} after del == 0 (got {v})")
    v = get(k + "-never-written", missing_ok=True)
    expect(v == 0, f"get of a never-written key == 0 (got {v})")

    log("tail variant: roles")
    for i in range(1, len(chain.view)):
        r, cxid = send("inc", k, 1, at=chain.stub(i, "TailChainReplica"))
        expect(r.rc == 1, f"inc at non-head replica #{i} ({chain.view[i][2]}): rc=1 (got {r.rc})")
    for i in range(0, chain.tail):
        r = chain.stub(i, "TailChainReplica").get(pb.GetRequest(key=k), timeout=T)
        expect(r.rc == 1, f"get at non-tail replica #{i} ({chain.view[i][2]}): rc=1 (got {r.rc})")
    v = get(k, missing_ok=True)
    expect(v == 0, f"refused increments left {k} at 0 (got {v})")

    log("tail variant: int32 overflow")
    o = k + "-big"
    write("inc", o, INT32_MAX - 10)
    expect_out_of_range(lambda: send("inc", o, 11)[0], f"inc {o} 11 (past INT32_MAX)")
    v = get(o)
    expect(v == INT32_MAX - 10, f"{o} unchanged after the refused increment (got {v})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zk", required=True, help="ZooKeeper host:port")
    ap.add_argument("--variant", choices=("head", "tail"), default="head")
    ap.add_argument("--root", help="ZooKeeper root (default /headchain or /tailchain by variant)")
    ap.add_argument("--proto", help="chain.proto (default ../shared/chain.proto, else proto/chain.proto)")
    ap.add_argument("--replicas", type=int, default=3, help="replicas to wait for")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the chain and callbacks")
    args = ap.parse_args()
    args.root = args.root or ("/headchain" if args.variant == "head" else "/tailchain")
    proto = args.proto or default_proto()
    if not proto or not os.path.isfile(proto):
        die(f"interop: chain.proto not found (tried {args.proto or '../shared/chain.proto and proto/chain.proto'})")
    log(f"stubs from {proto}")

    with tempfile.TemporaryDirectory(prefix="chainrep-interop-") as work:
        pb, pb_grpc = load_stubs(proto, work)
        chain = Chain(args, pb, pb_grpc)
        try:
            chain.start()
            (run_head if args.variant == "head" else run_tail)(chain)
        except Mismatch as m:
            print(f"interop: MISMATCH ({args.variant} variant): {m}", file=sys.stderr)
            return 1
        except grpc.RpcError as e:
            print(f"interop: FAILED ({args.variant} variant): unexpected gRPC error {e.code().name}: {e.details()}",
                  file=sys.stderr)
            return 1
        finally:
            chain.close()
    log(f"interop: all {args.variant}-variant scenarios passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
