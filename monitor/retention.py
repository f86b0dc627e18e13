"""Photo retention: children's photos and intermediate page images do not outlive their purpose.

``PHOTO_RETENTION_DAYS`` (default 30, 0 switches it off) after an item completed or failed for
good, its child photo and page images are deleted from storage and their paths cleared in the
database. The finished PDF and the personalized cover stay: they are what the parent bought.

The SQL functions of ``migrations/006_retention.sql`` pick the items and the paths; this module
only deletes objects and records it. Each step is idempotent (a missing object is not an error,
marking twice is harmless), so a crash between deleting and marking is repaired by the next run,
and two replicas running it at once do no harm. Logs carry counts only, never paths (a path holds
a user id) or names.
"""

from __future__ import annotations

from loguru import logger

from monitor.metrics import Metrics
from monitor.store.base import OrderStore
from processors.ports import BlobStorage

DEFAULT_BATCH = 100
#: Safety stop for one run: at most this many batches, the rest waits for the next run.
MAX_BATCHES = 50


async def purge_expired_photos(
    store: OrderStore,
    storage: BlobStorage,
    *,
    days: int,
    batch: int = DEFAULT_BATCH,
    metrics: Metrics | None = None,
) -> int:
    """Delete the photos and page images of items finished more than ``days`` ago.

    Returns the number of storage objects deleted (or found already gone). ``days <= 0`` means
    retention is switched off, and nothing happens. Storage and database errors propagate: the
    scheduler logs them and the next run picks up where this one stopped.
    """
    if days <= 0:
        return 0
    objects = 0
    items = 0
    for _ in range(MAX_BATCHES):
        due = await store.items_due_for_photo_deletion(days, batch)
        if not due:
            break
        for row in due:
            paths = [p for p in row.get("paths") or [] if p]
            if paths:
                await storage.delete(paths)
            await store.mark_photo_deleted(row["item_id"])
            objects += len(paths)
            items += 1
            if metrics is not None and paths:
                metrics.photos_deleted(len(paths))
        if len(due) < batch:
            break
    if items:
        logger.info("photo retention purged items", items=items, objects=objects, days=days)
    return objects
