"""Object paths in the bucket: checking the ones we are given and naming the ones we write.

Input paths come from rows the app and the catalog wrote (``books.cover_image_path``,
``book_pages.image_path``, ``order_items.child_photo_path``), so they are untrusted. They are either
object keys inside the configured bucket or, because apps tend to store whatever URL they got back,
full Storage URLs of this very project. Nothing else is accepted: the daemon never fetches a URL it
was handed, it only derives an object key and reads that key with its own credentials.

Keys are held to the character set Supabase Storage itself accepts for object keys (S3's "safe"
characters plus a few that need care), so a key that passes here is one the Storage API takes as is
and that maps to a plain relative file path in the local adapter.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit
from uuid import UUID

from processors.errors import TerminalError

#: Supabase Storage's ``isValidKey`` character set; Python's ``\w`` also admits non-ASCII letters,
#: which newer Storage versions accept. It excludes ``%`` (storage3 percent-decodes keys, so a ``%``
#: would name a different object), ``\``, ``#``, quotes and all control characters.
_KEY_CHARS = re.compile(r"[\w/!\-.*'() &$@=;:+,?]+")
_MAX_KEY_BYTES = 1024
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_URL_KINDS = frozenset({"public", "sign", "authenticated"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


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
    if first in ("generated", "catalog") and _KEY_CHARS.fullmatch(key) and len(key) <= 200:
        return repr(key)
    if first == "uploads":
        return "'uploads/<user>/...'"
    return f"<a {len(key)}-character path>"


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe object key inside a bucket, else raise InvalidPath.

    Both adapters call this for every path they touch, so a bad key never reaches the Storage API
    or the file system, whichever code produced it.
    """
    if not key:
        raise InvalidPath("empty storage path")
    shown = redacted(key)
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise InvalidPath(f"storage path longer than {_MAX_KEY_BYTES} bytes: {shown}")
    if not _KEY_CHARS.fullmatch(key):
        raise InvalidPath(f"storage path has characters object keys may not contain: {shown}")
    if key.startswith("/"):
        raise InvalidPath(f"storage path is absolute: {shown}")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise InvalidPath(f"storage path has an empty, '.' or '..' segment: {shown}")
    return key


def object_path(value: str, *, bucket: str, supabase_url: str | None) -> str:
    """Normalise a path from a row to an object key inside ``bucket``.

    ``value`` is either an object key (``"books/abc/cover.jpg"`` is the key ``books/abc/cover.jpg``
    inside the bucket; a leading bucket name is *not* stripped, since it may be a real folder) or
    a URL ``{supabase_url}/storage/v1/object/{public|sign|authenticated}/{bucket}/{key}``; any query
    (a signed URL's token) is dropped. Other URLs, hosts, buckets and schemes raise InvalidPath,
    so a key whose first segment looks like a URL scheme (``"cover:1/x.jpg"``) is refused too.
    """
    if _URL_SCHEME.match(value):
        return _key_from_url(value, bucket=bucket, supabase_url=supabase_url)
    return validate_key(value)


def _key_from_url(value: str, *, bucket: str, supabase_url: str | None) -> str:
    url = urlsplit(value)
    # Never echo user info, the path or the query: they may hold a password, a user's id or a
    # signed URL's token.
    shown = f"{url.scheme}://{url.netloc.rpartition('@')[2]}/..."
    if supabase_url is None:
        raise InvalidPath(f"URL given but no Supabase project is configured: {shown}")
    own = urlsplit(supabase_url)
    if url.username is not None or url.password is not None or _origin(url) != _origin(own):
        raise InvalidPath(f"URL is not this project's storage: {shown}")
    prefix = own.path.rstrip("/") + "/storage/v1/object/"
    if not url.path.startswith(prefix):
        raise InvalidPath(f"URL is not a storage object URL: {shown}")
    kind, _, rest = url.path[len(prefix) :].partition("/")
    url_bucket, _, encoded_key = rest.partition("/")
    if kind not in _URL_KINDS:
        raise InvalidPath(f"URL is not a storage object URL: {shown}")
    if unquote(url_bucket) != bucket:
        raise InvalidPath(f"URL points into another bucket than {bucket!r}: {shown}")
    try:
        key = unquote(encoded_key, errors="strict")
    except UnicodeDecodeError:
        raise InvalidPath(f"URL path is not valid UTF-8: {shown}") from None
    return validate_key(key)


def _origin(url: SplitResult) -> tuple[str, str | None, int | None] | None:
    """Scheme, host and effective port; None when the port is malformed."""
    scheme = url.scheme.lower()
    try:
        port = url.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    return scheme, url.hostname, port


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
    return (f"{_generated_dir(item_id)}/print-interior.pdf",
            f"{_generated_dir(item_id)}/print-cover.pdf")


def _generated_dir(item_id: str | UUID) -> str:
    return f"generated/{canonical_uuid(item_id, what='order item id')}"
