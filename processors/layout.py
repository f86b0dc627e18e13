"""The object layout: names of what the pipeline writes, and how a key may be shown in a log.

Results live under ``generated/{item}/`` (one folder per order item, named by its canonical uuid),
catalog images under ``catalog/``, parents' uploads under ``uploads/{user}/``. The retention sweep,
the URL re-sign sweep and the SQL (migrations/011, 012) rely on the same names.
"""

from __future__ import annotations

import re
from uuid import UUID

from processors.errors import TerminalError

#: The folder of parents' uploads: ``uploads/{user id}/...`` (see processors/ownership.py).
UPLOADS = "uploads"
#: Supabase Storage's ``isValidKey`` character set; Python's ``\w`` also admits non-ASCII letters,
#: which newer Storage versions accept. It excludes ``%`` (storage3 percent-decodes keys, so a ``%``
#: would name a different object), ``\``, ``#``, quotes and all control characters.
KEY_CHARS = re.compile(r"[\w/!\-.*'() &$@=;:+,?]+")


class InvalidPath(TerminalError):
    """A storage path or URL the daemon refuses to use: it would leave the bucket or the project."""

    code = "invalid_path"
    parent_message = "A picture for your book could not be used. Our team has been notified."


def redacted(key: str) -> str:
    """``key`` as a log line or error detail may show it: no user id, nothing the app typed.

    Results and catalog objects are named by item and book ids, which logs carry anyway; an
    upload's folder is a user's id, so only its kind is shown; anything else only by its length.
    """
    first, _, rest = key.partition("/")
    if first in ("generated", "catalog") and KEY_CHARS.fullmatch(key) and len(key) <= 200:
        return repr(key)
    if first == UPLOADS:
        return "'uploads/<user>/...'"
    return f"<a {len(key)}-character path>"


def canonical_uuid(value: str | UUID, *, what: str) -> str:
    """``value`` as a lower-case hyphenated UUID, so one item always maps to one set of paths.

    Used for ids that become directory names: a UUID cannot carry a path separator or a dot segment.
    """
    try:
        return str(value if isinstance(value, UUID) else UUID(value))
    except (TypeError, ValueError):
        raise InvalidPath(f"{what} is not a UUID: {redacted(str(value))}") from None


def generated_cover_path(item_id: str | UUID) -> str:
    """``generated/{item}/cover.jpg``: the personalized cover."""
    return f"{_generated_dir(item_id)}/cover.jpg"


def generated_page_path(item_id: str | UUID, page_number: int) -> str:
    """``generated/{item}/pages/{NN}.jpg``: one personalized page (``page_number`` >= 1)."""
    if isinstance(page_number, bool) or not isinstance(page_number, int) or page_number < 1:
        raise InvalidPath(f"page number must be a positive integer, got {page_number!r}")
    return f"{_generated_dir(item_id)}/pages/{page_number:02d}.jpg"


def generated_pdf_path(item_id: str | UUID) -> str:
    """``generated/{item}/book.pdf``: the finished book."""
    return f"{_generated_dir(item_id)}/book.pdf"


def generated_print_paths(item_id: str | UUID) -> tuple[str, str]:
    """``generated/{item}/print-interior.pdf`` and ``print-cover.pdf``: the print files."""
    return (
        f"{_generated_dir(item_id)}/print-interior.pdf",
        f"{_generated_dir(item_id)}/print-cover.pdf",
    )


def result_path(item_id: str | UUID, number: int) -> str:
    """Where this item's cover (0) or page ``number`` is stored once drawn."""
    return generated_cover_path(item_id) if number == 0 else generated_page_path(item_id, number)


def _generated_dir(item_id: str | UUID) -> str:
    return f"generated/{canonical_uuid(item_id, what='order item id')}"
