"""Who would accept a client's connection to a VIP, asked of every node by its MAC in rounds.

The address sampler (sampler.py) says who holds a VIP; this says what a SYN meets at each
node, which is what a client whose ARP cache names that node gets: "accept" (SYN+ACK),
"reset" (the stale-ARP guard, or nothing listening), "unreachable" (ICMP) or "silent" (a lost
SYN: the client waits out its connect timeout). A reset-only node is fine; two nodes that
accept in the same round are not (the SYNs of a round leave together). Who accepted is the
host whose MAC the SYN+ACK came from: a node with forwarding on (an RO director) that does not
hold the VIP, and has no guard, passes the SYN on to the holder, which is one host accepting
through two doors. Runs in a thread that entered the client namespace.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pgvip.lab.layout import LabLayout
from pgvip.lab.netns import enter_netns, run
from pgvip.lab.syn_probe import Answer, probe_all


def node_macs(layout: LabLayout, nodes: Sequence[str] | None = None) -> dict[str, str]:
    """{node: MAC of its eth0} for the lab's nodes."""
    macs = {}
    for node in nodes if nodes is not None else layout.node_names():
        out = run(["ip", "-n", layout.namespace(node), "-j", "link", "show", "eth0"]).stdout
        macs[node] = str(json.loads(out)[0]["address"])
    return macs


def for_lab(
    layout: LabLayout, vip: str, port: int, *, interval: float = 0.02, timeout: float = 0.3
) -> AcceptSampler:
    """An AcceptSampler from the lab's client namespace to every node."""
    return AcceptSampler(
        layout.client_ns, node_macs(layout), vip, port, interval=interval, timeout=timeout
    )


@dataclass(frozen=True)
class Round:
    t: float  # monotonic time the round's SYNs left
    outcomes: Mapping[str, str]  # node asked -> outcome
    # node asked -> the node (or, if no lab node, the MAC) whose answer came back; a node
    # missing here answered itself
    answered_by: Mapping[str, str] = field(default_factory=dict)

    @property
    def accepting(self) -> tuple[str, ...]:
        """The hosts that accepted (SYN+ACK from their MAC), whichever node was asked."""
        return tuple(sorted({
            self.answered_by.get(n, n) for n, o in self.outcomes.items() if o == "accept"
        }))  # fmt: skip


class AcceptSampler:
    """Rounds of SYNs from `client_ns` (out of `ifname`) to vip:port at each node's MAC."""

    def __init__(
        self,
        client_ns: str,
        macs: Mapping[str, str],
        vip: str,
        port: int,
        *,
        ifname: str = "eth0",
        interval: float = 0.02,
        timeout: float = 0.3,
    ) -> None:
        self.client_ns, self.macs, self.vip, self.port = client_ns, dict(macs), vip, port
        self.ifname, self.interval, self.timeout = ifname, interval, timeout
        self.rounds: list[Round] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="accept-sampler", daemon=True)

    def _run(self) -> None:
        try:
            enter_netns(self.client_ns)  # this thread only; it never probes from the root
            while not self._stop.is_set():
                t = time.monotonic()
                answers = probe_all(self.ifname, self.macs, self.vip, self.port,
                                    timeout=self.timeout)  # fmt: skip
                self.rounds.append(self._round(t, answers))
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))
        except BaseException as exc:  # reported by stop(); the sampler must not die quietly
            self.error = exc

    def _round(self, t: float, answers: Mapping[str, Answer]) -> Round:
        node_of = {mac.lower(): node for node, mac in self.macs.items()}
        by = {
            node: node_of.get(a.mac, a.mac)
            for node, a in answers.items()
            if a.mac is not None and node_of.get(a.mac) != node
        }
        return Round(t, {node: a.outcome for node, a in answers.items()}, by)

    def start(self) -> AcceptSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.error is not None:
            raise RuntimeError(f"accept sampler failed: {self.error}") from self.error

    def __enter__(self) -> AcceptSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def doubles(self) -> list[Round]:
        """Rounds in which two or more nodes accepted."""
        return [r for r in self.rounds if len(r.accepting) > 1]

    def outcomes(self, node: str, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(r.outcomes[node] for r in self.rounds if since <= r.t < until)
