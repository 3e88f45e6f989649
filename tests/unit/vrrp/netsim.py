"""A fake L2 segment on a fake clock for VrrpInstance simulations (no sockets, no real time).

Adverts go through the real codec (encode at the sender, decode at each receiver) and arrive
after a configurable delay; the network records who holds the VIP at every simulated instant.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from pgvip.vrrp.actions import Action, AddVip, Announce, RemoveVip, SendAdvert, Transition
from pgvip.vrrp.events import AdvertReceived, EligibilityChanged, Event, Shutdown, Tick
from pgvip.vrrp.instance import State, VrrpInstance
from pgvip.vrrp.instance_config import InstanceConfig
from pgvip.vrrp.packet import VRRP_MCAST_V4, IPAddress, decode, encode

VIP = IPv4Interface("10.20.30.50/24")
VRID = 50


def node_address(index: int) -> IPv4Address:
    """Node 1 is 10.20.30.51, as in the seed's Vagrant lab."""
    return IPv4Address(f"10.20.30.{50 + index}")


def make_config(
    index: int,
    priority: int,
    *,
    advert_int: int = 100,
    preempt: bool = True,
    preempt_delay: float = 0.0,
) -> InstanceConfig:
    return InstanceConfig(
        name=f"p{index}",
        vrid=VRID,
        priority=priority,
        advert_int=advert_int,
        vips=(VIP,),
        primary_address=node_address(index),
        preempt=preempt,
        preempt_delay=preempt_delay,
    )


@dataclass
class Node:
    config: InstanceConfig
    instance: VrrpInstance
    holding: bool = False
    alive: bool = True
    transitions: list[tuple[float, Transition]] = field(default_factory=list)
    actions: list[tuple[float, Action]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name


class FakeNetwork:
    """Delivers SendAdvert actions to the other live nodes; checks every action as it happens."""

    def __init__(
        self,
        *,
        delay: float | Callable[[], float] = 0.001,
        start: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.now = start
        self.connected = True
        self.nodes: dict[str, Node] = {}
        self.violations: list[str] = []
        # (start, end) of every simulated interval during which two nodes held the VIP.
        self.overlaps: list[tuple[float, float]] = []
        self._overlap_since: float | None = None
        self._delay = delay
        self._rng = rng or random.Random(0)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.adverts_on_wire = 0

    # -- building the scenario ---------------------------------------------------------

    def add(self, config: InstanceConfig) -> Node:
        """Start (or restart) a node's instance at the current time."""
        old = self.nodes.get(config.name)
        if old is not None and old.holding:
            self.violations.append(f"{config.name} restarted while holding the VIP")
        node = Node(config, VrrpInstance(config, self.now))
        self.nodes[config.name] = node
        return node

    def at(self, when: float, what: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), what))

    def feed(self, name: str, event: Event) -> list[Action]:
        """Deliver an event to a node now and apply what it returns."""
        node = self.nodes[name]
        if not node.alive:
            return []
        actions = node.instance.handle(event, self.now)
        self._apply(node, actions)
        return actions

    def set_eligible(self, name: str, eligible: bool = True, reason: str = "") -> list[Action]:
        reason = reason or ("/primary 200" if eligible else "/primary 503")
        return self.feed(name, EligibilityChanged(eligible, reason))

    def shutdown(self, name: str, reason: str = "SIGTERM") -> list[Action]:
        actions = self.feed(name, Shutdown(reason))
        self.nodes[name].alive = False
        return actions

    # -- running ----------------------------------------------------------------------------

    def run_until(self, end: float) -> None:
        """Process deliveries, scripted steps and timers in time order up to `end`."""
        while True:
            when, kind, payload = self._next_step()
            if when is None or when > end:
                break
            self.now = max(self.now, when)
            if kind == "queue":
                _, _, what = heapq.heappop(self._queue)
                what()
            else:
                assert isinstance(payload, Node)
                actions = payload.instance.handle(Tick(), self.now)
                self._apply(payload, actions)
        self.now = max(self.now, end)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def holders(self) -> list[str]:
        return sorted(name for name, node in self.nodes.items() if node.holding)

    # -- internals ----------------------------------------------------------------------------

    def _next_step(self) -> tuple[float | None, str, Node | None]:
        best: tuple[float | None, str, Node | None] = (None, "", None)
        if self._queue:
            best = (self._queue[0][0], "queue", None)
        for node in self.nodes.values():
            if not node.alive:
                continue
            deadline = node.instance.next_deadline()
            if deadline is None:
                continue
            if deadline < self.now - 1e-9:
                self.violations.append(f"{node.name} deadline {deadline} is in the past")
            if best[0] is None or deadline < best[0]:
                best = (deadline, "tick", node)
        return best

    def _delay_now(self) -> float:
        return self._delay() if callable(self._delay) else self._delay

    def _apply(self, node: Node, actions: list[Action]) -> None:
        for action in actions:
            node.actions.append((self.now, action))
            if isinstance(action, AddVip):
                if node.holding:
                    self.violations.append(f"{self.now:.3f} {node.name}: AddVip while holding")
                node.holding = True
            elif isinstance(action, RemoveVip):
                if not node.holding:
                    self.violations.append(f"{self.now:.3f} {node.name}: RemoveVip while not")
                node.holding = False
            elif isinstance(action, SendAdvert):
                self._send(node, action)
            elif isinstance(action, Transition):
                previous = node.transitions[-1][1].to_state if node.transitions else State.INIT
                if action.from_state is not previous:
                    self.violations.append(
                        f"{self.now:.3f} {node.name}: {action} but the state was {previous.name}"
                    )
                if (action.to_state is State.MASTER) != node.holding:
                    self.violations.append(
                        f"{self.now:.3f} {node.name}: {action} with holding={node.holding}"
                    )
                node.transitions.append((self.now, action))
            else:
                assert isinstance(action, Announce)
        self._track_overlap()

    def _track_overlap(self) -> None:
        holding = sum(node.holding for node in self.nodes.values())
        if holding > 1 and self._overlap_since is None:
            self._overlap_since = self.now
        elif holding <= 1 and self._overlap_since is not None:
            self.overlaps.append((self._overlap_since, self.now))
            self._overlap_since = None

    def _send(self, sender: Node, action: SendAdvert) -> None:
        src = sender.config.primary_address
        wire = encode(action.advert, src, VRRP_MCAST_V4)
        self.adverts_on_wire += 1
        if not self.connected:
            return
        for receiver in self.nodes.values():
            if receiver is sender:
                continue
            self.at(self.now + self._delay_now(), self._deliver(receiver, wire, src))

    def _deliver(self, receiver: Node, wire: bytes, src: IPAddress) -> Callable[[], None]:
        def deliver() -> None:
            if not receiver.alive:
                return
            advert = decode(wire, src, VRRP_MCAST_V4, ttl=255)
            self._apply(receiver, receiver.instance.handle(AdvertReceived(advert, src), self.now))

        return deliver
