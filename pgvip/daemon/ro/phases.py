"""The RO director's phases and the one table of their legal moves, keyed by (phase, input).

Pure: no asyncio, no clock, no balancer. The Director feeds an `Input` for what a cycle saw or
did and gets the next phase; it logs each change with from/to/why.
"""

from __future__ import annotations

import enum

__all__ = ["HOLDS_SERVICE", "TRANSITIONS", "DirectorInput", "Phase", "next_phase"]


class Phase(enum.Enum):
    """Where the director is; values are lower-case for logs."""

    UNCLEARED = "uncleared"  # not directing; the balancer may hold a service (start-up or
    # a failed clear): the next standby cycle clears it
    STANDBY = "standby"  # not directing; the balancer is empty ("dr": the VIP is on lo)
    WARMING = "warming"  # directing: probing `rise` rounds before the first apply
    DIRECTING = "directing"  # directing: the policy's set is applied
    STOPPED = "stopped"  # shut down: no more cycles

    @property
    def directing(self) -> bool:
        """This node is the RO director (the status API's `directing`)."""
        return self in (Phase.WARMING, Phase.DIRECTING)


class DirectorInput(enum.Enum):
    MASTER = "master"  # a cycle while the RO instance is MASTER
    NOT_MASTER = "not_master"  # a cycle while it is not
    WARMED = "warmed"  # the last warm-up round is done (or rise 1 needs none)
    CLEARED = "cleared"  # balancer.clear() succeeded
    CLEAR_FAILED = "clear_failed"  # balancer.clear() raised
    STOP = "stop"  # shutdown


# Phases in which the balancer may hold a service, so leaving them needs a clear.
HOLDS_SERVICE = frozenset({Phase.UNCLEARED, Phase.WARMING, Phase.DIRECTING})

_P = Phase
_I = DirectorInput
TRANSITIONS: dict[tuple[Phase, DirectorInput], Phase] = {
    # UNCLEARED: whatever is in the balancer must go before we stand by.
    (_P.UNCLEARED, _I.MASTER): _P.WARMING,  # a new term; its applies replace the leftovers
    (_P.UNCLEARED, _I.NOT_MASTER): _P.UNCLEARED,  # the cycle clears, then CLEARED/CLEAR_FAILED
    (_P.UNCLEARED, _I.WARMED): _P.UNCLEARED,  # a stale round of an ended term: ignored
    (_P.UNCLEARED, _I.CLEARED): _P.STANDBY,
    (_P.UNCLEARED, _I.CLEAR_FAILED): _P.UNCLEARED,  # retried on the next standby cycle
    (_P.UNCLEARED, _I.STOP): _P.STOPPED,
    # STANDBY: idle; "dr" keeps the VIP on lo.
    (_P.STANDBY, _I.MASTER): _P.WARMING,
    (_P.STANDBY, _I.NOT_MASTER): _P.STANDBY,
    (_P.STANDBY, _I.WARMED): _P.STANDBY,
    (_P.STANDBY, _I.CLEARED): _P.STANDBY,
    (_P.STANDBY, _I.CLEAR_FAILED): _P.UNCLEARED,
    (_P.STANDBY, _I.STOP): _P.STOPPED,
    # WARMING: observe only, nothing applied yet.
    (_P.WARMING, _I.MASTER): _P.WARMING,
    (_P.WARMING, _I.NOT_MASTER): _P.UNCLEARED,  # the term ends; clear before standing by
    (_P.WARMING, _I.WARMED): _P.DIRECTING,
    (_P.WARMING, _I.CLEARED): _P.WARMING,
    (_P.WARMING, _I.CLEAR_FAILED): _P.WARMING,
    (_P.WARMING, _I.STOP): _P.STOPPED,
    # DIRECTING: apply on change, after a failed apply, and every reconcile interval.
    (_P.DIRECTING, _I.MASTER): _P.DIRECTING,
    (_P.DIRECTING, _I.NOT_MASTER): _P.UNCLEARED,
    (_P.DIRECTING, _I.WARMED): _P.DIRECTING,
    (_P.DIRECTING, _I.CLEARED): _P.DIRECTING,
    (_P.DIRECTING, _I.CLEAR_FAILED): _P.DIRECTING,
    (_P.DIRECTING, _I.STOP): _P.STOPPED,
    # STOPPED: terminal.
    (_P.STOPPED, _I.MASTER): _P.STOPPED,
    (_P.STOPPED, _I.NOT_MASTER): _P.STOPPED,
    (_P.STOPPED, _I.WARMED): _P.STOPPED,
    (_P.STOPPED, _I.CLEARED): _P.STOPPED,
    (_P.STOPPED, _I.CLEAR_FAILED): _P.STOPPED,
    (_P.STOPPED, _I.STOP): _P.STOPPED,
}


def next_phase(phase: Phase, event: DirectorInput) -> Phase:
    return TRANSITIONS[(phase, event)]
