#!/usr/bin/env python3
"""A *classic* chain.proto replica, for interop tests: the protocol as the independent
implementations in the wild speak it (a Python/kazoo head-variant server, Java tail-variant
servers), not as chainrep does.

It exists so that CI runs mixed chains (tests/interop_mixed.rs): our `chain-replica` next to a
peer that knows nothing of our extensions and has the other implementations' habits:

- Stubs come from chain.proto at run time (grpc_tools.protoc); it serves `HeadChainReplica`
  (or `TailChainReplica` with --variant tail) and nothing else: no `chainrep.ext`, so our
  replicas must fall back to the classic unary messages (they do on UNIMPLEMENTED).
- Membership: an EPHEMERAL znode ROOT/<own session id, lowercase hex, no 0x> holding exactly
  `host:port`; a ChildrenWatch on ROOT; children **sorted as strings**, non-hex names ignored,
  each child's data **dialled verbatim** (`grpc.insecure_channel(data.decode())`, no strip).
  First = head, last = tail, neighbours by position.
- Head: `increment`/`delete` (rc=1 unless head) take the next xid (from 1, or from 0 with
  --first-xid 0), apply the absolute new value (delete sets 0, which is *stored*), send
  `proposeStateUpdate(src=own id, xid, key, value)` to the successor and keep it in the sent
  list. Head variant: rc=0 once the tail's `xidProcessed(x >= xid)` arrives (at once if alone).
  Tail variant: rc=0 on acceptance; the tail calls `TailClient.cxidProcessed(cxid)`.
  A new value outside int32 fails the call with gRPC OUT_OF_RANGE, nothing applied (our choice;
  chainrep does the same). An `xidProcessed` that arrives before the head issued any update is
  ignored: numbering from 0, `xidProcessed(0)` from a new tail may just mean "applied nothing".
- Non-head: `proposeStateUpdate` accepted only from the current predecessor's session id,
  applied in xid order (an xid already applied is acknowledged and ignored; one past a gap waits
  up to 2 s for the gap to fill, as a threaded server does, then is refused rc=1), forwarded
  (sent list). The tail reports each update: `xidProcessed(xid)` to the head, or
  `cxidProcessed(cxid)` to the client. Non-heads trim their sent lists by polling the tail's
  `getLatestXid`.
- `stateTransfer`, accepted from the predecessor (whatever its xid; one from a session it does
  not know yet makes it read the members first), replaces state, xid and
  sent list; the sent list then goes on to the successor, or the tail reports the transfer
  (`xidProcessed(stateXid)`, or a callback per sent update).
- On every change of successor a replica holding state sends it `stateTransfer` **once, never
  retried** (the rc is logged). A brand-new replica holds state if it is alone when it
  registers, or once it receives a transfer; one that becomes head without state starts empty.
  A replica that becomes the tail because its successor left reports its last xid to the head.
- Outgoing calls go one at a time, in order, from one sender thread (so a transfer precedes
  the updates after it); a failed call is logged and dropped, like the naive servers do.
- `get`: rc=0 at the tail (a missing key reads 0; with --rc2-for-missing rc=2 for a missing or
  zero key, as one Java tail does), rc=1 elsewhere. --lose-transfers N: the first N transfers it
  would send are lost on the way, which the one-shot habit never repairs. `getLatestXid`: rc=0 and the last xid at
  the tail (0 before any), rc=1 elsewhere.

    classic_replica.py --zk HOST:PORT --listen 127.0.0.1:PORT [--advertise HOST:PORT]
                       [--root /headchain] [--variant head|tail] [--first-xid 1|0]
                       [--rc2-for-missing] [--lose-transfers N] [--session-timeout-ms 4000]
                       [--proto PATH]

Logs to stderr, at INFO (CLASSIC_LOG=debug adds every update and outgoing call). SIGTERM/SIGINT:
leaves cleanly (closes the session, so the znode goes at once).
"""

import argparse
import importlib
import logging
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import namedtuple
from concurrent import futures

try:
    import grpc
    from grpc_tools import protoc
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError
    from kazoo.recipe.watchers import ChildrenWatch
except ImportError as e:
    print(f"classic: missing Python package ({e}); run scripts/install-python-deps", file=sys.stderr)
    sys.exit(2)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
HEX = re.compile(r"[0-9a-fA-F]+")
RPC_TIMEOUT = 5.0
GAP_WAIT = 2.0

log = logging.getLogger("classic")
Member = namedtuple("Member", "name id addr")


def load_stubs(proto_path, workdir):
    shutil.copyfile(proto_path, os.path.join(workdir, "chain.proto"))
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{workdir}", f"-I{include}", f"--python_out={workdir}",
                      f"--grpc_python_out={workdir}", os.path.join(workdir, "chain.proto")])
    if rc != 0:
        sys.exit(f"classic: grpc_tools.protoc failed on {proto_path} (rc={rc})")
    sys.path.insert(0, workdir)
    return importlib.import_module("chain_pb2"), importlib.import_module("chain_pb2_grpc")


def brief(msg):
    """A request in one short line, for the log."""
    if hasattr(msg, "stateXid"):
        return f"stateXid={msg.stateXid}, {len(msg.state)} keys, {len(msg.sent)} sent"
    if hasattr(msg, "key"):
        return f"xid={msg.xid}" + (f", cxid={msg.cxid}" if hasattr(msg, "cxid") else "")
    return ", ".join(f"{f.name}={v}" for f, v in msg.ListFields()) or "-"


class Replica:
    def __init__(self, args, pb, pb_grpc):
        self.args, self.pb, self.pb_grpc = args, pb, pb_grpc
        self.head_variant = args.variant == "head"
        self.Update = pb.HeadStateUpdateRequest if self.head_variant else pb.TailStateUpdateRequest
        self.Transfer = pb.HeadStateTransferRequest if self.head_variant else pb.TailStateTransferRequest
        self.Stub = pb_grpc.HeadChainReplicaStub if self.head_variant else pb_grpc.TailChainReplicaStub
        self.cv = threading.Condition()  # guards everything below
        self.me = None  # own session id
        self.view, self.pred, self.succ = [], None, None
        self.has_state = False
        self.store = {}
        self.xid = None  # last applied xid; None before any
        self.acked = None  # head variant, at the head: highest xid the tail reported
        self.sent = []  # updates passed on, not known applied at the tail
        self.outbox = queue.Queue()  # (what, address, message), sent in order by one thread
        self.channels, self.channels_lock = {}, threading.Lock()
        self.zk = None

    # --- roles -------------------------------------------------------------------------------

    def is_head(self):
        return bool(self.view) and self.view[0].id == self.me

    def is_tail(self):
        return bool(self.view) and self.view[-1].id == self.me

    def on_children(self, children):
        """The ChildrenWatch callback, as the wild ones write it: string order, data verbatim."""
        view = []
        for name in sorted(c for c in children if HEX.fullmatch(c)):
            try:
                data, _ = self.zk.get(f"{self.args.root}/{name}")
            except NoNodeError:
                continue
            view.append(Member(name, int(name, 16), data.decode("utf-8", "replace")))
        with self.cv:
            self.set_view(view)
            self.cv.notify_all()

    def set_view(self, view):
        old_succ = self.succ
        self.view = view
        ids = [m.id for m in view]
        if self.me not in ids:
            self.pred = self.succ = None
            log.warning("not in the view %s", [m.name for m in view])
            return
        i = ids.index(self.me)
        self.pred = view[i - 1] if i > 0 else None
        self.succ = view[i + 1] if i + 1 < len(view) else None
        role = "head+tail" if len(view) == 1 else "head" if i == 0 else "tail" if self.succ is None else "middle"
        log.info("view %s: %s, pred %s, succ %s", [m.name for m in view], role,
                 self.pred and self.pred.name, self.succ and f"{self.succ.name}@{self.succ.addr!r}")
        if i == 0 and not self.has_state:
            log.warning("head without state: starting empty")
            self.has_state = True
        if self.succ is not None and (old_succ is None or old_succ.name != self.succ.name) and self.has_state:
            t = self.Transfer(src=self.me, stateXid=self.xid or 0, state=self.store, sent=self.sent)
            log.info("new successor %s: stateTransfer at xid %s, %d keys, %d sent (once)",
                     self.succ.name, self.xid, len(self.store), len(self.sent))
            if self.args.lose_transfers > 0:
                self.args.lose_transfers -= 1
                log.warning("stateTransfer to %r lost on the way (--lose-transfers)", self.succ.addr)
            else:
                self.outbox.put(("stateTransfer", self.succ.addr, t))
        if self.succ is None and old_succ is not None and self.has_state:
            log.info("tail now: reporting xid %s", self.xid)
            self.report(self.xid or 0, list(self.sent))
            self.sent = []

    # --- the write path ----------------------------------------------------------------------

    def pass_on(self, upd):
        """After applying `upd`: forward it, or report it if we are the tail."""
        if self.succ is not None:
            fwd = self.Update()
            fwd.CopyFrom(upd)
            fwd.src = self.me
            self.sent.append(fwd)
            self.outbox.put(("proposeStateUpdate", self.succ.addr, fwd))
        else:
            self.report(upd.xid, [upd])

    def report(self, xid, updates):
        """The tail tells the head (head variant) or the clients (tail variant)."""
        if self.head_variant:
            if self.is_head():
                self.acked = xid if self.acked is None else max(self.acked, xid)
                self.cv.notify_all()
            elif self.view:
                self.outbox.put(("xidProcessed", self.view[0].addr, self.pb.XidProcessedRequest(xid=xid)))
        else:
            for u in updates:
                if u.host and u.port > 0:
                    self.outbox.put(("cxidProcessed", f"{u.host}:{u.port}", self.pb.CxidProcessedRequest(cxid=u.cxid)))

    def write(self, request, context, value_of):
        with self.cv:
            if not self.is_head():
                return self.pb.HeadResponse(rc=1)
            value = value_of(self.store.get(request.key, 0))
            if not INT32_MIN <= value <= INT32_MAX:
                context.abort(grpc.StatusCode.OUT_OF_RANGE, f"{request.key} would be {value}, outside int32")
            xid = self.args.first_xid if self.xid is None else self.xid + 1
            upd = self.Update(src=self.me, xid=xid, key=request.key, value=value)
            if not self.head_variant:
                upd.host, upd.port, upd.cxid = request.host, request.port, request.cxid
            self.store[request.key] = value
            self.xid = xid
            self.pass_on(upd)
            if not self.head_variant:
                return self.pb.HeadResponse(rc=0)
            while self.acked is None or self.acked < xid:
                if not context.is_active():
                    break
                self.cv.wait(0.5)
            return self.pb.HeadResponse(rc=0)

    # --- the services ------------------------------------------------------------------------

    def increment(self, request, context):
        return self.write(request, context, lambda old: old + request.incrValue)

    def delete(self, request, context):
        return self.write(request, context, lambda old: 0)

    def get(self, request, context):
        with self.cv:
            if not self.is_tail():
                return self.pb.GetResponse(rc=1)
            value = self.store.get(request.key, 0)
            if self.args.rc2_for_missing and value == 0:
                return self.pb.GetResponse(rc=2)
            return self.pb.GetResponse(rc=0, value=value)

    def getLatestXid(self, request, context):
        with self.cv:
            if not self.is_tail():
                return self.pb.LatestXidResponse(rc=1)
            return self.pb.LatestXidResponse(rc=0, xid=self.xid or 0)

    def xidProcessed(self, request, context):
        with self.cv:
            if not self.is_head():
                return self.pb.ChainResponse(rc=1)
            if self.xid is None:
                # Numbering from 0, xidProcessed(0) may mean "applied nothing": a new tail reports
                # its stateXid. Before any update was issued it cannot acknowledge one.
                log.info("xidProcessed(%d) ignored: no update issued yet", request.xid)
                return self.pb.ChainResponse(rc=0)
            x = min(request.xid, self.xid)
            self.acked = x if self.acked is None else max(self.acked, x)
            self.sent = [u for u in self.sent if u.xid > self.acked]
            self.cv.notify_all()
            return self.pb.ChainResponse(rc=0)

    def proposeStateUpdate(self, request, context):
        with self.cv:
            deadline = time.monotonic() + GAP_WAIT
            while self.xid is not None and request.xid > self.xid + 1 and time.monotonic() < deadline:
                self.cv.wait(deadline - time.monotonic())
            if self.pred is None or request.src != self.pred.id:
                log.warning("proposeStateUpdate xid %d from %x refused: predecessor is %s",
                            request.xid, request.src, self.pred and self.pred.name)
                return self.pb.ChainResponse(rc=1)
            if self.xid is not None and request.xid <= self.xid:
                return self.pb.ChainResponse(rc=0)
            if self.xid is not None and request.xid > self.xid + 1:
                log.warning("proposeStateUpdate xid %d refused: still waiting for xid %d", request.xid, self.xid + 1)
                return self.pb.ChainResponse(rc=1)
            self.store[request.key] = request.value
            self.xid = request.xid
            log.debug("applied %s from %x", brief(request), request.src)
            self.pass_on(request)
            self.cv.notify_all()
            return self.pb.ChainResponse(rc=0)

    def stateTransfer(self, request, context):
        with self.cv:
            stale = self.pred is None or request.src != self.pred.id
        if stale and self.zk is not None:
            # A predecessor's ChildrenWatch can fire before ours, so its one transfer may beat
            # our first view; without this look the one-shot transfer is lost for good.
            try:
                self.on_children(self.zk.get_children(self.args.root))
            except Exception as e:
                log.warning("reading the members for a stateTransfer: %s", e)
        with self.cv:
            if self.pred is None or request.src != self.pred.id:
                log.warning("stateTransfer at xid %d from %x refused: predecessor is %s",
                            request.stateXid, request.src, self.pred and self.pred.name)
                return self.pb.ChainResponse(rc=1)
            self.store = dict(request.state)
            self.xid = request.stateXid
            self.has_state = True
            self.sent = []
            log.info("installed stateTransfer from %x at xid %d: %d keys, %d sent",
                     request.src, request.stateXid, len(self.store), len(request.sent))
            if self.succ is not None:
                for u in sorted(request.sent, key=lambda u: u.xid):
                    self.pass_on(u)
            else:
                self.report(request.stateXid, list(request.sent))
            self.cv.notify_all()
            return self.pb.ChainResponse(rc=0)

    # --- outgoing calls ----------------------------------------------------------------------

    def channel(self, addr):
        with self.channels_lock:
            if addr not in self.channels:
                self.channels[addr] = grpc.insecure_channel(addr)  # verbatim, as the wild ones do
            return self.channels[addr]

    def sender(self):
        while True:
            item = self.outbox.get()
            if item is None:
                return
            what, addr, msg = item
            try:
                if what == "cxidProcessed":
                    rc = self.pb_grpc.TailClientStub(self.channel(addr)).cxidProcessed(msg, timeout=RPC_TIMEOUT).rc
                else:
                    rc = getattr(self.Stub(self.channel(addr)), what)(msg, timeout=RPC_TIMEOUT).rc
                level = logging.INFO if what == "stateTransfer" or rc != 0 else logging.DEBUG
                log.log(level, "%s(%s) to %r: rc=%d", what, brief(msg), addr, rc)
            except grpc.RpcError as e:
                log.warning("%s(%s) to %r failed: %s: %s", what, brief(msg), addr, e.code().name, e.details())

    def poller(self, stop):
        """Non-heads (and, in the tail variant, the head) trim the sent list from the tail's xid."""
        while not stop.wait(0.1):
            with self.cv:
                if not self.sent or self.succ is None or (self.head_variant and self.is_head()):
                    continue
                tail = self.view[-1].addr
            try:
                r = self.Stub(self.channel(tail)).getLatestXid(self.pb.LatestXidRequest(), timeout=RPC_TIMEOUT)
            except grpc.RpcError:
                continue
            if r.rc == 0:
                with self.cv:
                    self.sent = [u for u in self.sent if u.xid > r.xid]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zk", required=True)
    ap.add_argument("--listen", required=True, help="IP:PORT to serve on")
    ap.add_argument("--advertise", help="host:port written to the znode (default: --listen)")
    ap.add_argument("--root", help="default /headchain or /tailchain by variant")
    ap.add_argument("--variant", choices=("head", "tail"), default="head")
    ap.add_argument("--first-xid", type=int, choices=(0, 1), default=1)
    ap.add_argument("--rc2-for-missing", action="store_true")
    ap.add_argument("--lose-transfers", type=int, default=0, metavar="N",
                    help="the first N stateTransfers are lost on the way (never sent, never retried)")
    ap.add_argument("--session-timeout-ms", type=int, default=4000)
    ap.add_argument("--proto", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                    "proto", "chain.proto"))
    args = ap.parse_args()
    args.root = (args.root or ("/headchain" if args.variant == "head" else "/tailchain")).rstrip("/")
    args.advertise = args.advertise or args.listen
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("CLASSIC_LOG", "INFO").upper(),
                        format="%(asctime)s.%(msecs)03d classic %(levelname)s %(message)s", datefmt="%H:%M:%S")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    with tempfile.TemporaryDirectory(prefix="classic-replica-") as work:
        pb, pb_grpc = load_stubs(args.proto, work)
        r = Replica(args, pb, pb_grpc)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        if r.head_variant:
            pb_grpc.add_HeadChainReplicaServicer_to_server(r, server)
        else:
            pb_grpc.add_TailChainReplicaServicer_to_server(r, server)
        if server.add_insecure_port(args.listen) == 0:
            sys.exit(f"classic: cannot listen on {args.listen}")
        server.start()
        threading.Thread(target=r.sender, daemon=True).start()
        threading.Thread(target=r.poller, args=(stop,), daemon=True).start()

        r.zk = KazooClient(hosts=args.zk, timeout=args.session_timeout_ms / 1000.0)
        r.zk.add_listener(lambda state: log.log(logging.INFO if state == "CONNECTED" else logging.WARNING,
                                                "ZooKeeper session %s", state))
        r.zk.start(timeout=30)
        r.zk.ensure_path(args.root)
        sid = r.zk.client_id[0]
        name = format(sid, "x")
        with r.cv:
            r.me = sid
            r.zk.create(f"{args.root}/{name}", args.advertise.encode(), ephemeral=True)
            alone = [c for c in r.zk.get_children(args.root) if HEX.fullmatch(c)] == [name]
            r.has_state = alone
        log.info("registered %s/%s = %r (%s variant, %s)", args.root, name, args.advertise, args.variant,
                 "alone: holds the state" if alone else "waiting for a state transfer")
        ChildrenWatch(r.zk, args.root, r.on_children)

        stop.wait()
        log.info("stopping")
        server.stop(grace=1).wait()
        r.outbox.put(None)
        try:
            r.zk.stop()
            r.zk.close()
        except Exception as e:  # already gone: nothing to clean up
            log.warning("closing the ZooKeeper session: %s", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
