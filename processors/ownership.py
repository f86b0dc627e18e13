"""Whose photo is this? The daemon's half of the photo-ownership rule.

The daemon reads storage with the service role, which bypasses every storage policy, so it must
itself refuse to read a photo that is not the order's user's: otherwise a user who writes another
family's upload path, a ``generated/`` result or a catalog image into their own item gets a book
made from it (a confused deputy).

The rule, the same one ``migrations/011_photo_ownership.sql`` enforces for every writer of
``order_items`` (``photo_path_in_user_uploads``) and the app's insert policy: the object key names
an object under ``uploads/{orders.user_id}/`` of the item's own order. An order without a user owns
no folder. ``tests/integration/test_photo_ownership.py`` runs the SQL and this module on one
table of cases.
"""

from __future__ import annotations

from uuid import UUID

from processors.errors import TerminalError

UPLOADS = "uploads"


class PhotoNotOwned(TerminalError):
    """The item's photo path is not in the upload folder of the order's user."""

    code = "photo_not_owned"
    parent_message = (
        "We could not use the photo for this book. Please upload your child's photo again."
    )


def user_upload_prefix(user_id: str | UUID) -> str:
    """``uploads/{user}/``: the only folder whose objects may be a photo of ``user_id``'s orders."""
    return f"{UPLOADS}/{UUID(str(user_id))}/"


def require_user_upload(key: str, user_id: str | UUID | None) -> str:
    """Return ``key`` if it is an object in the upload folder of ``user_id``, else raise.

    ``key`` is an already validated object key (``paths.object_path``); its second segment must
    be the user's id exactly as Postgres prints a uuid, like the SQL rule compares it. The error
    names neither the path nor the user (both are personal data in a log line).
    """
    if user_id is None:
        raise PhotoNotOwned("the item's order has no user, so no upload folder")
    try:
        prefix = user_upload_prefix(user_id)
    except ValueError:
        raise PhotoNotOwned("the order's user id is not a uuid") from None
    if not key.startswith(prefix) or len(key) == len(prefix):
        raise PhotoNotOwned("child_photo_path is not in the upload folder of the order's user")
    return key
