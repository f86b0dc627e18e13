"""A personalized cover without an order: ``POST /generate-cover`` on the status server and the
``generate-cover`` command, through the real pipeline code (processors/cover_service.py over
the daemon's ``BookProcessor``), the real google-genai client against the local Gemini fake, a
real Postgres and local storage.

The fake answers every call with 1290 prompt and 1150 candidate tokens (its usageMetadata), so
a cover without the quality judge costs two analyses and one image.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from monitor.daemon import Monitor
from monitor.metrics import Metrics
from monitor.server import create_app
from monitor.store.postgres import PostgresStore
from testkit.daemon_process import REPO
from testkit.fakes.gemini_server import FakeGemini, RecordedRequest, candidate_response, succeed
from tests.support.pipeline_env import PipelineEnv, draw_child_photo, draw_scene

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")
ADMIN_TOKEN = "cover-admin-token-51f0"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
INPUT_TOKENS, OUTPUT_TOKENS = 1290, 1150
ANALYSIS_PRICE, IMAGE_PRICE = (1.0, 4.0), (0.5, 60.0)
CHILD = {"name": "Mia", "age": 5, "gender": "girl"}

Serve = Callable[..., Awaitable[tuple[Monitor, TestClient]]]


def cost(price: tuple[float, float], calls: int) -> float:
    return calls * (INPUT_TOKENS * price[0] + OUTPUT_TOKENS * price[1]) / 1_000_000


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def spend(text: str, kind: str, model: str) -> float:
    prefix = f'book_monitor_ai_spend_usd_total{{kind="{kind}",model="{model}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split(" ")[1]) if lines else 0.0


@pytest.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[PipelineEnv]:
    async with PipelineEnv.open(database_url, tmp_path) as environment:
        yield environment


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    """A price table for the fake's models (the defaults leave them unpriced)."""
    path = tmp_path / "prices.json"
    fields = ("input_per_million", "output_per_million")
    path.write_text(
        json.dumps(
            {
                "models": {
                    FakeGemini.ANALYSIS_MODEL: dict(zip(fields, ANALYSIS_PRICE)),
                    FakeGemini.IMAGE_MODEL: dict(zip(fields, IMAGE_PRICE)),
                }
            }
        )
    )
    return path


@pytest.fixture
async def serve(env: PipelineEnv, prices: Path) -> AsyncIterator[Serve]:
    """The status server of a daemon whose processor is the factory's (not started: the endpoint
    needs the processor, not the claim loop)."""
    clients: list[TestClient] = []
    monitors: list[Monitor] = []

    async def start(*, processor: bool = True, **overrides: str) -> tuple[Monitor, TestClient]:
        settings = env.settings(AI_PRICES_FILE=str(prices), **overrides)
        built = await env.factory_processor(AI_PRICES_FILE=str(prices), **overrides)
        metrics = built.metrics
        assert isinstance(metrics, Metrics)
        monitor = Monitor(
            settings,
            PostgresStore(env.database_url),
            built if processor else None,
            metrics=metrics,
        )
        await monitor.store.open()
        client = TestClient(TestServer(create_app(monitor)))
        await client.start_server()
        clients.append(client)
        monitors.append(monitor)
        return monitor, client

    yield start
    for client in clients:
        await client.close()
    for monitor in monitors:
        await monitor.store.close()


def decoded(jpeg: bytes) -> Image.Image:
    with Image.open(io.BytesIO(jpeg)) as img:
        assert img.format == "JPEG"
        return img.convert("RGB")


# --- the endpoint --------------------------------------------------------------------------


async def test_json_like_the_node_original_returns_the_cover_and_counts_its_cost(
    env: PipelineEnv, serve: Serve
) -> None:
    monitor, client = await serve(ADMIN_TOKEN=ADMIN_TOKEN)
    cover = draw_scene(0)
    response = await client.post(
        "/generate-cover",
        json={
            "originalCoverImage": b64(cover),
            "childImage": "data:image/jpeg;base64," + b64(draw_child_photo()),
            "bookData": {"name": "The Little Lighthouse", "genre": "adventure"},
            "childData": CHILD,
        },
        headers=AUTH,
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["success"] is True and body["mimeType"] == "image/jpeg"
    assert body["model"] == FakeGemini.IMAGE_MODEL and body["needsReview"] is False
    image = decoded(base64.b64decode(body["coverImage"]))
    assert image.width == image.height  # the square cover's shape, checked by fit_output
    # Both analyses and one drawing, priced, returned and in the spend counter.
    usage = body["usage"]
    assert usage["calls"] == 3 and usage["images"] == 1
    expected = cost(ANALYSIS_PRICE, 2) + cost(IMAGE_PRICE, 1)
    assert usage["cost_usd"] == pytest.approx(expected, abs=1e-6)
    exposition = await (await client.get("/metrics")).text()
    assert spend(exposition, "generate_image", FakeGemini.IMAGE_MODEL) == pytest.approx(
        cost(IMAGE_PRICE, 1)
    )
    assert spend(exposition, "analyze", FakeGemini.ANALYSIS_MODEL) == pytest.approx(
        cost(ANALYSIS_PRICE, 2)
    )
    # The drawing call carried the daemon's cover prompt with the child as JSON data.
    (drawing,) = [r for r in env.fake.generate_requests() if r.schema_kind is None]
    assert "<child_data>" in drawing.texts[0] and '"name": "Mia"' in drawing.texts[0]

    # The same cover again: its analysis comes from this process's cache, not a new call.
    again = await client.post(
        "/generate-cover",
        json={"originalCoverImage": b64(cover), "childImage": b64(draw_child_photo())},
        headers=AUTH,
    )
    assert again.status == 422  # no name: the child's details are checked like an order's
    assert (await again.json())["error"] == "invalid_child_data"
    before = len(env.fake.generate_requests())
    again = await client.post(
        "/generate-cover",
        json={
            "originalCoverImage": b64(cover),
            "childImage": b64(draw_child_photo()),
            "childData": CHILD,
        },
        headers=AUTH,
    )
    assert again.status == 200
    assert (await again.json())["usage"]["calls"] == 2  # child analysis and drawing only
    assert len(env.fake.generate_requests()) == before + 2


async def test_multipart_with_a_book_id_returns_the_jpeg_with_usage_headers(
    env: PipelineEnv, serve: Serve, db: psycopg.Connection
) -> None:
    book = await env.add_book(pages=1, without_character=())
    _, client = await serve(ADMIN_TOKEN=ADMIN_TOKEN)
    form = FormData()
    form.add_field("bookId", book.id)
    form.add_field("childImage", draw_child_photo(), filename="photo.jpg")
    form.add_field("childName", "Noah")
    form.add_field("childAge", "6")
    form.add_field("childGender", "boy")
    response = await client.post("/generate-cover", data=form, headers=AUTH)
    assert response.status == 200, await response.text()
    assert response.content_type == "image/jpeg"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Cover-Model"] == FakeGemini.IMAGE_MODEL
    usage = json.loads(response.headers["X-AI-Usage"])
    assert usage["calls"] == 3 and usage["images"] == 1
    decoded(await response.read())
    # The catalog cover was sent (not something else), and its analysis is in the daemon's
    # cache for every order of the book; nothing was written for an order.
    assert env.requests_for("cover") and env.requests_for("cover_analysis")
    assert (
        db.execute("select count(*) from book_analyses where book_id = %s", [book.id]).fetchone()[0]
        == 1
    )
    assert db.execute("select count(*) from order_items").fetchone()[0] == 0

    unknown = FormData()
    unknown.add_field("bookId", str(uuid.uuid4()))
    unknown.add_field("childImage", draw_child_photo(), filename="photo.jpg")
    unknown.add_field("childName", "Noah")
    response = await client.post("/generate-cover", data=unknown, headers=AUTH)
    assert response.status == 404
    assert (await response.json())["error"] == "book_not_found"


@pytest.mark.parametrize(
    ("token", "headers", "status", "code"),
    [
        (ADMIN_TOKEN, {}, 401, "unauthorized"),
        (ADMIN_TOKEN, {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        ("", AUTH, 403, "admin_disabled"),
    ],
)
async def test_the_admin_token_is_required(
    env: PipelineEnv, serve: Serve, token: str, headers: dict[str, str], status: int, code: str
) -> None:
    _, client = await serve(ADMIN_TOKEN=token)
    response = await client.post(
        "/generate-cover",
        json={"originalCoverImage": b64(draw_scene(0)), "childImage": b64(draw_child_photo())},
        headers=headers,
    )
    assert response.status == status
    assert (await response.json())["error"] == code
    assert env.fake.generate_requests() == []  # nothing paid for


async def test_a_corrupt_photo_is_a_400_before_any_call(env: PipelineEnv, serve: Serve) -> None:
    _, client = await serve(ADMIN_TOKEN=ADMIN_TOKEN)
    for photo, message in ((b64(b"<html>not a photo</html>"), "photo"), ("%%%", "base64")):
        response = await client.post(
            "/generate-cover",
            json={
                "originalCoverImage": b64(draw_scene(0)),
                "childImage": photo,
                "childData": CHILD,
            },
            headers=AUTH,
        )
        body = await response.json()
        assert response.status == 400, body
        assert message in body["message"].lower()
    assert env.fake.generate_requests() == []


async def test_a_photo_without_exactly_one_face_is_a_422(env: PipelineEnv, serve: Serve) -> None:
    async def two_faces(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        answer = {**fake.analysis_json["child"], "face_count": 2}
        return candidate_response([{"text": json.dumps(answer)}])

    env.script.on("child_analysis", two_faces)
    _, client = await serve(ADMIN_TOKEN=ADMIN_TOKEN)
    response = await client.post(
        "/generate-cover",
        json={
            "originalCoverImage": b64(draw_scene(0)),
            "childImage": b64(draw_child_photo()),
            "childData": CHILD,
        },
        headers=AUTH,
    )
    body = await response.json()
    assert response.status == 422 and body["error"] == "photo_rejected"
    assert "exactly one" in body["message"]
    assert [r for r in env.fake.generate_requests() if r.schema_kind is None] == []  # no drawing


async def test_one_cover_at_a_time_per_process_then_429(env: PipelineEnv, serve: Serve) -> None:
    gate = asyncio.Event()

    async def held(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        await gate.wait()
        return await succeed()(fake, request)

    env.script.on("child_analysis", held)
    _, client = await serve(ADMIN_TOKEN=ADMIN_TOKEN, COVER_MAX_CONCURRENT="1")
    payload = {
        "originalCoverImage": b64(draw_scene(0)),
        "childImage": b64(draw_child_photo()),
        "childData": CHILD,
    }
    first = asyncio.ensure_future(client.post("/generate-cover", json=payload, headers=AUTH))
    while not any(r.schema_kind == "child" for r in env.fake.requests):
        await asyncio.sleep(0.05)
    second = await client.post("/generate-cover", json=payload, headers=AUTH)
    assert second.status == 429
    assert (await second.json())["error"] == "too_many_requests"
    assert "Retry-After" in second.headers
    gate.set()
    response = await first
    assert response.status == 200
    # The slot is free again.
    third = await client.post("/generate-cover", json=payload, headers=AUTH)
    assert third.status == 200


async def test_without_the_book_processor_the_endpoint_says_503(serve: Serve) -> None:
    _, client = await serve(processor=False, ADMIN_TOKEN=ADMIN_TOKEN)
    response = await client.post(
        "/generate-cover",
        json={"originalCoverImage": b64(draw_scene(0)), "childImage": b64(draw_child_photo())},
        headers=AUTH,
    )
    assert response.status == 503
    assert (await response.json())["error"] == "ai_not_ready"


# --- the command ---------------------------------------------------------------------------


async def generate_cover(env: PipelineEnv, *args: str, **overrides: str) -> tuple[int, str, str]:
    """``run_monitor.py generate-cover …`` as an operator runs it, with the daemon's settings."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "run_monitor.py"),
        "--env-file",
        os.devnull,
        "generate-cover",
        *args,
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), **env.environ(LOG_LEVEL="WARNING", **overrides)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_the_command_writes_the_cover_and_exits_0(
    env: PipelineEnv, tmp_path: Path, prices: Path, db: psycopg.Connection
) -> None:
    book = await env.add_book(pages=1, without_character=())
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(draw_child_photo())
    out = tmp_path / "cover.jpg"
    code, stdout, stderr = await generate_cover(
        env,
        book.id,
        str(photo),
        "--name",
        "Mia",
        "--age",
        "5",
        "--gender",
        "girl",
        "--out",
        str(out),
        "--json",
        AI_PRICES_FILE=str(prices),
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["out"] == str(out) and summary["model"] == FakeGemini.IMAGE_MODEL
    assert summary["usage"]["calls"] == 3
    assert summary["usage"]["cost_usd"] == pytest.approx(
        cost(ANALYSIS_PRICE, 2) + cost(IMAGE_PRICE, 1), abs=1e-6
    )
    image = decoded(out.read_bytes())
    assert image.width == image.height
    assert env.requests_for("cover")  # the catalog's cover was the base
    assert db.execute("select count(*) from order_items").fetchone()[0] == 0


async def test_the_command_exits_3_for_a_book_not_in_the_catalog(
    env: PipelineEnv, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(draw_child_photo())
    out = tmp_path / "cover.jpg"
    code, stdout, _ = await generate_cover(
        env, str(uuid.uuid4()), str(photo), "--name", "Mia", "--out", str(out), "--json"
    )
    assert code == 3
    assert json.loads(stdout)["error"] == "book_not_found"
    assert not out.exists()
    assert env.fake.generate_requests() == []


async def test_the_command_exits_2_for_a_corrupt_photo(env: PipelineEnv, tmp_path: Path) -> None:
    book = await env.add_book(pages=1, without_character=())
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "cover.jpg"
    code, _, stderr = await generate_cover(
        env, book.id, str(photo), "--name", "Mia", "--out", str(out)
    )
    assert code == 2 and "photo_invalid" in stderr
    assert not out.exists()
