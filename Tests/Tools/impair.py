#!/usr/bin/env python3
"""impair.py: network impairment between two network namespaces, without sch_netem.

The kernel these tests run on has no `sch_netem`, so this program plays its part: it joins two
network namespaces through a TUN device in each and forwards every IP packet (IPv4 and IPv6) from
one to the other in user space, applying per direction a one-way delay, jitter, random loss, bursts
of loss (Gilbert–Elliott), reordering and an optional rate limit. Standard library only.

    impair.py up --a NS_A --b NS_B [--subnet 10.77.0.0/30] [--subnet6 fd77::/64]
                 [--both SPEC] [--a-to-b SPEC] [--b-to-a SPEC] [--seed N]
    impair.py down --a NS_A --b NS_B

`up` creates the namespaces if they are missing (and deletes those it created when it exits), a TUN
device in each (`imp0` unless --dev), gives A the first and B the second address of each subnet
(point-to-point, with a route to the whole subnet), brings the devices and `lo` up, prints one JSON
line to stdout when ready ({"event": "ready", ...}: addresses, settings) and forwards in the
foreground until SIGTERM or SIGINT. Counters go to stderr as one JSON line at exit and on SIGUSR1.
`down` stops an `up` for the same pair (state in --state-dir) and deletes namespaces it created and
left behind (after a SIGKILL, say).

SPEC is a comma-separated list of key=value; `--both` applies to both directions, then the
direction's own SPEC overrides key by key:

    delay=40ms        one-way delay (ns, us, ms, s; a bare number is ms)
    jitter=5ms        added to the delay per packet; with dist=uniform (default) uniform in
                      [-jitter, +jitter], with dist=normal a normal with standard deviation jitter;
                      the delay never goes below 0
    order=free|keep   free (default, like netem): each packet's delay is independent, so jitter larger
                      than the packet spacing reorders; keep: a packet is never delivered before the one
                      ahead of it (its delay is raised to that), no reordering, the distribution skews up
    loss=2%           independent random loss (a percentage, or a fraction 0..1)
    burst=P:R[:H]     Gilbert–Elliott loss: per packet, the good state moves to the bad one with
                      probability P, the bad state back with probability R; in the bad state a packet is
                      lost with probability H (default 1). Loss rate H·P/(P+R), mean loss run 1/R (H=1).
                      Independent of loss= (both may apply)
    reorder=10%[:GAP] that fraction of packets gets GAP (default 10ms) of extra delay, so packets sent
                      less than GAP after it overtake it: each such packet arrives late (out of order)
    rate=10mbit       serialisation at that rate (bit, kbit, mbit, gbit; SI) ahead of the delay, with a
                      drop-tail queue of limit=N packets (default 1000). Lost packets take no bandwidth

Every random decision comes from --seed: each direction and each model (loss, burst, jitter, reorder)
has its own generator, drawing the same number of values for every packet whatever happens to it, so
packet number N of a direction meets the same fate for the same seed and settings, and changing one
model's settings does not change another's decisions.

The work is split in a sans-IO core (`Impairment`: a packet's direction, arrival time and size in,
its delivery time or None (dropped) out; testable with no I/O) and a thin I/O shell (`Forwarder`: TUN
fds, a heap of (due_ns, seq, ...), select, time.monotonic_ns).
"""
import argparse
import contextlib
import ctypes
import fcntl
import heapq
import ipaddress
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from collections import deque

A_TO_B = 0
B_TO_A = 1
DIRECTION_NAMES = ("a_to_b", "b_to_a")
DROP_REASONS = ("loss", "burst", "queue")

# ---------------------------------------------------------------------------------------------
# Settings


class SpecError(ValueError):
    pass


_TIME_UNITS = (("ns", 1), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000))
_RATE_UNITS = (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3), ("bit", 1))


def parse_time_ns(text):
    text = text.strip().lower()
    for suffix, scale in _TIME_UNITS:
        if text.endswith(suffix) and not (suffix == "s" and text[-2:] in ("ns", "us", "ms")):
            number = text[: -len(suffix)]
            break
    else:
        number, scale = text, 1_000_000
    try:
        value = float(number)
    except ValueError:
        raise SpecError(f"not a duration: {text!r} (e.g. 20ms, 500us, 1s)") from None
    if value < 0 or value != value:
        raise SpecError(f"a duration cannot be negative: {text!r}")
    return round(value * scale)


def parse_probability(text):
    text = text.strip()
    try:
        if text.endswith("%"):
            value = float(text[:-1]) / 100
        else:
            value = float(text)
    except ValueError:
        raise SpecError(f"not a probability: {text!r} (e.g. 2% or 0.02)") from None
    if not 0 <= value <= 1:
        raise SpecError(f"a probability is a percentage (2%) or a fraction 0..1 (0.02), not {text!r}")
    return value


def parse_rate_bps(text):
    text = text.strip().lower()
    for suffix, scale in _RATE_UNITS:
        if text.endswith(suffix):
            try:
                value = float(text[: -len(suffix)]) * scale
            except ValueError:
                break
            if value <= 0:
                raise SpecError(f"a rate must be positive: {text!r}")
            return round(value)
    raise SpecError(f"not a rate: {text!r} (e.g. 800kbit, 10mbit, 1gbit)")


class Spec:
    """One direction's settings. Times in ns, probabilities as fractions, rate in bit/s."""

    KEYS = ("delay", "jitter", "dist", "order", "loss", "burst", "reorder", "rate", "limit")

    def __init__(self, delay_ns=0, jitter_ns=0, dist="uniform", order="free", loss=0.0, burst=None,
                 reorder=0.0, reorder_gap_ns=10_000_000, rate_bps=0, limit=1000):
        self.delay_ns = int(delay_ns)
        self.jitter_ns = int(jitter_ns)
        self.dist = dist
        self.order = order
        self.loss = float(loss)
        self.burst = tuple(burst) if burst else None   # (p_enter_bad, p_leave_bad, loss_in_bad)
        self.reorder = float(reorder)
        self.reorder_gap_ns = int(reorder_gap_ns)
        self.rate_bps = int(rate_bps)
        self.limit = int(limit)
        self.validate()

    def validate(self):
        if self.dist not in ("uniform", "normal"):
            raise SpecError(f"dist is uniform or normal, not {self.dist!r}")
        if self.order not in ("free", "keep"):
            raise SpecError(f"order is free or keep, not {self.order!r}")
        if self.order == "keep" and self.reorder:
            raise SpecError("reorder= needs order=free (order=keep never lets a packet overtake another)")
        if self.limit < 1:
            raise SpecError("limit must be at least 1 packet")
        if self.burst and len(self.burst) != 3:
            raise SpecError("burst is P:R or P:R:H")

    @classmethod
    def parse(cls, text, base=None):
        """Parses "delay=20ms,jitter=5ms,loss=2%,..." on top of `base` (a Spec, or defaults)."""
        fields = dict(base.__dict__) if base is not None else dict(cls().__dict__)
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise SpecError(f"expected key=value, got {item!r} (keys: {', '.join(cls.KEYS)})")
            key, value = (part.strip() for part in item.split("=", 1))
            key = key.lower()
            if key == "delay":
                fields["delay_ns"] = parse_time_ns(value)
            elif key == "jitter":
                fields["jitter_ns"] = parse_time_ns(value)
            elif key in ("dist", "distribution"):
                fields["dist"] = value.lower()
            elif key == "order":
                fields["order"] = value.lower()
            elif key == "loss":
                fields["loss"] = parse_probability(value)
            elif key == "burst":
                if value.lower() in ("0", "off", "none"):
                    fields["burst"] = None
                    continue
                parts = value.split(":")
                if len(parts) not in (2, 3):
                    raise SpecError(f"burst is P:R or P:R:H (enter bad, leave bad, loss in bad), got {value!r}")
                p, r = parse_probability(parts[0]), parse_probability(parts[1])
                h = parse_probability(parts[2]) if len(parts) == 3 else 1.0
                if r == 0 and p > 0:
                    raise SpecError("burst: R (leaving the bad state) of 0 would never leave it")
                fields["burst"] = (p, r, h)
            elif key == "reorder":
                parts = value.split(":")
                if len(parts) > 2:
                    raise SpecError(f"reorder is P or P:GAP, got {value!r}")
                fields["reorder"] = parse_probability(parts[0])
                if len(parts) == 2:
                    fields["reorder_gap_ns"] = parse_time_ns(parts[1])
            elif key == "rate":
                fields["rate_bps"] = 0 if value.lower() in ("0", "off", "none") else parse_rate_bps(value)
            elif key == "limit":
                try:
                    fields["limit"] = int(value)
                except ValueError:
                    raise SpecError(f"limit is a number of packets, got {value!r}") from None
            else:
                raise SpecError(f"unknown key {key!r} (keys: {', '.join(cls.KEYS)})")
        return cls(**fields)

    def describe(self):
        """The settings as JSON-friendly values (times in ms)."""
        out = {"delay_ms": self.delay_ns / 1e6, "jitter_ms": self.jitter_ns / 1e6, "dist": self.dist,
               "order": self.order, "loss": self.loss, "reorder": self.reorder,
               "reorder_gap_ms": self.reorder_gap_ns / 1e6}
        if self.burst:
            p, r, h = self.burst
            out["burst"] = {"p_enter": p, "p_leave": r, "loss_in_bad": h,
                            "loss_rate": h * p / (p + r) if p + r else 0.0,
                            "mean_bad_run": 1 / r if r else None}
        if self.rate_bps:
            out["rate_bps"] = self.rate_bps
            out["limit"] = self.limit
        return out

    def __eq__(self, other):
        return isinstance(other, Spec) and self.__dict__ == other.__dict__

    def __repr__(self):
        return f"Spec({self.describe()})"


# ---------------------------------------------------------------------------------------------
# The sans-IO core


class DirectionModel:
    """One direction's state: generators, the Gilbert–Elliott state, the rate queue, counters."""

    def __init__(self, spec, seed, name):
        self.spec = spec
        self.name = name
        prefix = f"impair/{seed}/{name}/"
        # One generator per model (seeded from a string: stable across Python runs and versions).
        self._loss = random.Random(prefix + "loss").random
        self._burst = random.Random(prefix + "burst").random
        self._jitter = random.Random(prefix + "jitter")
        self._reorder = random.Random(prefix + "reorder").random
        self.bad = False
        self.last_due = 0
        self.busy_until = 0
        self.queue = deque()              # finish times of packets in the rate limiter
        self.received = 0
        self.forwarded = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.reordered = 0                # packets the reorder model held back
        self.late = 0                     # packets delivered after one that arrived later
        self.max_delivered = -1
        self.last_drop_reason = None

    def decide(self, now_ns, size):
        s = self.spec
        self.received += 1
        self.bytes_in += size
        reason = None
        # Every model draws the same number of values for every packet (see the module docstring).
        if s.loss and self._loss() < s.loss:
            reason = "loss"
        if s.burst:
            p, r, h = s.burst
            move, lose = self._burst(), self._burst()
            if self.bad:
                if move < r:
                    self.bad = False
            elif move < p:
                self.bad = True
            if self.bad and lose < h and reason is None:
                reason = "burst"
        due = now_ns + s.delay_ns
        if s.jitter_ns:
            if s.dist == "uniform":
                due += round((2 * self._jitter.random() - 1) * s.jitter_ns)
            else:
                due += round(self._jitter.gauss(0.0, s.jitter_ns))
        held = s.reorder and self._reorder() < s.reorder
        if reason is None and s.rate_bps:
            queue = self.queue
            while queue and queue[0] <= now_ns:
                queue.popleft()
            if len(queue) >= s.limit:
                reason = "queue"
            else:
                start = self.busy_until if self.busy_until > now_ns else now_ns
                finish = start + size * 8_000_000_000 // s.rate_bps
                self.busy_until = finish
                queue.append(finish)
                due += finish - now_ns
        if reason is not None:
            self.dropped[reason] += 1
            self.last_drop_reason = reason
            return None
        if held:
            due += s.reorder_gap_ns
            self.reordered += 1
        if due < now_ns:
            due = now_ns
        if s.order == "keep":
            if due < self.last_due:
                due = self.last_due
            self.last_due = due
        return due

    def delivered(self, index, size):
        self.forwarded += 1
        self.bytes_out += size
        if index < self.max_delivered:
            self.late += 1
        else:
            self.max_delivered = index

    def counters(self):
        return {"received": self.received, "forwarded": self.forwarded, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "dropped": dict(self.dropped),
                "dropped_total": sum(self.dropped.values()), "reordered": self.reordered, "late": self.late}


class Impairment:
    """The sans-IO core: no sockets, no clock. Packet i of a direction (i counted from 0 in arrival
    order) goes in with `decide(direction, now_ns, size)`, which returns the time to deliver it, or
    None if it is dropped (the reason in `last_drop_reason(direction)` and the counters). The caller
    reports each delivery with `delivered(direction, i, size)` (it counts packets delivered late)."""

    def __init__(self, a_to_b=None, b_to_a=None, seed=0):
        self.seed = seed
        self.models = (DirectionModel(a_to_b or Spec(), seed, DIRECTION_NAMES[A_TO_B]),
                       DirectionModel(b_to_a or Spec(), seed, DIRECTION_NAMES[B_TO_A]))

    def decide(self, direction, now_ns, size):
        return self.models[direction].decide(now_ns, size)

    def delivered(self, direction, index, size):
        self.models[direction].delivered(index, size)

    def last_drop_reason(self, direction):
        return self.models[direction].last_drop_reason

    def counters(self):
        return {name: model.counters() for name, model in zip(DIRECTION_NAMES, self.models)}


# ---------------------------------------------------------------------------------------------
# Namespaces and TUN devices

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
NETNS_DIR = "/var/run/netns"
PR_SET_TIMERSLACK = 29

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd, nstype=CLONE_NEWNET):
    """setns(2) for the calling thread (Python 3.11 has no os.setns)."""
    if _libc.setns(fd, nstype) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def entered(namespace):
    """Runs the body with the calling thread inside network namespace `namespace` (a name under
    /var/run/netns), then returns it to the namespace it was in. A socket or TUN device created in
    the body stays in `namespace` for good."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)


def namespace_exists(name):
    return os.path.exists(os.path.join(NETNS_DIR, name))


def run(*args):
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def open_tun(namespace, device):
    with entered(namespace):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", device.encode(), IFF_TUN | IFF_NO_PI))
        except OSError:
            os.close(fd)
            raise
    os.set_blocking(fd, False)
    return fd


def pair_addresses(subnet):
    try:
        network = ipaddress.ip_network(subnet, strict=False)
    except ValueError as error:
        raise SystemExit(f"impair: {error}") from None
    limit = 30 if network.version == 4 else 126
    if network.prefixlen > limit:
        raise SystemExit(f"impair: {subnet} is too small for two addresses (at most /{limit})")
    return network, network.network_address + 1, network.network_address + 2


def configure(namespace, device, mtu, txqueuelen, local4, peer4, net4, local6, peer6, net6, routes):
    ip = ("ip", "-n", namespace)
    run(*ip, "link", "set", "lo", "up")
    # No IPv6 link-local address: the kernel then sends no router solicitations or MLD reports, so
    # the only packets on the link are the tests' own.
    run(*ip, "link", "set", "dev", device, "mtu", str(mtu), "txqueuelen", str(txqueuelen), "addrgenmode", "none")
    run(*ip, "addr", "add", f"{local4}/32", "peer", f"{peer4}/32", "dev", device)
    if local6 is not None:
        run(*ip, "-6", "addr", "add", f"{local6}/128", "peer", f"{peer6}/128", "dev", device, "nodad")
    run(*ip, "link", "set", "dev", device, "up")
    run(*ip, "route", "replace", str(net4), "dev", device)
    if net6 is not None:
        run(*ip, "-6", "route", "replace", str(net6), "dev", device)
    for route in routes:
        family = "-6" if ipaddress.ip_network(route, strict=False).version == 6 else "-4"
        run(*ip, family, "route", "replace", route, "dev", device)


# ---------------------------------------------------------------------------------------------
# The I/O shell


class Forwarder:
    """Reads packets from the two TUN fds, asks the core, and writes each to the other fd when due."""

    BATCH = 256

    def __init__(self, core, fd_a, fd_b, mtu):
        self.core = core
        self.fds = (fd_a, fd_b)              # packets read from fd_a go A→B (written to fd_b)
        self.read_size = max(mtu, 1500) + 64
        self.heap = []
        self.seq = 0
        self.write_errors = 0
        self.running = True
        self.report_requested = False
        self.started_ns = time.monotonic_ns()

    def counters(self):
        counters = self.core.counters()
        counters["write_errors"] = self.write_errors
        counters["queued"] = len(self.heap)
        counters["seconds"] = round((time.monotonic_ns() - self.started_ns) / 1e9, 3)
        return counters

    def report(self, event):
        print(json.dumps({"event": event, **self.counters()}), file=sys.stderr, flush=True)

    def run(self, wakeup_fd):
        heap, fds, core = self.heap, self.fds, self.core
        models = core.models
        heappush, heappop = heapq.heappush, heapq.heappop
        monotonic_ns, read, write = time.monotonic_ns, os.read, os.write
        read_size, batch = self.read_size, self.BATCH
        watch = [fds[0], fds[1], wakeup_fd]
        while self.running:
            now = monotonic_ns()
            while heap and heap[0][0] <= now:
                _, _, direction, index, packet = heappop(heap)
                try:
                    write(fds[1 - direction], packet)
                except OSError:
                    self.write_errors += 1
                    continue
                models[direction].delivered(index, len(packet))
            if heap:
                # select(2) has microsecond resolution; round up so that we do not wake early.
                timeout = (heap[0][0] - now + 999) // 1000 / 1e6
            else:
                timeout = None
            readable, _, _ = select.select(watch, (), (), timeout)
            for fd in readable:
                if fd == wakeup_fd:
                    try:
                        os.read(wakeup_fd, 512)
                    except BlockingIOError:
                        pass
                    if self.report_requested:
                        self.report_requested = False
                        self.report("counters")
                    continue
                direction = A_TO_B if fd == fds[0] else B_TO_A
                model = models[direction]
                for _ in range(batch):
                    try:
                        packet = read(fd, read_size)
                    except BlockingIOError:
                        break
                    index = model.received
                    due = model.decide(monotonic_ns(), len(packet))
                    if due is not None:
                        self.seq += 1
                        heappush(heap, (due, self.seq, direction, index, packet))


def state_path(state_dir, a, b):
    return os.path.join(state_dir, f"{a}--{b}.json")


def running_pid(state):
    """The pid recorded in `state` if that process still runs, else None."""
    try:
        with open(state) as f:
            pid = json.load(f).get("pid")
        os.kill(pid, 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return pid


def command_up(args):
    if args.a == args.b:
        raise SystemExit("impair: --a and --b must name different namespaces")
    try:
        both = Spec.parse(args.both)
        specs = (Spec.parse(args.a_to_b, both), Spec.parse(args.b_to_a, both))
    except SpecError as error:
        raise SystemExit(f"impair: {error}")
    net4, a4, b4 = pair_addresses(args.subnet)
    if net4.version != 4:
        raise SystemExit("impair: --subnet is an IPv4 subnet (--subnet6 the IPv6 one)")
    if args.subnet6.lower() in ("none", "off", ""):
        net6 = a6 = b6 = None
    else:
        net6, a6, b6 = pair_addresses(args.subnet6)
        if net6.version != 6:
            raise SystemExit("impair: --subnet6 is an IPv6 subnet, or none")
    if len(args.dev) > 15:
        raise SystemExit("impair: --dev is at most 15 characters")

    # Timers as precise as the kernel allows (the default slack is 50 µs), optionally a higher priority.
    _libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0)
    if args.nice:
        os.nice(args.nice)
    if args.realtime:
        # SCHED_FIFO: woken by a packet or a timer, the forwarder runs at once instead of waiting for
        # a busy CPU's current task to finish its slice (milliseconds). It blocks in select whenever it
        # has nothing to do, and the kernel's RT throttling keeps 5% of each CPU for everything else.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime))
        except OSError as error:
            print(f"impair: --realtime: {error}; running with the normal scheduler", file=sys.stderr)

    stop = {"signal": None}
    read_wakeup, write_wakeup = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    forwarder = None

    def on_stop(signum, _frame):
        stop["signal"] = signum
        if forwarder is not None:
            forwarder.running = False

    def on_report(_signum, _frame):
        if forwarder is not None:
            forwarder.report_requested = True

    signal.set_wakeup_fd(write_wakeup, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_report)

    created, fds = [], []
    os.makedirs(args.state_dir, exist_ok=True)
    state = state_path(args.state_dir, args.a, args.b)
    running = running_pid(state)
    if running is not None:
        raise SystemExit(f"impair: {args.a}/{args.b} is already joined by process {running} ({state}); "
                         f"`impair.py down --a {args.a} --b {args.b}` stops it")
    try:
        for name in (args.a, args.b):
            if not namespace_exists(name):
                run("ip", "netns", "add", name)
                created.append(name)
        with open(state, "w") as f:
            json.dump({"pid": os.getpid(), "created": created}, f)
        fds.append(open_tun(args.a, args.dev))
        fds.append(open_tun(args.b, args.dev))
        configure(args.a, args.dev, args.mtu, args.txqueuelen, a4, b4, net4, a6, b6, net6, args.a_route)
        configure(args.b, args.dev, args.mtu, args.txqueuelen, b4, a4, net4, b6, a6, net6, args.b_route)
        if stop["signal"] is None:
            core = Impairment(specs[0], specs[1], seed=args.seed)
            forwarder = Forwarder(core, fds[0], fds[1], args.mtu)
            print(json.dumps({
                "event": "ready", "pid": os.getpid(), "seed": args.seed, "created": created,
                "a": {"namespace": args.a, "device": args.dev, "ipv4": str(a4), "ipv6": str(a6) if a6 else None},
                "b": {"namespace": args.b, "device": args.dev, "ipv4": str(b4), "ipv6": str(b6) if b6 else None},
                "subnet": str(net4), "subnet6": str(net6) if net6 else None, "mtu": args.mtu,
                "a_to_b": specs[0].describe(), "b_to_a": specs[1].describe()}), flush=True)
            forwarder.run(read_wakeup)
    finally:
        if forwarder is not None:
            forwarder.report("exit")
        for fd in fds:
            os.close(fd)                 # a TUN device that is not persistent goes with its fd
        for name in created:
            subprocess.run(("ip", "netns", "delete", name), stderr=subprocess.DEVNULL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state)
    return 0


def command_down(args):
    state = state_path(args.state_dir, args.a, args.b)
    try:
        with open(state) as f:
            info = json.load(f)
    except FileNotFoundError:
        print(f"impair: no running pair {args.a}/{args.b} (no {state})", file=sys.stderr)
        return 0
    pid = info.get("pid")
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass
    for name in info.get("created", []):
        if namespace_exists(name):
            subprocess.run(("ip", "netns", "delete", name), stderr=subprocess.DEVNULL)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(state)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="impair.py", description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="SPEC keys:\n\n" + __doc__.split("overrides key by key:\n\n")[1].split("\n\nEvery random")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="join two namespaces and forward until SIGTERM/SIGINT")
    down = commands.add_parser("down", help="stop a running `up` for the pair and remove what it left")
    for command in (up, down):
        command.add_argument("--a", required=True, metavar="NS_A", help="namespace A (gets the first address)")
        command.add_argument("--b", required=True, metavar="NS_B", help="namespace B (gets the second address)")
        command.add_argument("--state-dir", default="/run/impair", help="where `up` records its pid (%(default)s)")
    up.add_argument("--subnet", default="10.77.0.0/30", help="IPv4 subnet: A gets .1, B .2 (%(default)s)")
    up.add_argument("--subnet6", default="fd77::/64", help="IPv6 subnet, or none (%(default)s)")
    up.add_argument("--both", default="", metavar="SPEC", help="settings for both directions")
    up.add_argument("--a-to-b", default="", metavar="SPEC", help="settings A→B (override --both)")
    up.add_argument("--b-to-a", default="", metavar="SPEC", help="settings B→A (override --both)")
    up.add_argument("--seed", type=int, default=0, help="seed of every random decision (%(default)s)")
    up.add_argument("--dev", default="imp0", help="TUN device name in each namespace (%(default)s)")
    up.add_argument("--mtu", type=int, default=1500)
    up.add_argument("--txqueuelen", type=int, default=1000, help="packets a TUN device queues for us (%(default)s)")
    up.add_argument("--a-route", action="append", default=[], metavar="CIDR", help="route CIDR in A through the link")
    up.add_argument("--b-route", action="append", default=[], metavar="CIDR", help="route CIDR in B through the link")
    up.add_argument("--nice", type=int, default=0, help="add to the process's niceness (negative: higher priority)")
    up.add_argument("--realtime", type=int, default=0, metavar="PRIORITY",
                    help="run with SCHED_FIFO at PRIORITY (1-99): precise delays on a busy machine")
    down.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for `up` to exit")
    args = parser.parse_args(argv)
    if args.command == "up":
        return command_up(args)
    return command_down(args)


if __name__ == "__main__":
    sys.exit(main())
