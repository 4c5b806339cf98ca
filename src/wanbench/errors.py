"""Errors a user can cause. The CLI prints each as one line and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment that the user can fix; the message names the fix."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" if it has none), so that a refusal built on it stays one line."""
    return (str(exc).strip().splitlines() or [""])[0]
