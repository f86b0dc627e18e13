"""Result links that stay fresh: re-signing ``pdf_url``, ``cover_image_url`` and the print
files' ``print_interior_url`` and ``print_cover_url`` before they die.

The bucket is private, so the URLs written at completion are signed for
``SIGNED_URL_TTL_SECONDS``. An app that opens "My orders" a month later reads a dead link unless
someone signs again: this sweep does, for completed items whose URLs expire within
``SIGNED_URL_REFRESH_MARGIN_SECONDS`` (or whose expiry was never recorded), in bounded batches.
With public or local storage URLs never expire and there is nothing to do.

The SQL functions of migrations/020_print_urls_stay_fresh.sql pick the items (only results
under the item's own ``generated/{item id}/`` folder, the daemon's layout, print files included)
and write nothing but the five URL columns. The screen links are signed first, so the recorded
``urls_expire_at`` is never later than any of the four tokens. Re-signing is idempotent, so
two replicas sweeping at once do no harm. Logs carry counts only, never paths or URLs (a signed
URL is a credential).
"""

from __future__ import annotations

from loguru import logger

from monitor.store.base import OrderStore
from processors.errors import TerminalError
from processors.links import sign_results
from processors.ports import BlobStorage

DEFAULT_BATCH = 100
#: Safety stop for one run: at most this many batches, the rest waits for the next run.
MAX_BATCHES = 50


async def refresh_expiring_urls(
    store: OrderStore,
    storage: BlobStorage,
    *,
    margin_seconds: int,
    batch: int = DEFAULT_BATCH,
) -> int:
    """Re-sign the result URLs of completed items that expire within ``margin_seconds``.

    Returns the number of items given fresh URLs. An item whose objects cannot be signed (gone
    from storage, a path the storage refuses) is skipped for this run and logged; storage or
    database outages propagate, and the next run picks up where this one stopped.
    """
    if storage.url_ttl_seconds is None:
        return 0
    refreshed = 0
    skipped: list[str] = []
    for _ in range(MAX_BATCHES):
        due = await store.items_with_expiring_urls(margin_seconds, batch, skip=skipped)
        for row in due:
            item_id = str(row["item_id"])
            interior, print_cover = row.get("print_interior_path"), row.get("print_cover_path")
            try:
                links = await sign_results(storage, row["pdf_path"], row["cover_image_path"])
                printed = (
                    await sign_results(storage, interior, print_cover)
                    if interior and print_cover
                    else None
                )
            except TerminalError as exc:
                skipped.append(item_id)
                logger.warning(
                    "cannot re-sign the result URLs of an item",
                    item_id=item_id,
                    error_code=exc.code,
                )
                continue
            if await store.refresh_urls(
                item_id,
                pdf_path=row["pdf_path"],
                pdf_url=links.pdf_url,
                cover_path=row["cover_image_path"],
                cover_url=links.cover_url,
                urls_expire_at=links.expires_at,
                print_interior_path=interior,
                print_interior_url=printed.pdf_url if printed else None,
                print_cover_path=print_cover,
                print_cover_url=printed.cover_url if printed else None,
            ):
                refreshed += 1
        if len(due) < batch:
            break
    if refreshed or skipped:
        logger.info("re-signed result URLs", items=refreshed, skipped=len(skipped))
    return refreshed
