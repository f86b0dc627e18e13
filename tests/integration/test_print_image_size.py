"""``IMAGE_SIZE=auto``: every picture is asked for at the size the book's print profile needs.

Real pipeline, fake Gemini, real Postgres. The fake records each request's
``generationConfig.imageConfig`` as the SDK sent it; the sizes are read from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from tests.support.factories import item_row
from tests.support.pipeline_env import PipelineEnv

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")


@pytest.fixture
async def env(database_url: str, tmp_path) -> AsyncIterator[PipelineEnv]:
    async with PipelineEnv.open(database_url, tmp_path) as environment:
        yield environment


async def sizes_asked(
    env: PipelineEnv,
    db: psycopg.Connection,
    *,
    trim_in: float = 8.5,
    ppi: int | None = None,
    **settings: str,
) -> list[str | None]:
    """Draw one square book (cover + two pages with a hero) and return the ``imageSize`` of
    every image request, in order (None: not sent)."""
    book = await env.add_book(pages=2, without_character=())
    db.execute(
        "update books set trim_width_in = %s, trim_height_in = %s, print_ppi = %s where id = %s",
        [trim_in, trim_in, ppi, book.id],
    )
    item = await env.add_item(book.id)
    assert await env.run_once(await env.processor(**settings)) == 1
    row = item_row(db, item)
    assert row["generation_status"] == "completed", (row["error_code"], row["error_message"])
    configs = [
        r.generation_config["imageConfig"]
        for r in env.fake.generate_requests()
        if "imageConfig" in r.generation_config
    ]
    assert len(configs) == 3  # the cover and two pages
    return [c.get("imageSize") for c in configs]


async def test_an_8_5_inch_book_at_300_ppi_is_asked_for_4k(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    # 8.5 in + 2 x 0.125 in bleed at 300 PPI is 2625 px a side: 2K's 2048 px falls short.
    assert await sizes_asked(env, db) == ["4K", "4K", "4K"]


async def test_a_small_book_is_asked_for_no_more_than_it_prints(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    # 4 in + bleed at 300 PPI is 1275 px: 2K (2048) reaches it, 1K (1024) does not.
    assert await sizes_asked(env, db, trim_in=4) == ["2K", "2K", "2K"]


async def test_the_books_own_ppi_decides(env: PipelineEnv, db: psycopg.Connection) -> None:
    # 3 in + bleed at the book's 300 PPI is 975 px: 1K is enough, although the setting says 600.
    assert await sizes_asked(env, db, trim_in=3, ppi=300, PRINT_PPI="600") == ["1K"] * 3


async def test_a_book_no_size_reaches_gets_the_models_largest(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    # 12 in at 600 PPI is 7350 px: more than 4K gives; the print files upscale the rest.
    assert await sizes_asked(env, db, trim_in=12, ppi=600) == ["4K", "4K", "4K"]


async def test_a_model_without_sizes_is_sent_none(env: PipelineEnv, db: psycopg.Connection) -> None:
    env.fake.models.add(env.fake.NO_SIZE_IMAGE_MODEL)  # as while gemini-2.5-flash-image ran
    sizes = await sizes_asked(env, db, GEMINI_IMAGE_MODEL=env.fake.NO_SIZE_IMAGE_MODEL)
    assert sizes == [None, None, None]


@pytest.mark.parametrize("size", ["1K", "2K"])
async def test_an_explicit_image_size_is_honoured(
    env: PipelineEnv, db: psycopg.Connection, size: str
) -> None:
    assert await sizes_asked(env, db, IMAGE_SIZE=size) == [size] * 3
