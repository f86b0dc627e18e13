"""An emulation of the Node original's published algorithm, for the bench only (not a mode).

What it does, from the original's published description: it polls the queue every
``BASELINE_POLL_SECONDS`` (10 s in the original, scaled here like the latencies); it claims with a
select followed by a separate update (not atomic: two replicas can take the same item); it runs
at most 5 orders at once; each order analyses the book's cover again (no cache) and the child's
photo, draws the cover, then the pages in batches of 3, one batch after another (a batch lasts as
long as its slowest page); every reply stays in memory until the PDF is built, and nothing is
checkpointed, so a crash loses every page already paid for. It has no lease: an item a crash
leaves in ``processing`` stays there until someone resets it.

What it shares with this daemon, so that only the algorithm differs: the Gemini client and its
in-process retries (``LimitedAI`` around ``GeminiAI``, no pacing), the prompts (``PromptBook``),
the local storage and the PDF builder. It makes no QA judge calls and no output checks (the
original had none). The SQL is inline: bench-only code, the report's stated exception.

``python -m bench.baseline`` with the bench's daemon environment (``World.env``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from monitor.storage.local import LocalStorage
from processors.ai.base import EditRequest, ImagePart
from processors.ai.gemini import GeminiAI
from processors.ai.limits import LimitedAI
from processors.analysis_models import ChildAnalysis, CoverAnalysis
from processors.child import validate_child
from processors.pdf import build_pdf
from processors.prompts import PromptBook

MAX_ORDERS = 5
BATCH = 3
WORKER = "baseline"


class Baseline:
    def __init__(self, env: dict[str, str]) -> None:
        self.url = env["DATABASE_URL"]
        self.poll_s = float(env.get("BASELINE_POLL_SECONDS", "10"))
        self.storage = LocalStorage(Path(env["LOCAL_STORAGE_DIR"]))
        self.prompts = PromptBook()
        self.ai = LimitedAI(
            GeminiAI(
                env["GOOGLE_API_KEY"],
                analysis_model=env["GEMINI_ANALYSIS_MODEL"],
                image_models=[env["GEMINI_IMAGE_MODEL"]],
                base_url=env["GEMINI_BASE_URL"],
            ),
            max_concurrency=MAX_ORDERS * BATCH,
            requests_per_minute=None,
            max_retries=3,
            backoff_base=float(env.get("AI_BACKOFF_BASE_SECONDS", "2")),
        )
        self.active: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            free = MAX_ORDERS - len(self.active)
            if free > 0:
                for item in await self._select(free):
                    await self._update_claim(item)
                    task = asyncio.create_task(self._order(item))
                    self.active.add(task)
                    task.add_done_callback(self.active.discard)
            await asyncio.sleep(self.poll_s)

    async def _query(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, row_factory=dict_row
        ) as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall() if cur.description else []

    async def _select(self, limit: int) -> list[str]:
        rows = await self._query(
            """select oi.id::text from order_items oi join orders o on o.id = oi.order_id
                where oi.generation_status = 'pending' and o.payment_status = 'paid'
                order by oi.created_at limit %s""",
            [limit],
        )
        return [r["id"] for r in rows]

    async def _update_claim(self, item: str) -> None:
        # A separate statement, no condition on the status: the original's race, kept.
        await self._query(
            """update order_items set generation_status = 'processing', claimed_by = %s,
                      started_at = now(), attempts = attempts + 1 where id = %s""",
            [WORKER, item],
        )

    async def _order(self, item_id: str) -> None:
        try:
            await self._book(item_id)
        except Exception as err:  # the original marks the order failed
            await self._query(
                """update order_items set generation_status = 'failed', error_code = %s
                    where id = %s""",
                [getattr(err, "code", "internal_error"), item_id],
            )

    async def _book(self, item_id: str) -> None:
        (item,) = await self._query("select * from order_items where id = %s", [item_id])
        (book,) = await self._query("select * from books where id = %s", [item["book_id"]])
        pages = await self._query(
            "select * from book_pages where book_id = %s order by page_number", [book["id"]]
        )
        profile = validate_child(item["child_name"], item["child_age"], item["child_gender"])
        photo = ImagePart(await self.storage.download(item["child_photo_path"]))
        cover_original = await self.storage.download(book["cover_image_path"])
        cover_analysis, child_analysis = await asyncio.gather(
            self.ai.analyze(
                prompt=self.prompts.cover_analysis_prompt(book),
                images=[ImagePart(cover_original)],
                schema=CoverAnalysis,
            ),
            self.ai.analyze(
                prompt=self.prompts.child_analysis_prompt(profile),
                images=[photo],
                schema=ChildAnalysis,
            ),
        )
        cover_a, child_a = cover_analysis.value, child_analysis.value
        cover = await self.ai.generate_image(
            EditRequest(
                prompt=self.prompts.cover_prompt(cover_a, child_a, book, profile),
                base=ImagePart(cover_original),
                child_photo=photo,
                child_name=profile.name,
                aspect_ratio="1:1",
            )
        )
        identity = ImagePart(cover.data)
        drawn: list[bytes] = []  # every page stays in memory until the PDF (no checkpoints)

        async def page(row: dict[str, Any]) -> bytes:
            original = await self.storage.download(row["image_path"])
            if not row.get("has_character", True):
                return original
            reply = await self.ai.generate_image(
                EditRequest(
                    prompt=self.prompts.page_prompt(cover_a, child_a, book, row, profile),
                    base=ImagePart(original),
                    child_photo=photo,
                    identity_reference=identity,
                    child_name=profile.name,
                    aspect_ratio="1:1",
                )
            )
            return reply.data

        for start in range(0, len(pages), BATCH):
            drawn += await asyncio.gather(*(page(r) for r in pages[start : start + BATCH]))
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for n, data in enumerate([cover.data, *drawn]):
                path = Path(tmp) / f"{n:03d}.jpg"
                path.write_bytes(data)
                files.append(path)
            pdf = build_pdf(files[0], files[1:], Path(tmp) / "book.pdf", title=book["title"])
            target = f"baseline/{item_id}/book.pdf"
            await self.storage.upload_file(target, pdf, "application/pdf")
        await self._query(
            """update order_items set generation_status = 'completed', generated_at = now(),
                      progress = 100, pdf_path = %s where id = %s""",
            [target, item_id],
        )


def main() -> int:
    asyncio.run(Baseline(dict(os.environ)).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
