"""The error-log throttle: log the first of each outcome, count the repeats."""

from __future__ import annotations

from pgvip.daemon.log_throttle import ErrorLogThrottle


def test_throttle_logs_first_and_each_change_with_suppressed_counts() -> None:
    t = ErrorLogThrottle()
    timeout = ("timeout", "timeout: 127.0.0.1:8008/primary")
    refused = ("refused", "connect refused: 127.0.0.1:8008/primary")
    first = t.observe(*timeout)
    assert first.log and first.suppressed == 0 and first.previous is None
    assert [t.observe(*timeout).log for _ in range(4)] == [False] * 4
    assert t.repeats == 4
    change = t.observe(*refused)
    assert change.log
    assert change.suppressed == 4
    assert change.previous == timeout
    assert t.current == refused
    assert t.repeats == 0


def test_throttle_logs_recovery_and_a_relapse() -> None:
    t = ErrorLogThrottle()
    t.observe("timeout", "timeout: h:1/primary")
    t.observe("timeout", "timeout: h:1/primary")
    recovered = t.observe("ok", "/primary 200")
    assert recovered.log and recovered.suppressed == 1
    assert not t.observe("ok", "/primary 200").log
    relapse = t.observe("timeout", "timeout: h:1/primary")
    assert relapse.log and relapse.suppressed == 1 and relapse.previous == ("ok", "/primary 200")


def test_throttle_same_cause_different_reason_is_a_change() -> None:
    t = ErrorLogThrottle()
    t.observe("tls", "TLS error: h:1/primary (certificate has expired)")
    assert t.observe("tls", "TLS error: h:1/primary (self-signed certificate)").log
