"""Eligibility hysteresis: successive `/primary` observations -> "may this node hold the RW VIP?".

Rules, in order of strength:

* NO (HTTP 503) makes the node ineligible at once ("release now") and resets the rise count.
* YES makes it eligible after `rise` consecutive YES answers.
* UNKNOWN (no usable answer) makes an eligible node ineligible only after `fall` consecutive
  UNKNOWN polls, or once `grace` seconds have passed since the last definite (YES/NO) answer,
  whichever comes first.
* Failsafe exception (`failsafe_keep`, on by default): if the last `/patroni` we saw said
  `failsafe_mode_is_active`, Patroni is deliberately keeping the primary running through a DCS
  outage, so the VIP stays with it while Patroni itself is unreachable. We cannot know that
  failsafe persists while we cannot ask, so this keep is bounded: at most `failsafe_max` seconds
  after the last definite answer, then the VIP is released as usual.

Pure: time comes from `Observation.at`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgvip.patroni.verdict import Observation, Verdict

__all__ = ["EligibilityDecision", "EligibilityError", "EligibilityPolicy"]

FAILSAFE_KEEP_REASON = (
    "Patroni unreachable, but failsafe mode was active at last contact: keeping VIP"
)


class EligibilityError(ValueError):
    """The policy was built with impossible parameters (rise/fall < 1, grace <= 0, ...)."""


@dataclass(frozen=True)
class EligibilityDecision:
    eligible: bool
    changed: bool
    reason: (
        str  # e.g. "/primary 503", "/primary 200 x1 (rise 1)", "Patroni unreachable 3 polls ..."
    )


def _plural(n: int) -> str:
    return "poll" if n == 1 else "polls"


class EligibilityPolicy:
    def __init__(
        self,
        rise: int,
        fall: int,
        grace: float | None = None,
        *,
        failsafe_keep: bool = True,
        failsafe_max: float = 30.0,
    ) -> None:
        if rise < 1:
            raise EligibilityError(f"rise must be >= 1, got {rise}")
        if fall < 1:
            raise EligibilityError(f"fall must be >= 1, got {fall}")
        if grace is not None and not grace > 0:
            raise EligibilityError(f"grace must be > 0 seconds or None, got {grace}")
        if not failsafe_max > 0:
            raise EligibilityError(f"failsafe_max must be > 0 seconds, got {failsafe_max}")
        self.rise = rise
        self.fall = fall
        self.grace = grace
        self.failsafe_keep = failsafe_keep
        self.failsafe_max = failsafe_max
        self._eligible = False
        self._yes_streak = 0
        self._unknown_streak = 0
        self._last_definite_at: float | None = None
        self._reason = "no answer from Patroni yet"

    @property
    def eligible(self) -> bool:
        return self._eligible

    @property
    def reason(self) -> str:
        """The reason of the last decision (for status output)."""
        return self._reason

    def observe(self, obs: Observation) -> EligibilityDecision:
        if obs.verdict is Verdict.YES:
            eligible, reason = self._on_yes(obs)
        elif obs.verdict is Verdict.NO:
            eligible, reason = self._on_no(obs)
        else:
            eligible, reason = self._on_unknown(obs)
        changed = eligible != self._eligible
        self._eligible = eligible
        self._reason = reason
        return EligibilityDecision(eligible=eligible, changed=changed, reason=reason)

    def _on_yes(self, obs: Observation) -> tuple[bool, str]:
        self._unknown_streak = 0
        self._last_definite_at = obs.at
        self._yes_streak += 1
        if self._eligible:
            return True, obs.reason
        streak = f"{obs.reason} x{self._yes_streak} (rise {self.rise})"
        return self._yes_streak >= self.rise, streak

    def _on_no(self, obs: Observation) -> tuple[bool, str]:
        self._yes_streak = 0
        self._unknown_streak = 0
        self._last_definite_at = obs.at
        return False, obs.reason

    def _on_unknown(self, obs: Observation) -> tuple[bool, str]:
        # An unanswered poll breaks a run of YES: rise counts consecutive answers.
        self._yes_streak = 0
        self._unknown_streak += 1
        n = self._unknown_streak
        if not self._eligible:
            return False, f"Patroni unreachable {n} {_plural(n)}: {obs.reason}"

        since = None if self._last_definite_at is None else obs.at - self._last_definite_at
        if n >= self.fall:
            why = f"Patroni unreachable {n} {_plural(n)} (fall {self.fall}): {obs.reason}"
        elif self.grace is not None and since is not None and since >= self.grace:
            why = f"Patroni unreachable for {since:.1f}s (grace {self.grace:g}s): {obs.reason}"
        else:
            return True, (
                f"Patroni unreachable {n} {_plural(n)} (fall {self.fall}): {obs.reason}; "
                "keeping VIP"
            )

        if self.failsafe_keep and obs.failsafe_active:
            if since is not None and since < self.failsafe_max:
                return True, (
                    f"{FAILSAFE_KEEP_REASON} ({since:.1f}s of failsafe_max "
                    f"{self.failsafe_max:g}s): {obs.reason}"
                )
            return False, (
                f"{why}; failsafe mode was active at last contact, but failsafe_max "
                f"{self.failsafe_max:g}s has passed"
            )
        return False, why
