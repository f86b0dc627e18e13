"""Failure classes for one order item.

Every failure is classified once, where it is raised (docs/architecture.md, "Error classes"): the
daemon only looks at ``retryable`` to decide between "back to pending with backoff" and "failed
for good". ``parent_message`` is what the app shows a parent, so it never carries exception text,
paths, URLs or secrets; ``detail`` is for operators' logs. A retryable error has two texts: its
``parent_message`` while the item waits for the next attempt, and ``final_message`` once its
attempts are used up and the item has failed for good (a row saying "we will keep trying" on a
book nobody will try again would be untrue).
"""

from __future__ import annotations


class OrderError(Exception):
    """A failure of one order item, with a stable machine code for ``order_items.error_code``."""

    retryable: bool = False
    code: str = "internal_error"
    parent_message: str = "We could not create your book. Our team has been notified."
    #: A server-requested delay in seconds (HTTP Retry-After, Gemini RetryInfo); only a
    #: retryable error sets one, and the backoff honours it when it is longer than its own.
    retry_after: float | None = None
    #: The operator's setup failed, not the order: the daemon hands the item back without using
    #: an attempt and pauses claiming until the setup checks out (see processors/ai/base.py).
    pauses_claiming: bool = False

    def __init__(
        self,
        detail: str = "",
        *,
        code: str | None = None,
        parent_message: str | None = None,
    ) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        if code is not None:
            self.code = code
        if parent_message is not None:
            self.parent_message = parent_message

    @property
    def final_message(self) -> str:
        """What the parent reads once the item has failed for good."""
        return self.parent_message


class RetryableError(OrderError):
    """Transient: the item goes back to ``pending`` and is retried after a backoff, or after
    ``retry_after`` seconds when the server asked for longer."""

    retryable = True
    code = "temporarily_unavailable"
    parent_message = "Your book is taking a little longer than usual. We will keep trying."
    #: Shown when the last attempt failed too: nobody will try again without the operator.
    final_parent_message = (
        "We tried several times but could not create your book. Our team has been notified."
    )

    def __init__(
        self,
        detail: str = "",
        *,
        code: str | None = None,
        parent_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, code=code, parent_message=parent_message)
        self.retry_after = retry_after

    @property
    def final_message(self) -> str:
        return self.final_parent_message


class TerminalError(OrderError):
    """Permanent: retrying cannot help, so the item fails at once with ``code``."""

    retryable = False
