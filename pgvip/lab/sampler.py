"""Watch which lab nodes hold each VIP, from outside pgvip, through netlink in every node namespace.

One worker thread owns one pyroute2 handle per node namespace (pyroute2's sync handles are
per-thread) and samples every `interval`; it records a timeline of holder changes and every
moment two nodes held the same VIP at once.
"""

from __future__ import annotations

import ipaddress
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pgvip.lab.layout import LabLayout

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_INTERFACES = ("eth0", "lo")


class SamplerError(RuntimeError):
    """The sampler cannot read a node's addresses (missing namespace, netlink failure, closed)."""


@dataclass(frozen=True)
class Change:
    """From monotonic time `t` on, `holders` (node names, sorted) have `ip`."""

    t: float
    ip: IPAddress
    holders: tuple[str, ...]


@dataclass(frozen=True)
class DoubleHolder:
    """`nodes` all held `ip` at once, from `start` until `end` (None: still ongoing)."""

    ip: IPAddress
    start: float
    end: float | None
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    t: float
    duration: float
    holders: dict[IPAddress, tuple[str, ...]]


class _Stop:
    pass


class VipSampler:
    """Samples VIP holders across the lab's node namespaces.

    `holders(ip)` always reflects a read that began after the call; `start(interval)` adds
    periodic sampling with a timeline. Use as a context manager, or call `close()`.

    A VIP that moves between two reads of one sweep could look held twice. So a sweep that sees
    several holders re-reads them in reverse order; only nodes that still hold it then are
    counted (both reads seeing it means the holding intervals overlapped, unless the VIP flapped
    back within a millisecond). Unconfirmed sightings are counted in `stats()["unconfirmed"]`.
    """

    def __init__(
        self,
        layout: LabLayout,
        *,
        vips: Iterable[IPAddress | str] | None = None,
        nodes: Sequence[str] | None = None,
        interfaces: Sequence[str] = DEFAULT_INTERFACES,
    ) -> None:
        self.layout = layout
        self.nodes: tuple[str, ...] = tuple(nodes if nodes is not None else layout.node_names())
        unknown = [n for n in self.nodes if n not in layout.node_names()]
        if unknown:
            raise SamplerError(f"unknown node(s) {', '.join(unknown)} for lab {layout.prefix!r}")
        self.vips: tuple[IPAddress, ...] = tuple(
            ipaddress.ip_address(v) for v in (vips or (layout.rw_vip, layout.ro_vip))
        )
        self.interfaces = tuple(interfaces)

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: queue.Queue[float | _Stop] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._open_error: BaseException | None = None
        self._opened = threading.Event()
        self._closed = False

        # Guarded by _lock.
        self._interval: float | None = None
        self._latest: Sample | None = None
        self._samples = 0
        self._total_duration = 0.0
        self._max_duration = 0.0
        self._errors = 0
        self._last_error = ""
        self._unconfirmed = 0
        self._timeline: list[Change] = []
        self._current: dict[IPAddress, tuple[str, ...]] = {}
        self._max_holders: dict[IPAddress, int] = dict.fromkeys(self.vips, 0)
        self._doubles: list[DoubleHolder] = []
        self._open_double: dict[IPAddress, int] = {}  # ip -> index into _doubles
        self._double_at: dict[IPAddress, list[float]] = {v: [] for v in self.vips}

    # -- public API --------------------------------------------------------

    def holders(self, ip: IPAddress | str, *, timeout: float = 5.0) -> list[str]:
        """Nodes that have `ip` on one of the watched interfaces, read after this call began."""
        address = ipaddress.ip_address(ip)
        if address not in self.vips:
            raise SamplerError(
                f"{address} is not sampled; this sampler watches {', '.join(map(str, self.vips))}"
            )
        return list(self.sample(timeout=timeout).holders[address])

    def sample(self, *, timeout: float = 5.0) -> Sample:
        """A complete sweep that began after this call."""
        self._ensure_thread()
        asked = time.monotonic()
        self._requests.put(asked)
        deadline = asked + timeout
        with self._cond:
            while self._latest is None or self._latest.t < asked:
                if self._open_error is not None:
                    raise SamplerError(str(self._open_error)) from self._open_error
                if self._closed:
                    raise SamplerError("sampler is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SamplerError(
                        f"no VIP sample within {timeout:.1f} s (last error: {self._last_error})"
                    )
                self._cond.wait(remaining)
            return self._latest

    def start(self, interval: float = 0.02) -> None:
        """Sample every `interval` seconds in the background until `stop()`."""
        if interval <= 0:
            raise SamplerError(f"interval must be > 0, got {interval}")
        self._ensure_thread()
        with self._lock:
            self._interval = interval
        self._requests.put(time.monotonic())
        # Fail here, not silently in the thread, when a namespace is missing.
        self.sample()

    def stop(self) -> None:
        """Stop periodic sampling; the timeline and statistics are kept."""
        with self._lock:
            self._interval = None
            now = time.monotonic()
            # A double holding still open when sampling ends is closed at the last moment known.
            for index in self._open_double.values():
                ev = self._doubles[index]
                self._doubles[index] = DoubleHolder(ev.ip, ev.start, now, ev.nodes)
            self._open_double.clear()

    def close(self) -> None:
        """Stop the worker and close every netlink handle. Idempotent."""
        self.stop()
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._requests.put(_Stop())
            thread.join(timeout=10)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __enter__(self) -> VipSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._interval is not None

    def max_holders(self, ip: IPAddress | str) -> int:
        """The most nodes seen holding `ip` at once (confirmed) since sampling began."""
        with self._lock:
            return self._max_holders[ipaddress.ip_address(ip)]

    def double_samples(self, ip: IPAddress | str, since: float, until: float) -> int:
        """How many sweeps that began in [since, until) saw `ip` on two nodes (confirmed)."""
        with self._lock:
            times = self._double_at[ipaddress.ip_address(ip)]
            return sum(1 for t in times if since <= t < until)

    def double_holder_events(self) -> list[DoubleHolder]:
        with self._lock:
            return list(self._doubles)

    def timeline(self, ip: IPAddress | str | None = None) -> list[Change]:
        """Holder changes in time order (the first sample of each VIP counts as a change)."""
        with self._lock:
            if ip is None:
                return list(self._timeline)
            address = ipaddress.ip_address(ip)
            return [c for c in self._timeline if c.ip == address]

    def holders_at(self, ip: IPAddress | str, t: float) -> tuple[str, ...] | None:
        """Holders of `ip` at monotonic time `t` per the timeline (None before the first sample)."""
        found: tuple[str, ...] | None = None
        for change in self.timeline(ip):
            if change.t > t:
                break
            found = change.holders
        return found

    def latest(self) -> Sample | None:
        with self._lock:
            return self._latest

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "samples": self._samples,
                "mean_duration": self._total_duration / self._samples if self._samples else 0.0,
                "max_duration": self._max_duration,
                "errors": self._errors,
                "last_error": self._last_error,
                "unconfirmed": self._unconfirmed,
            }

    # -- worker ----------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._closed:
            raise SamplerError("sampler is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"vip-sampler-{self.layout.prefix}", daemon=True
            )
            self._thread.start()
        self._opened.wait(timeout=10)
        if self._open_error is not None:
            raise SamplerError(str(self._open_error)) from self._open_error

    def _open(self) -> dict[str, Any]:
        from pyroute2 import IPRoute  # the lab only; keeps `import sampler` cheap

        handles: dict[str, Any] = {}
        try:
            for node in self.nodes:
                ns = self.layout.namespace(node)
                try:
                    # flags=0: never create the namespace; groups=0: no event subscription,
                    # so nothing piles up in a socket we only ever dump.
                    handles[node] = IPRoute(netns=ns, flags=0, groups=0)
                except FileNotFoundError:
                    raise SamplerError(
                        f"network namespace {ns} does not exist (is lab {self.layout.prefix!r} up?)"
                    ) from None
        except BaseException:
            for h in handles.values():
                h.close()
            raise
        return handles

    def _run(self) -> None:
        try:
            handles = self._open()
        except BaseException as exc:  # reported to every caller, never lost in the thread
            self._open_error = exc
            self._opened.set()
            with self._cond:
                self._cond.notify_all()
            return
        self._opened.set()
        indexes: dict[str, dict[int, str]] = {node: {} for node in self.nodes}
        try:
            next_due = time.monotonic()
            while True:
                with self._lock:
                    interval = self._interval
                timeout = None if interval is None else max(0.0, next_due - time.monotonic())
                try:
                    request = self._requests.get(timeout=timeout)
                except queue.Empty:
                    request = None
                if isinstance(request, _Stop):
                    return
                # Coalesce queued requests: one sweep answers them all.
                while True:
                    try:
                        if isinstance(self._requests.get_nowait(), _Stop):
                            return
                    except queue.Empty:
                        break
                self._sweep(handles, indexes)
                if interval is not None:
                    next_due = max(next_due + interval, time.monotonic() - interval)
        finally:
            for h in handles.values():
                h.close()

    def _read(self, handle: Any, node: str, indexes: dict[str, dict[int, str]]) -> set[IPAddress]:
        names = indexes[node]
        found: set[IPAddress] = set()
        msgs = handle.addr("dump")
        for msg in msgs:
            index = msg["index"]
            if index not in names:
                names.clear()
                for link in handle.link("dump"):
                    names[link["index"]] = link.get("ifname") or link.get("IFLA_IFNAME")
            if names.get(index) not in self.interfaces:
                continue
            address = msg.get("address") or msg.get("IFA_ADDRESS")
            if address:
                found.add(ipaddress.ip_address(address))
        return found

    def _sweep(self, handles: dict[str, Any], indexes: dict[str, dict[int, str]]) -> None:
        t = time.monotonic()
        seen: dict[str, set[IPAddress]] = {}
        errors: list[str] = []
        for node, handle in handles.items():
            try:
                seen[node] = self._read(handle, node, indexes)
            except Exception as exc:  # a vanished namespace must not kill the sampler
                seen[node] = set()
                errors.append(f"{node}: {exc}")
        holders: dict[IPAddress, tuple[str, ...]] = {}
        unconfirmed = 0
        for vip in self.vips:
            nodes = tuple(sorted(n for n in self.nodes if vip in seen[n]))
            if len(nodes) > 1:
                confirmed = []
                for node in reversed(nodes):
                    try:
                        if vip in self._read(handles[node], node, indexes):
                            confirmed.append(node)
                    except Exception as exc:
                        errors.append(f"{node}: {exc}")
                if len(confirmed) < len(nodes):
                    unconfirmed += 1
                # Fewer than two confirmed: not two at once; report whoever holds it now.
                nodes = tuple(sorted(confirmed))
            holders[vip] = nodes
        duration = time.monotonic() - t
        with self._cond:
            self._record(Sample(t, duration, holders), errors, unconfirmed)
            self._cond.notify_all()

    def _record(self, sample: Sample, errors: list[str], unconfirmed: int) -> None:
        self._latest = sample
        self._samples += 1
        self._total_duration += sample.duration
        self._max_duration = max(self._max_duration, sample.duration)
        self._unconfirmed += unconfirmed
        if errors:
            self._errors += len(errors)
            self._last_error = "; ".join(errors)
        for vip, nodes in sample.holders.items():
            if self._current.get(vip) != nodes:
                self._current[vip] = nodes
                self._timeline.append(Change(sample.t, vip, nodes))
            self._max_holders[vip] = max(self._max_holders[vip], len(nodes))
            open_index = self._open_double.get(vip)
            if len(nodes) > 1:
                self._double_at[vip].append(sample.t)
                if open_index is None:
                    self._open_double[vip] = len(self._doubles)
                    self._doubles.append(DoubleHolder(vip, sample.t, None, nodes))
                else:
                    ev = self._doubles[open_index]
                    merged = tuple(sorted(set(ev.nodes) | set(nodes)))
                    self._doubles[open_index] = DoubleHolder(vip, ev.start, None, merged)
            elif open_index is not None:
                ev = self._doubles[open_index]
                self._doubles[open_index] = DoubleHolder(vip, ev.start, sample.t, ev.nodes)
                del self._open_double[vip]
