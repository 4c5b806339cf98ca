"""Errors a user can cause. The CLI prints each as one line and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment that the user can fix; the message names the fix."""

    exit_code = 2


class WorkerError(UserError):
    """A worker process failed, hung or died; the message says which and why."""
