"""One claimed order item in, one finished personalized book out (docs/architecture.md,
"Data flow").

Every paid image call ends in an uploaded image and a checkpoint row before it counts, so an item
resumed after a crash or a lost lease skips what is done; a drawing waiting for its quality judge
is uploaded and recorded as the page's draft meanwhile, so a resumed item judges it instead of
paying for it again (processors/qa.py). Pages are kept on local disk, not in
memory, so a 24-page book needs no more RAM than a 10-page one.

Each illustration has ``page_deadline_seconds`` across all its retries and redraws, so a hung
call costs at most that; waiting its turn for the quota or an AI slot does not count
(processors/deadline.py). When one page fails for good, no new page starts, and the calls
already in flight finish (within their deadline) and are checkpointed: they are paid for.
Usage goes into one ``Usage`` per item that the adapters add to as answers arrive; the job
exposes it (``JobContext.usage_of``) so the daemon persists it with a failure or release too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loguru import logger
from PIL import Image

from processors.ai.base import (
    AIUnavailable,
    ContentBlocked,
    EditRequest,
    ImageAI,
    ImagePart,
    Usage,
    check_ai,
)
from processors.analysis import Analyzer
from processors.analysis_models import ChildAnalysis, CoverAnalysis
from processors.child import ChildProfile, validate_child
from processors.contract import BookResult, ItemContext, JobContext, Row, StepCode
from processors.deadline import deadline
from processors.errors import OrderError, TerminalError
from processors.files import ParkedBytes
from processors.images import (
    DEFAULT_ASPECT_TOLERANCE,
    Original,
    OutputInvalid,
    check_output,
    fit_output,
    image_part_bytes,
    load_page_image,
    model_input_file,
    normalize_photo,
    to_jpeg,
)
from processors.layout import (
    generated_cover_path,
    generated_page_path,
    generated_pdf_path,
    generated_print_paths,
    result_path,
)
from processors.links import sign_results
from processors.ownership import require_user_upload
from processors.page_inputs import PageInput, PageInputs
from processors.page_pool import DrawSlot, PagePool
from processors.pdf import SCREEN_MAX_SIDE, build_pdf, screen_copy
from processors.picture_work import PictureWork
from processors.ports import (
    AssetCache,
    BlobStorage,
    NullMetrics,
    ObjectNotFound,
    PipelineMetrics,
)
from processors.print_pdf import (
    PrintImage,
    PrintProfile,
    assemble_print_files,
    prepare_print_image,
)
from processors.prompts import PromptBook
from processors.qa import Checked, Drafted, Drawing, QualityGate, Reference, finished
from processors.queue_order import deferred
from processors.story import page_texts
from processors.text_layer import PlacedText, add_text_layer

JPEG = "image/jpeg"
# Inputs to the model are downscaled: the model does not need more, and uploads stay small.
AI_INPUT_MAX_SIDE = 1536
# A blank or unchanged output is redrawn this many times before the item is retried later.
OUTPUT_REDRAWS = 1

#: A drawing's JPEG (done or in the making, ``qa.Draw``) to the judge's input of it.
AsPart = Callable[[asyncio.Future[bytes]], Awaitable[ImagePart]]
#: Told of every drawing that passed its output checks, with the way to its judge input and
#: the screen copy its checks made (``_Preview``), if they made one.
Drawn = Callable[[asyncio.Future[bytes], AsPart, bytes | None], Awaitable[None]]


class BookNotFound(TerminalError):
    code = "book_not_found"
    parent_message = "The book you ordered is not available. Our team has been notified."


class BookHasNoPages(TerminalError):
    code = "book_has_no_pages"
    parent_message = "The book you ordered is not available. Our team has been notified."


class PhotoMissing(TerminalError):
    code = "photo_missing"
    parent_message = "We could not find your child's photo. Please upload it again."


@dataclass(frozen=True)
class Inputs:
    """What every illustration of one item is drawn from."""

    book: Row
    profile: ChildProfile
    photo: ImagePart
    cover: CoverAnalysis
    child: ChildAnalysis


@dataclass
class _Reference:
    """The generated cover as the pages' identity reference. Drawn first, it is theirs once it
    passed and is saved; drawn beside them (``cover_first=False``), from the moment a drawing of
    it passed the output checks, and the pages started before that are drawn without it.

    Every page's judge compares with the cover, wherever the page was drawn: a judge waits until
    the cover is drawn (or could not be), so a page drawn without the reference still has to be
    the cover's character to pass, and its redraw carries the reference."""

    part: ImagePart | None = None
    _settled: asyncio.Event = field(default_factory=asyncio.Event)

    def drawn(self, part: ImagePart) -> None:
        self.part = part
        self._settled.set()

    def settle(self) -> None:
        """No drawing of the cover is coming (the cover's task ended, however it ended)."""
        self._settled.set()

    async def for_judge(self) -> ImagePart | None:
        await self._settled.wait()
        return self.part


class _JudgeInputs:
    """The judge's input of one illustration's latest drawing. A fresh drawing's is made from
    the model's reply by its output checks (``_preview``), before the page is fitted, so the
    judge call waits for neither the fit nor a second decode of the page. A draft read back
    from storage has none yet: it is made from the draft. Whoever else asks for the same
    drawing (the cover as the pages' reference) gets the same part."""

    def __init__(self, pictures: PictureWork) -> None:
        self._pictures = pictures
        self._latest: tuple[asyncio.Future[bytes], ImagePart] | None = None

    def made(self, page: asyncio.Future[bytes], part: ImagePart) -> None:
        self._latest = (page, part)

    async def of(self, page: asyncio.Future[bytes]) -> ImagePart:
        if self._latest is None or self._latest[0] is not page:
            self._latest = (page, await self._pictures.run(_part_of, await page))
        return self._latest[1]


@dataclass(frozen=True)
class _Preview:
    """What the output checks of a fresh drawing made from the model's reply, beside the page
    it is being fitted into (``images.check_output``): the judge's input, and the page's screen
    copy when the page is larger than the screen side (None: the page is its own)."""

    part: ImagePart
    screen: bytes | None


@dataclass(frozen=True)
class _Finished:
    """One illustration as the two kinds of PDF take it."""

    print: PrintImage
    #: At most ``SCREEN_MAX_SIDE`` px: the screen PDF's picture.
    screen: Path


def _finish(
    source: Path, name: Path, profile: PrintProfile, screen: Path | None = None
) -> _Finished:
    """The print picture of one drawing, and its screen copy unless its output checks made it
    (``screen``); files next to ``name``. Blocking."""
    return _Finished(
        prepare_print_image(source, name.with_suffix(".print.jpg"), profile),
        screen or screen_copy(source, name.with_suffix(".screen.jpg")),
    )


@dataclass
class _FinishedPictures:
    """Each illustration's print picture (processors/print_pdf.py) and screen copy
    (processors/pdf.py, unless its output checks made one: ``_Preview``), prepared from the
    drawing while it is judged, so a drawing that passes
    has them ready or under way and the end of the book only assembles the PDFs. One at a time
    per order while its pages are drawn, each in a slot of the process's ``PictureWork``: an
    upscale or a downscale holds a print-size picture and its result in memory while it runs,
    and the cores are wanted by the pages' output checks and judge inputs meanwhile (every slot
    while pages were drawn cost 20 MB on a 24-page order; the books/min it seemed to cost was
    within the machine's run-to-run spread, bench/README.md, seventh pass). Once every
    illustration is saved, the book waits for nothing else: those still to prepare take every
    slot. Until then they are ``deferred`` two steps: the order's output checks and judge
    inputs, which its next calls wait on, take a free core first, then its pages' fits, which
    the drafts saved beside the judge calls wait on. A drawing judged again after a redraw
    replaces the earlier one's; the saved drawing is always the one in the books."""

    profile: PrintProfile
    work: Path
    pictures: PictureWork
    #: Per illustration being judged, its latest drawing and what is prepared from it.
    _judged: dict[int, tuple[asyncio.Future[bytes], asyncio.Future[_Finished]]] = field(
        default_factory=dict
    )
    #: Per saved illustration, what is prepared from it (the drawing's bytes are not kept).
    _final: dict[int, asyncio.Future[_Finished]] = field(default_factory=dict)
    _made: Iterator[int] = field(default_factory=itertools.count)
    _turn: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))

    def drawn(self, number: int, page: asyncio.Future[bytes], screen: bytes | None = None) -> None:
        """A drawing of illustration ``number`` passed its output checks (which made its
        ``screen`` copy, or not): prepare it as soon as its JPEG is made."""
        if (replaced := self._judged.get(number)) is not None:
            replaced[1].cancel()  # its drawing failed the judge
        self._judged[number] = (page, self._start(number, page, screen))

    def saved(self, number: int, source: Path | bytes) -> None:
        """Illustration ``number`` is final as ``source`` (its JPEG bytes, or a file): what was
        prepared from that very drawing is kept, anything else is prepared again."""
        judged = self._judged.pop(number, None)
        if judged is not None and _is_made(judged[0], source):
            self._final[number] = judged[1]
            return
        if judged is not None:
            judged[1].cancel()
        self._final[number] = self._start(number, source)

    def _start(
        self,
        number: int,
        source: Path | bytes | asyncio.Future[bytes],
        screen: bytes | None = None,
    ) -> asyncio.Future[_Finished]:
        # Files of its own: a replaced picture already running still writes its output.
        made = next(self._made)
        return asyncio.ensure_future(
            self._prepare(source, self.work / f"finished-{number:03d}-{made}", screen)
        )

    async def _prepare(
        self, source: Path | bytes | asyncio.Future[bytes], name: Path, screen: bytes | None
    ) -> _Finished:
        copy = None
        if screen is not None:  # written at once: waiting, a picture holds no bytes
            copy = name.with_suffix(".screen.jpg")
            await asyncio.to_thread(copy.write_bytes, screen)
            del screen
        if isinstance(source, asyncio.Future):
            # Shielded: the draft saved beside the judge call waits for the same fit.
            source = await asyncio.shield(source)
        if isinstance(source, bytes):
            # Waiting for its turn, a picture holds a file name, not the drawing's bytes.
            drawing = name.with_suffix(".drawn.jpg")
            await asyncio.to_thread(drawing.write_bytes, source)
            source = drawing
        async with self._turn:
            with deferred(2):
                return await self.pictures.run(_finish, source, name, self.profile, copy)

    def all_saved(self) -> None:
        """Every illustration is saved (called once): the rest run as many at once as
        ``pictures`` allows."""
        for _ in range(self.pictures.slots - 1):
            self._turn.release()

    async def ready(self) -> dict[int, _Finished]:
        numbers = list(self._final)
        made = await asyncio.gather(*self._final.values())
        return dict(zip(numbers, made, strict=True))

    async def cancel(self) -> None:
        """Stop what has not started (the item failed): nothing is left running."""
        tasks = [*self._final.values(), *(task for _, task in self._judged.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class BookProcessor:
    def __init__(
        self,
        *,
        ai: ImageAI,
        storage: BlobStorage,
        assets: AssetCache,
        analyzer: Analyzer,
        prompts: PromptBook,
        work_dir: Path,
        page_concurrency: int = 8,
        page_deadline_seconds: float = 600.0,
        aspect_tolerance: float = DEFAULT_ASPECT_TOLERANCE,
        ready_problem: str | None = None,
        metrics: PipelineMetrics | None = None,
        resources: AsyncExitStack | None = None,
        quality: QualityGate | None = None,
        print_bleed_in: float = 0.125,
        print_ppi: int = 300,
        cover_first: bool = True,
        page_input_cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.ai = ai
        self.storage = storage
        self.assets = assets
        self.analyzer = analyzer
        self.prompts = prompts
        self.work_dir = work_dir
        self.page_concurrency = page_concurrency
        self.page_deadline_seconds = page_deadline_seconds
        self.aspect_tolerance = aspect_tolerance
        #: Why no book can be drawn now (no usable model); None when ready. Read by the daemon.
        self.ready_problem = ready_problem
        self.metrics = metrics or NullMetrics()
        self._resources = resources or AsyncExitStack()
        self.quality = quality or QualityGate(ai, prompts, mode="off")
        self.print_bleed_in = print_bleed_in
        self.print_ppi = print_ppi
        #: True: the cover is drawn (and judged) before any page, and every page gets it as
        #: identity reference. False: pages start with the cover, and those whose image call
        #: starts before the cover passed its checks go without the reference (COVER_FIRST).
        self.cover_first = cover_first
        #: Decodes, resizes and encodes of full-size pictures, across all orders of the process.
        self.pictures = PictureWork()
        #: Catalog pages' model inputs and check copies, across all orders of the process.
        self.page_inputs = PageInputs(page_input_cache_bytes, self.metrics.page_input)

    async def __call__(self, job: JobContext) -> BookResult:
        started_at = time.monotonic()
        context = await job.load_context()
        book, pages = _catalog_entry(context)
        item = context.item
        usage = Usage.from_dict(item.get("ai_usage"))
        job.usage_of = usage.as_dict
        profile = validate_child(
            item.get("child_name"), item.get("child_age"), item.get("child_gender")
        )
        total = len(pages)
        # A checkpoint says a page is done; its image is read from this item's own result path,
        # never from a path in the row.
        done = {
            int(c["page_number"]): result_path(job.item_id, int(c["page_number"]))
            for c in context.checkpoints
        }
        # A drawing stored before its judge answered (a checkpoint deletes its page's draft).
        drafts = {int(d["page_number"]): d for d in context.drafts}
        await job.report(2, "Looking at your photo", code=StepCode.ANALYZING, pages_total=total)

        photo = await self._child_photo(item, context.order.get("user_id"))
        # A missing or broken catalog image must fail the item before any call is paid for.
        await self._check_pages(book["id"], [p for p in pages if int(p["page_number"]) not in done])
        cover_original = await self.book_cover(book)
        cover_part = await self.model_part(cover_original)
        cover_analysis, child_analysis = await asyncio.gather(
            self.analyzer.cover(job, book, cover_part, usage),
            self.analyzer.child(job, profile, photo, usage),
        )
        inputs = Inputs(book, profile, photo, cover_analysis, child_analysis)

        print_profile = self.print_profile(book)
        # A directory of this attempt's own: after a lease takeover the old owner's cleanup must
        # not delete the new owner's files, even with a CACHE_DIR shared between processes.
        self.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{job.item_id}-", dir=self.work_dir))
        prepared = _FinishedPictures(print_profile, work, self.pictures)
        try:
            await job.report(
                10, "Drawing the cover", code=StepCode.DRAWING_COVER, usage=usage.as_dict()
            )
            cover_file = work / "cover.jpg"
            reference = _Reference()

            # Taken out when the cover is drawn, so the decoded original is freed after it.
            cover_source = [cover_original]
            del cover_original

            async def cover(
                slot: DrawSlot | None, doomed: Callable[[], None] | None = None
            ) -> None:
                original = cover_source.pop()
                # Drawn beside the pages, the cover is their reference from the moment it is
                # drawn, before its judge (docs/architecture.md, "Cover and pages"); drawn first,
                # it is theirs once it passed.
                beside = slot is not None

                async def drawn(
                    page: asyncio.Future[bytes], as_part: AsPart, screen: bytes | None
                ) -> None:
                    prepared.drawn(0, page, screen)
                    if beside:
                        reference.drawn(await as_part(page))

                try:
                    saved = await self._cover(
                        job,
                        inputs,
                        original,
                        cover_part,
                        done,
                        drafts,
                        cover_file,
                        usage,
                        slot,
                        drawn,
                        doomed,
                    )
                    if not beside:  # beside the pages, the saved cover is the last one drawn
                        reference.drawn(await self.pictures.run(_part_of, cover_file))
                finally:
                    reference.settle()
                prepared.saved(0, saved)

            if self.cover_first or 0 in done:
                await cover(None)
                await self._pages(
                    job, inputs, pages, reference, done, drafts, work, usage, prepared
                )
            else:
                await self._pages(
                    job, inputs, pages, reference, done, drafts, work, usage, prepared, cover=cover
                )
            prepared.all_saved()
            await job.report(92, "Binding your book", code=StepCode.BINDING, usage=usage.as_dict())
            started = time.monotonic()
            numbers = [int(p["page_number"]) for p in pages]
            pictures = await prepared.ready()
            pdf_file = await self.pictures.run(
                build_pdf,
                pictures[0].screen,
                [pictures[n].screen for n in numbers],
                work / "book.pdf",
                trim_width_in=float(book.get("trim_width_in") or 8.5),
                trim_height_in=float(book.get("trim_height_in") or 8.5),
                title=str(book.get("title") or "Your book"),
            )
            texts = page_texts(pages, profile, _box)
            await self.pictures.run(add_text_layer, pdf_file, [None, *texts])
            self.metrics.pdf_built(time.monotonic() - started)
            await job.report(96, "Saving your book", code=StepCode.UPLOADING, usage=usage.as_dict())
            pdf_path, cover_path = (
                generated_pdf_path(job.item_id),
                generated_cover_path(job.item_id),
            )
            await self.storage.upload_file(pdf_path, pdf_file, "application/pdf")
            links = await sign_results(self.storage, pdf_path, cover_path)
            await self._print_files(job, book, prepared, pictures, numbers, texts)
        finally:
            await prepared.cancel()
            shutil.rmtree(work, ignore_errors=True)
        logger.info(
            "book finished",
            pages=total,
            seconds=round(time.monotonic() - started_at, 1),
            calls=usage.calls,
            images=usage.images,
            cost_usd=usage.as_dict().get("cost_usd"),
            unpriced_calls=usage.unpriced_calls,
        )
        return BookResult(
            pdf_path=pdf_path,
            pdf_url=links.pdf_url,
            cover_path=cover_path,
            cover_url=links.cover_url,
            usage=usage.as_dict(),
            urls_expire_at=links.expires_at,
        )

    async def _print_files(
        self,
        job: JobContext,
        book: Row,
        prepared: _FinishedPictures,
        pictures: dict[int, _Finished],
        numbers: list[int],
        texts: list[PlacedText | None],
    ) -> None:
        """The interior and cover PDFs for printing (processors/print_pdf.py), uploaded and on
        the row before completion."""
        files = await self.pictures.run(
            assemble_print_files,
            pictures[0].print,
            [pictures[n].print for n in numbers],
            texts,
            prepared.work,
            prepared.profile,
            title=str(book.get("title") or "Your book"),
        )
        interior_path, cover_path = generated_print_paths(job.item_id)
        await self.storage.upload_file(interior_path, files.interior, "application/pdf")
        await self.storage.upload_file(cover_path, files.cover, "application/pdf")
        links = await sign_results(self.storage, interior_path, cover_path)
        if files.upscaled:
            logger.info(
                "print images upscaled", source_ppi=files.source_ppi, ppi=prepared.profile.ppi
            )
        await job.record_print_files(
            interior_path=interior_path,
            interior_url=links.pdf_url,
            cover_path=cover_path,
            cover_url=links.cover_url,
            upscaled=files.upscaled,
            source_ppi=files.source_ppi,
        )

    def print_profile(self, book: Row) -> PrintProfile:
        """The book's print profile: its own bleed and PPI, else the settings'."""
        return PrintProfile(
            trim_width_in=float(book.get("trim_width_in") or 8.5),
            trim_height_in=float(book.get("trim_height_in") or 8.5),
            bleed_in=float(
                b if (b := book.get("print_bleed_in")) is not None else self.print_bleed_in
            ),
            ppi=int(book.get("print_ppi") or self.print_ppi),
        )

    async def _child_photo(self, item: Row, user_id: str | None) -> ImagePart:
        raw_path = item.get("child_photo_path")
        if not raw_path:
            raise PhotoMissing("order item has no child_photo_path")
        path = self.storage.key_for(raw_path)
        # The daemon reads with the service role: it must not read another family's photo.
        require_user_upload(path, user_id)
        try:
            data = await self.storage.download(path)
        except ObjectNotFound as exc:
            raise PhotoMissing("child photo not in storage") from exc
        return await self.photo_part(data)

    async def book_cover(self, book: Row) -> Image.Image:
        """The catalog's original cover of ``book`` (through the disk cache)."""
        return await self._catalog_image(book["id"], book.get("cover_image_path"), "cover")

    async def _catalog_file(
        self, book_id: str, raw_path: str | None, what: str
    ) -> tuple[str, bytes]:
        """A catalog image's object key and bytes (through the disk cache)."""
        if not raw_path:
            raise ObjectNotFound(f"book {what} has no image path")
        path = self.storage.key_for(raw_path)
        return path, await self.assets.get(book_id, path)

    async def _catalog_image(self, book_id: str, raw_path: str | None, what: str) -> Image.Image:
        _, data = await self._catalog_file(book_id, raw_path, what)
        return await self.pictures.run(load_page_image, data)

    async def _model_input(self, book_id: str, raw_path: str | None, what: str) -> PageInput:
        """A catalog page as the output checks need it and as the model is sent it, made once
        per version of the file for all the orders of its book (processors/page_inputs.py); the
        decoded page itself is freed before the page waits for its image call."""
        path, data = await self._catalog_file(book_id, raw_path, what)
        key = await _input_key(path, data)
        return await self.page_inputs.get(key, lambda: self.pictures.run(_page_inputs, data))

    async def _check_pages(self, book_id: str, pages: list[Row]) -> None:
        """Fetch (into the disk cache) and decode every page still to draw, one at a time, so
        memory does not grow with the book's length; a page whose inputs are held was decoded
        from the very same bytes already."""
        for page in pages:
            path, data = await self._catalog_file(
                book_id, page.get("image_path"), f"page {page['page_number']}"
            )
            if await _input_key(path, data) not in self.page_inputs:
                await self.pictures.run(load_page_image, data)

    async def _cover(
        self,
        job: JobContext,
        inputs: Inputs,
        original: Image.Image,
        original_part: ImagePart,
        done: dict[int, str],
        drafts: dict[int, Row],
        out: Path,
        usage: Usage,
        slot: DrawSlot | None,
        drawn: Drawn | None,
        doomed: Callable[[], None] | None,
    ) -> Path | bytes:
        """The cover saved at ``out``; returns what it was saved from: the earlier attempt's
        file, or the drawing's JPEG."""
        if 0 in done:
            await _download_to(self.storage, done[0], out)
            return out
        path = generated_cover_path(job.item_id)
        checked = await self.draw_cover(
            inputs,
            original,
            original_part,
            usage,
            slot=slot,
            drawn=drawn,
            resume=await self._resumed(job, 0, drafts.get(0)),
            drafted=self._drafting(job, 0, path, usage),
            doomed=doomed,
        )
        await self._save(job, 0, path, checked, out, usage)
        return checked.jpeg

    async def draw_cover(
        self,
        inputs: Inputs,
        original: Image.Image,
        original_part: ImagePart,
        usage: Usage,
        *,
        slot: DrawSlot | None = None,
        drawn: Drawn | None = None,
        resume: Drawing | None = None,
        drafted: Drafted | None = None,
        doomed: Callable[[], None] | None = None,
    ) -> Checked:
        """The personalized cover, checked and judged, not yet stored: the book's first
        illustration, and all of a cover made without an order (processors/cover_service.py).
        ``resume``, ``drafted`` and ``doomed``: as in ``QualityGate.draw``."""
        request = EditRequest(
            prompt=self.prompts.cover_prompt(
                inputs.cover, inputs.child, inputs.book, inputs.profile
            ),
            base=original_part,
            child_photo=inputs.photo,
            child_name=inputs.profile.name,
            aspect_ratio=_ratio(original.size),
            character_box=_box(inputs.book.get("cover_character_box")),
            print_pixels=self.print_profile(inputs.book).pixels,
        )
        softened = self.prompts.cover_prompt(
            inputs.cover, inputs.child, inputs.book, inputs.profile, softened=True
        )
        checks = await self.pictures.run(Original.of, original)
        with logger.contextualize(page=0):
            return await self._checked(
                request, softened, checks, None, usage, slot, drawn, resume, drafted, doomed
            )

    async def _pages(
        self,
        job: JobContext,
        inputs: Inputs,
        pages: list[Row],
        reference: _Reference,
        done: dict[int, str],
        drafts: dict[int, Row],
        work: Path,
        usage: Usage,
        prepared: _FinishedPictures,
        cover: Callable[[DrawSlot, Callable[[], None]], Awaitable[None]] | None = None,
    ) -> None:
        """Every page through the page pool (processors/page_pool.py), each saved into
        ``prepared``; ``cover``, when given, is drawn in the same pool, first in line."""
        pool = PagePool(self.page_concurrency, job.raise_if_lost)
        # Reports go out one at a time, in the order pages finish: concurrent writes could land
        # out of order and the row would step back from "page 3 of 8" to "page 2 of 8".
        reporting = asyncio.Lock()
        finished = sum(1 for p in pages if int(p["page_number"]) in done)
        failed = asyncio.Event()

        async def one(page: Row) -> None:
            nonlocal finished
            number = int(page["page_number"])
            out = work / f"page-{number:03d}.jpg"
            async with pool.in_progress:
                if failed.is_set():
                    return  # another page failed for good: start nothing new
                if number in done:
                    await _download_to(self.storage, done[number], out)
                    prepared.saved(number, out)
                else:
                    # A sibling's refused write (refund, lost lease) ends the item: no new paid
                    # call.
                    job.raise_if_lost()
                    draft = drafts.get(number)
                    if not await self._page(
                        job, inputs, page, pool, reference, failed, draft, out, usage, prepared
                    ):
                        return
                    async with reporting:
                        finished += 1
                        await job.report(
                            15 + int(75 * finished / len(pages)),
                            f"Drawing page {finished} of {len(pages)}",
                            code=StepCode.DRAWING_PAGE,
                            usage=usage.as_dict(),
                        )

        async def first(
            draw_cover: Callable[[DrawSlot, Callable[[], None]], Awaitable[None]],
        ) -> None:
            async with pool.in_progress:
                slot = pool.slot()
                try:
                    await draw_cover(slot, failed.set)
                finally:
                    slot.release()

        async def guarded(work: Awaitable[None]) -> None:
            try:
                await work
            except BaseException:
                failed.set()
                raise

        tasks = [asyncio.ensure_future(guarded(first(cover)))] if cover else []
        tasks += [asyncio.ensure_future(guarded(one(page))) for page in pages]
        try:
            # Calls in flight when a page fails are paid: let them finish (each within its
            # page deadline) and checkpoint, so the next attempt does not pay for them again.
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for task in tasks:  # shutdown or a lost lease: stop everything now
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _page(
        self,
        job: JobContext,
        inputs: Inputs,
        page: Row,
        pool: PagePool,
        reference: _Reference,
        failed: asyncio.Event,
        draft: Row | None,
        out: Path,
        usage: Usage,
        prepared: _FinishedPictures,
    ) -> bool:
        """One page drawn, judged and saved, its print picture under way; False when a sibling
        failed for good before its first image call could start (nothing paid, nothing saved)."""
        number = int(page["page_number"])
        path = generated_page_path(job.item_id, number)
        what = f"page {number}"
        if not page.get("has_character", True):
            drawing = await self._catalog_image(inputs.book["id"], page.get("image_path"), what)
            # Nobody to personalize on this page: it goes into the book as drawn, by design.
            as_drawn = Checked(await self.pictures.run(to_jpeg, drawing), "", None)
            await self._save(job, number, path, as_drawn, out, usage)
            prepared.saved(number, as_drawn.jpeg)
            self.metrics.page_generated("original")
            return True
        # The original is loaded while the page waits for a slot (at most P + 1 pages hold its
        # model input before their first call ends); the wait itself comes first, so pages queue
        # for slots in page order.
        slot = await pool.page_slot()
        loading = asyncio.ensure_future(
            self._model_input(inputs.book["id"], page.get("image_path"), what)
        )
        try:
            await slot.take()
            original, base = await loading
            # A page that has its slot and its inputs is started; one whose sibling failed for
            # good before then starts nothing (its inputs may wait for a PictureWork slot).
            started = not failed.is_set()
        except BaseException:
            loading.cancel()
            slot.release()
            raise
        del loading
        ratio = _ratio(original.size)
        try:
            if not started:
                return False
            # Each image call carries the reference that exists when it starts (_Reference).
            request = EditRequest(
                prompt=self.prompts.page_prompt(
                    inputs.cover, inputs.child, inputs.book, page, inputs.profile
                ),
                base=base,
                child_photo=inputs.photo,
                child_name=inputs.profile.name,
                aspect_ratio=ratio,
                character_box=_box(page.get("character_box")),
                print_pixels=self.print_profile(inputs.book).pixels,
            )
            softened = self.prompts.page_prompt(
                inputs.cover, inputs.child, inputs.book, page, inputs.profile, softened=True
            )

            async def drawn(
                page: asyncio.Future[bytes], as_part: AsPart, screen: bytes | None
            ) -> None:
                prepared.drawn(number, page, screen)

            try:
                with logger.contextualize(page=number):
                    checked = await self._checked(
                        request,
                        softened,
                        original,
                        reference,
                        usage,
                        slot,
                        drawn=drawn,
                        resume=await self._resumed(job, number, draft),
                        drafted=self._drafting(job, number, path, usage),
                        doomed=failed.set,
                    )
            except OrderError as exc:
                self.metrics.page_generated(exc.code)
                raise
            await self._save(job, number, path, checked, out, usage)
            prepared.saved(number, checked.jpeg)
        finally:
            slot.release()
        self.metrics.page_generated("ok")
        return True

    async def _checked(
        self,
        request: EditRequest,
        softened: str,
        original: Original,
        reference: _Reference | None,
        usage: Usage,
        slot: DrawSlot | None,
        drawn: Drawn | None = None,
        resume: Drawing | None = None,
        drafted: Drafted | None = None,
        doomed: Callable[[], None] | None = None,
    ) -> Checked:
        """One illustration through the quality gate (processors/qa.py); each image call holds
        ``slot`` (when given), the judge calls do not. ``drawn`` sees every drawing that passed
        the output checks, before it is judged (a resumed draft included)."""
        judge_inputs = _JudgeInputs(self.pictures)
        if resume is not None:
            if slot:
                slot.release()  # the draft's judge comes first; a redraw takes a slot again
            if drawn:
                await drawn(resume.page, judge_inputs.of, None)

        # Without a judge the drawing is saved next: the page keeps its slot until then.
        keep = self.quality.mode == "off"

        def calling() -> contextlib.AbstractAsyncContextManager[None]:
            return slot.drawing(keep=keep) if slot else contextlib.nullcontext()

        async def draw(prompt: str, soft: str) -> tuple[asyncio.Future[bytes], str, Reference]:
            identity = reference.part if reference else None
            page, model, preview = await self._draw(
                replace(request, prompt=prompt, identity_reference=identity),
                soft,
                original,
                usage,
                calling,
                with_preview=self.quality.mode != "off",
            )
            if preview is not None:
                judge_inputs.made(page, preview.part)
            if drawn:
                await drawn(page, judge_inputs.of, preview.screen if preview else None)
            if reference is None:
                return page, model, "cover_itself"
            return page, model, "with_cover" if identity else "without_cover"

        return await self.quality.draw(
            draw,
            request.prompt,
            softened,
            original=request.base,
            photo=request.child_photo,
            identity=reference.for_judge if reference else None,
            usage=usage,
            as_part=judge_inputs.of,
            resume=resume,
            drafted=drafted,
            doomed=doomed,
        )

    async def _draw(
        self,
        request: EditRequest,
        softened_prompt: str,
        original: Original,
        usage: Usage,
        calling: Callable[[], contextlib.AbstractAsyncContextManager[None]],
        *,
        with_preview: bool,
    ) -> tuple[asyncio.Future[bytes], str, _Preview | None]:
        """One illustration within the page deadline (module docstring); each image call
        within ``calling()`` (the page's image slot), the checks of its output outside. With
        ``with_preview``, the drawing's judge input and screen copy too (``_Preview``), and its
        page JPEG is returned while it is still being fitted (``qa.Draw``)."""
        try:
            async with deadline(self.page_deadline_seconds):
                return await self._draw_unbounded(
                    request, softened_prompt, original, usage, calling, with_preview
                )
        except TimeoutError:
            logger.warning(
                "page deadline of {}s passed; giving up on this illustration",
                self.page_deadline_seconds,
            )
            raise AIUnavailable(
                f"no usable illustration within the page deadline of "
                f"{self.page_deadline_seconds:g}s",
                code="ai_timeout",
            ) from None

    async def _draw_unbounded(
        self,
        request: EditRequest,
        softened_prompt: str,
        original: Original,
        usage: Usage,
        calling: Callable[[], contextlib.AbstractAsyncContextManager[None]],
        with_preview: bool,
    ) -> tuple[asyncio.Future[bytes], str, _Preview | None]:
        """Softened prompt once after a safety block; redraw a blank, unchanged or wrong-shaped
        output up to ``OUTPUT_REDRAWS`` times, then fail with ``ai_bad_output``.

        Logs one line per finished illustration (page 0 is the cover, from the log context), so a
        ten-minute book is not ten minutes of silence."""
        started = time.monotonic()
        for redraw in range(OUTPUT_REDRAWS + 1):
            try:
                async with calling():
                    result = await self.ai.generate_image(request, usage)
            except ContentBlocked:
                if request.prompt == softened_prompt:
                    raise
                logger.info("safety block; retrying once with the softened prompt")
                request = replace(request, prompt=softened_prompt)
                async with calling():
                    result = await self.ai.generate_image(request, usage)
            model, ratio = result.model, result.aspect_ratio
            # While it waits for a core, to be checked and then fitted, the reply is on disk.
            reply = await asyncio.to_thread(ParkedBytes, result.data, self.work_dir)
            del result
            fit = functools.partial(
                _fit_parked,
                reply,
                original=original,
                requested_ratio=ratio,
                tolerance=self.aspect_tolerance,
                keep=request.print_pixels,
            )
            page: asyncio.Future[bytes]
            try:
                if with_preview:
                    preview = await self.pictures.run(
                        _preview,
                        reply,
                        original=original,
                        requested_ratio=ratio,
                        tolerance=self.aspect_tolerance,
                        keep=request.print_pixels,
                    )
                    with deferred():  # after the judge inputs the order's next calls wait on
                        page = asyncio.ensure_future(self.pictures.run(fit, checked=True))
                else:
                    preview, page = None, finished(await self.pictures.run(fit))
            except OutputInvalid as exc:
                if redraw == OUTPUT_REDRAWS:
                    raise
                logger.info(
                    "unusable model output; drawing again: {}",
                    exc.detail,
                    model_name=model,
                    redraw=redraw + 1,
                )
                continue
            logger.info(
                "page drawn",
                model=model,
                redraws=redraw,
                softened=request.prompt == softened_prompt,
                seconds=round(time.monotonic() - started, 1),
            )
            return page, model, preview
        raise AssertionError("unreachable")

    async def _save(
        self, job: JobContext, number: int, path: str, checked: Checked, out: Path, usage: Usage
    ) -> None:
        """Upload, then checkpoint with the usage so far and the judge's verdict, in one write:
        once the row exists, the image is safely in storage, what it cost is on the item, and
        no later attempt judges or redraws it again. A drawing saved as a draft is in storage
        already: only the row is written."""
        if not checked.stored:
            await self.storage.upload(path, checked.jpeg, JPEG)
        await job.checkpoint(
            number,
            path,
            prompt_version=self.prompts.version,
            model=checked.model or None,
            usage=usage.as_dict(),
            verdict=checked.verdict,
            needs_review=checked.needs_review,
        )
        await asyncio.to_thread(out.write_bytes, checked.jpeg)

    async def _resumed(self, job: JobContext, number: int, draft: Row | None) -> Drawing | None:
        """An earlier attempt's draft of illustration ``number``, read from the item's own
        result path (never from a path in the row). When the stored bytes are not the recorded
        drawing's, they are the next drawing, uploaded just before a crash and not yet recorded
        (migrations/021): that one is judged, one redraw later."""
        if draft is None:
            return None
        try:
            jpeg = await self.storage.download(result_path(job.item_id, number))
        except ObjectNotFound:
            logger.warning(
                "the draft of illustration {} is not in storage; drawing it again", number
            )
            return None
        redraws = int(draft["redraws"])
        if await asyncio.to_thread(_sha256, jpeg) != draft["sha256"]:
            redraws += 1
        logger.info("judging the drawing an earlier attempt saved", page=number, redraws=redraws)
        return Drawing(finished(jpeg), str(draft.get("model") or ""), redraws)

    def _drafting(self, job: JobContext, number: int, path: str, usage: Usage) -> Drafted:
        """Stores each drawing of illustration ``number`` as its draft while it is judged: the
        object first, then the row, so a row always names bytes that are in storage."""

        async def drafted(drawing: Drawing) -> None:
            jpeg = await drawing.page
            await self.storage.upload(path, jpeg, JPEG)
            await job.save_draft(
                number,
                path,
                redraws=drawing.redraws,
                model=drawing.model or None,
                sha256=await asyncio.to_thread(_sha256, jpeg),
                usage=usage.as_dict(),
            )

        return drafted

    async def photo_part(self, data: bytes) -> ImagePart:
        """An uploaded photo as the model gets it: validated and normalized (``PhotoInvalid``
        when it is not a usable photo), then downscaled, in one ``PictureWork`` job: a phone's
        12-megapixel photo is 36 MB decoded, and orders start together."""
        return await self.pictures.run(_photo_input, data)

    async def model_part(self, image: Image.Image) -> ImagePart:
        """An image as the model is sent it: downscaled to ``AI_INPUT_MAX_SIDE`` and re-encoded."""
        return await self.pictures.run(_model_input, image)

    async def check_ready(self) -> str | None:
        """Check the models again (the daemon calls this while ``ready_problem`` is set)."""
        self.ready_problem = await check_ai(self.ai)
        return self.ready_problem

    async def aclose(self) -> None:
        """Close what the factory handed over: the AI client and storage it built itself."""
        await self._resources.aclose()


def _catalog_entry(context: ItemContext) -> tuple[Row, list[Row]]:
    if context.book is None:
        raise BookNotFound(f"book {context.item.get('book_id')} does not exist")
    if not context.pages:
        raise BookHasNoPages(f"book {context.book['id']} has no pages")
    return context.book, sorted(context.pages, key=lambda p: int(p["page_number"]))


def _box(value: object) -> tuple[float, float, float, float] | None:
    """The catalog's character box as fractions, or None when absent or malformed."""
    if not isinstance(value, dict):
        return None
    try:
        box = tuple(float(value[k]) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError):
        return None
    x, y, w, h = box
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x and 0 < h <= 1 - y):
        return None
    return x, y, w, h


def _ratio(size: tuple[int, int]) -> str:
    """The page's own ratio in pixels; the adapter picks the nearest its model accepts."""
    return f"{size[0]}:{size[1]}"


def _model_input(image: Image.Image) -> ImagePart:
    return ImagePart(image_part_bytes(image, AI_INPUT_MAX_SIDE))


def _photo_input(data: bytes) -> ImagePart:
    return _model_input(normalize_photo(data))


def _page_inputs(data: bytes) -> PageInput:
    """What a page to draw keeps of its original: the checks' copy and the model input."""
    page = load_page_image(data)
    return Original.of(page), _model_input(page)


async def _input_key(path: str, data: bytes) -> tuple[str, bytes]:
    """``PageInputs``' key of a catalog file: its object key and the digest of its bytes."""
    return path, await asyncio.to_thread(lambda: hashlib.sha256(data).digest())


def _part_of(source: Path | bytes) -> ImagePart:
    """A drawn image (a file, or the bytes of one) as the model is sent it."""
    return ImagePart(model_input_file(source, AI_INPUT_MAX_SIDE))


def _fit_parked(reply: ParkedBytes, **fit: Any) -> bytes:
    """``fit_output`` of a parked reply, its last reader."""
    return fit_output(reply.take(), **fit)


def _preview(
    reply: ParkedBytes,
    *,
    original: Original,
    requested_ratio: str | None,
    tolerance: float,
    keep: tuple[int, int] | None,
) -> _Preview:
    """A model's reply checked (``check_output``), and the page it becomes as the judge's input
    (``_JudgeInputs``) and as its screen copy, both made from the reply itself."""
    checked = check_output(
        reply.read(),
        original=original,
        requested_ratio=requested_ratio,
        tolerance=tolerance,
        preview_side=AI_INPUT_MAX_SIDE,
        keep=keep,
        screen_side=SCREEN_MAX_SIDE,
    )
    return _Preview(ImagePart(to_jpeg(checked.preview)), checked.screen)


def _is_made(page: asyncio.Future[bytes], source: Path | bytes) -> bool:
    """Whether ``source`` is the JPEG ``page`` was made as."""
    return (
        page.done()
        and not page.cancelled()
        and page.exception() is None
        and page.result() == source
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _download_to(storage: BlobStorage, path: str, out: Path) -> None:
    data = await storage.download(path)
    await asyncio.to_thread(out.write_bytes, data)
