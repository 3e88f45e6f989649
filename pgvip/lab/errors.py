"""The lab's one error type, and how helper modules' errors become it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pgvip.lab import render
from pgvip.lab.layout import LayoutError
from pgvip.lab.netns import NetnsError
from pgvip.lab.preflight import PreflightError
from pgvip.lab.processes import ProcessError
from pgvip.lab.state import StateError

P = ParamSpec("P")
R = TypeVar("R")


class LabError(Exception):
    """Something about the lab went wrong; the message is meant for the user as is."""


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Present the helper modules' errors as LabError, keeping the original as the cause."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (NetnsError, ProcessError, PreflightError, StateError, LayoutError) as exc:
            raise LabError(str(exc)) from exc
        except render.RenderError as exc:
            raise LabError(f"cannot render the lab's configuration: {exc}") from exc
        except OSError as exc:  # files and directories under the lab root
            raise LabError(f"lab file operation failed: {exc}") from exc

    return wrapper


def oserror_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__
