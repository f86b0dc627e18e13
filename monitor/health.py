"""The named problems that make ``/health`` answer 503, reported by whoever sees them.

One registry per process, owned by the composition root and handed to every part that can tell
the daemon is unable to do its work: the monitor reports the database ("database",
unreachable or not migrated), start-up reports an AI provider it cannot reach ("ai_provider"),
and any other component (a model check, a storage probe) reports its own name the same way::

    health.report("ai_provider", "AI provider unusable: the image model was not found")
    ...
    health.clear("ai_provider")

A problem stays until its reporter clears it, so ``/health`` says what the reporter last saw,
not what a probe guessed. :meth:`report` and :meth:`clear` return whether the state changed, so
callers log once per change rather than once per failed call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Problem:
    message: str
    since: datetime


class HealthProblems:
    def __init__(self) -> None:
        self._problems: dict[str, Problem] = {}

    def report(self, name: str, message: str) -> bool:
        """Record (or update) the problem ``name``; True when it is new or its message changed.
        The time it began is kept across updates."""
        previous = self._problems.get(name)
        if previous is not None and previous.message == message:
            return False
        since = previous.since if previous is not None else datetime.now(UTC)
        self._problems[name] = Problem(message, since)
        return True

    def clear(self, name: str) -> bool:
        """The problem ``name`` is over; True when there was one."""
        return self._problems.pop(name, None) is not None

    def get(self, name: str) -> Problem | None:
        return self._problems.get(name)

    def items(self) -> list[tuple[str, Problem]]:
        """Every current problem by name, in the order they were first reported."""
        return list(self._problems.items())
