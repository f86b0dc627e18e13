"""The pieces every scenario needs: an embedded Postgres, a book shelf, the fake Gemini, daemons."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any

import psutil
import psycopg
from PIL import Image

from monitor.catalog import import_book, read_book_dir
from monitor.demo import write_sample_book
from monitor.demo_book import draw_child_photo
from monitor.migrate import migrate
from monitor.storage.local import LocalStorage
from monitor.store.postgres import PostgresStore
from testkit.daemon_process import DaemonProcess
from testkit.fakes.gemini_server import (
    FakeGemini,
    RecordedRequest,
    full_size_copy,
    like_a_reply,
    tinted_copy,
)
from testkit.postgres import Cluster

TEMPLATE = "bench_template"
USER = "00000000-0000-0000-0000-0000000000bb"
PHOTO = f"uploads/{USER}/photo.jpg"


class Bench:
    """One embedded cluster for the whole run; a fresh migrated database per world."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="book-bench-"))
        self.cluster = Cluster(self.root / "pg")
        with psycopg.connect(self.cluster.url(), autocommit=True) as conn:
            conn.execute(f'create database "{TEMPLATE}"')
        asyncio.run(migrate(self.cluster.url(TEMPLATE)))
        self.books_dir = self.root / "books"

    def book_dir(self, pages: int) -> Path:
        """The sample book's cover and ``pages`` pages (its 8 drawn pages, cycled)."""
        target = self.books_dir / f"p{pages}"
        if target.exists():
            return target
        sample = write_sample_book(self.books_dir / "sample")
        target.mkdir(parents=True)
        shutil.copy(sample / "cover.jpg", target / "cover.jpg")
        originals = sorted(p for p in sample.glob("[0-9]*.jpg"))
        for n in range(1, pages + 1):
            shutil.copy(originals[(n - 1) % len(originals)], target / f"{n:02d}.jpg")
        return target

    def close(self) -> None:
        self.cluster.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


@lru_cache(maxsize=4)
def big_jpeg(side: int) -> bytes:
    """A noisy-ish ``side``-pixel square JPEG (the sample cover scaled), made once."""
    from monitor.demo_book import draw_cover

    with Image.open(BytesIO(draw_cover())) as img:
        scaled = img.convert("RGB").resize((side, side))
    out = BytesIO()
    scaled.save(out, "JPEG", quality=90)
    return out.getvalue()


def sized_replies(side: int | None = None):
    """The fake's tinted copy of the first input (so quality checks pass), scaled up to a long
    side of ``side`` px or, when ``side`` is None, to the pixels the real model answers the
    request with (its imageSize at its ratio, ``full_size_copy``), and encoded with a real
    reply's detail and quality (``like_a_reply``: 6 MB at 4096 px).

    Replies are cached per input image and size: a 4K JPEG takes the fake a good part of a
    second to encode, CPU that would otherwise be taken from the daemon being measured on a
    2-core box.
    """
    made: dict[bytes, tuple[bytes, str]] = {}

    def make(request: RecordedRequest) -> tuple[bytes, str]:
        first = request.images[0] if request.images else b""
        tag = f"{request.aspect_ratio}/{side or request.image_size}".encode()
        key = hashlib.sha256(first + tag).digest()
        if key in made:
            return made[key]
        if side is None:
            made[key] = full_size_copy(request)
            return made[key]
        data, _ = tinted_copy(request)
        with Image.open(BytesIO(data)) as img:
            scale = side / max(img.size)
            big = img.convert("RGB").resize((round(img.width * scale), round(img.height * scale)))
        made[key] = (like_a_reply(big), "image/jpeg")
        return made[key]

    return make


@dataclass
class World:
    bench: Bench
    home: Path
    url: str
    store: PostgresStore
    fake: FakeGemini
    books: dict[int, str]
    daemons: list[DaemonProcess] = field(default_factory=list)

    def env(self, **extra: Any) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.url,
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_DIR": str(self.home / "storage"),
            "CACHE_DIR": str(self.home / "cache"),
            "AI_PROVIDER": "gemini",
            "GOOGLE_API_KEY": self.fake.api_key,
            "GEMINI_BASE_URL": self.fake.base_url,
            "GEMINI_ANALYSIS_MODEL": self.fake.ANALYSIS_MODEL,
            "GEMINI_IMAGE_MODEL": self.fake.IMAGE_MODEL,
            "POLL_INTERVAL_SECONDS": "0.5",
            "RETRY_BACKOFF_BASE_SECONDS": "1",
            # The in-process AI backoff, scaled like the latencies (2 s against 10-30 s calls).
            "AI_BACKOFF_BASE_SECONDS": "0.05",
            "SHUTDOWN_GRACE_SECONDS": "2",
            "PORT": "0",
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
        }
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start_daemon(
        self, *, interpreter_args: list[str] | None = None, **extra: Any
    ) -> DaemonProcess:
        n = len(self.daemons)
        daemon = DaemonProcess(
            self.env(WORKER_ID=f"bench-{n}", **extra),
            log_file=self.home / f"daemon-{n}.log",
            interpreter_args=interpreter_args,
        )
        self.daemons.append(daemon)
        return daemon

    def restart(self, daemon: DaemonProcess) -> DaemonProcess:
        """A new process under the same WORKER_ID, as a supervisor with a stable id restarts one."""
        n = len(self.daemons)
        again = DaemonProcess(daemon.env, log_file=self.home / f"daemon-{n}.log")
        self.daemons.append(again)
        return again

    async def order(self, pages: int, name: str = "Mia") -> str:
        return await self.store.create_paid_order_item(
            self.books[pages],
            child_name=name,
            child_age=5,
            child_gender="girl",
            child_photo_path=PHOTO,
            user_id=USER,
        )

    async def rows(self, items: list[str]) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            cur = await conn.execute(
                """select id::text, generation_status, attempts, ai_usage, error_code, claimed_by,
                          extract(epoch from created_at) as created,
                          extract(epoch from started_at) as started,
                          extract(epoch from generated_at) as generated
                     from order_items where id = any(%s::uuid[])""",
                [items],
            )
            names = [d.name for d in cur.description]
            return [dict(zip(names, r)) for r in await cur.fetchall()]

    async def wait_done(self, items: list[str], timeout: float) -> list[dict[str, Any]]:
        """Until every item is completed or failed, or ``timeout`` passes (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.rows(items)
            if all(r["generation_status"] in ("completed", "failed") for r in rows):
                return rows
            if time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.1)

    async def count_processing(self) -> int:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            cur = await conn.execute(
                "select count(*) from order_items where generation_status = 'processing'"
            )
            return (await cur.fetchone())[0]


@asynccontextmanager
async def world(bench: Bench, model: Any, pages: tuple[int, ...] = (8,)) -> AsyncIterator[World]:
    name = bench.cluster.create_database(template=TEMPLATE)
    url = bench.cluster.url(name)
    home = bench.root / f"w-{uuid.uuid4().hex[:8]}"
    home.mkdir()
    storage = LocalStorage(home / "storage")
    store = PostgresStore(url)
    await store.open()
    fake = FakeGemini()
    fake.default = model
    await fake.start()
    w = World(bench, home, url, store, fake, {})
    try:
        await storage.upload(PHOTO, draw_child_photo(), "image/jpeg")
        for n in pages:
            source = read_book_dir(bench.book_dir(n), f"Bench book {n} pages")
            w.books[n] = await import_book(store, storage, source)
        yield w
    finally:
        for d in w.daemons:
            if d.alive():
                try:
                    await asyncio.to_thread(d.terminate, 15)
                except Exception:
                    d.stop()
            else:
                d.stop()
        await fake.stop()
        await store.close()
        bench.cluster.drop_database(name)
        shutil.rmtree(home, ignore_errors=True)


class RssSampler:
    """Peak RSS of a process (and its children), sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    def rss(self) -> int:
        try:
            total = self.proc.memory_info().rss
            for child in self.proc.children(recursive=True):
                total += child.memory_info().rss
            return total
        except psutil.Error:
            return 0

    async def _run(self) -> None:
        while True:
            value = self.rss()
            self.samples.append(value)
            self.peak = max(self.peak, value)
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self.peak = 0
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return self.peak
