"""The four states of a pgvip VRRP instance, in a module of their own so that both
the actions (which name states) and the state machine can import them without a cycle."""

from __future__ import annotations

import enum


class State(enum.Enum):
    """RFC 5798's Initialize / Backup / Master, plus keepalived's FAULT (not eligible).

    Values are lower-case for the status API; `.name` gives keepalived's upper-case spelling.
    """

    INIT = "init"
    BACKUP = "backup"
    MASTER = "master"
    FAULT = "fault"
