"""The app's side of the contract (docs/app.md): Realtime membership, stable step codes, result
URLs that are re-signed before they die, the owner's own signing, the schema reload after
``migrate`` and the Supabase CLI layout of the migrations."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import psycopg
import pytest

from monitor.cli import main
from monitor.config import ConfigError, Settings
from monitor.daemon import Monitor
from monitor.metrics import Metrics
from monitor.migrate import MIGRATIONS_DIR, migrate
from monitor.storage.local import LocalStorage
from monitor.storage.supabase import SupabaseStorage
from monitor.store.base import OrderStore
from monitor.store.postgres import PostgresStore
from monitor.supabase_client import create_supabase_client
from monitor.supabase_migrations import SUPABASE_MIGRATIONS_DIR, differences, export, render
from monitor.url_refresh import refresh_expiring_urls
from processors.contract import StepCode
from processors.links import sign_results
from testkit.fakes.storage_server import FakeStorageServer
from tests.support.factories import insert_book, insert_item, insert_order, item_row
from tests.support.pipeline_env import PipelineEnv
from tests.support.processors import recording

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")

APP_DOC = Path(__file__).resolve().parents[2] / "docs" / "app.md"
CONTRACT_MIGRATION = MIGRATIONS_DIR / "012_app_contract.sql"
REALTIME_TABLES = {"order_items", "notifications"}
DAY = 24 * 3600


def realtime_tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "select tablename from pg_publication_tables"
        " where pubname = 'supabase_realtime' and schemaname = 'public'"
    )
    return {r[0] for r in rows.fetchall()}


# --- Realtime ------------------------------------------------------------------------------


def test_after_migrate_both_tables_are_in_the_realtime_publication(db: psycopg.Connection) -> None:
    assert realtime_tables(db) == REALTIME_TABLES


def test_running_the_migration_again_changes_nothing(db: psycopg.Connection) -> None:
    before = db.execute("select count(*) from pg_publication").fetchone()
    db.execute(CONTRACT_MIGRATION.read_text().encode())  # the whole file, once more
    assert realtime_tables(db) == REALTIME_TABLES
    assert db.execute("select count(*) from pg_publication").fetchone() == before


async def test_supabase_without_the_publication_is_not_an_error(empty_database_url: str) -> None:
    """Supabase owns its publication: where its realtime schema exists and the publication does
    not, migrate neither creates one nor fails."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("create schema realtime")
    await migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select count(*) from pg_publication").fetchone()[0] == 0
        assert conn.execute("select count(*) from order_items").fetchone()[0] == 0


# --- schema reload -------------------------------------------------------------------------


def pgrst_messages(listener: psycopg.Connection, received: list[str]) -> list[str]:
    listener.execute("select 1")  # a round trip: notifications sent before it have arrived
    return received


async def test_migrate_tells_postgrest_to_reload_its_schema(empty_database_url: str) -> None:
    received: list[str] = []
    with psycopg.connect(empty_database_url, autocommit=True) as listener:
        listener.add_notify_handler(lambda n: received.append(n.payload))
        listener.execute("listen pgrst")
        assert await migrate(empty_database_url)
        assert pgrst_messages(listener, received) == ["reload schema"]
        # Nothing applied, nothing to reload.
        assert await migrate(empty_database_url) == []
        assert pgrst_messages(listener, received) == ["reload schema"]


# --- step codes ----------------------------------------------------------------------------


def step_code_vocabulary(conn: psycopg.Connection) -> set[str]:
    """Every value the database accepts in current_step_code (its check constraint)."""
    definition = conn.execute(
        "select pg_get_constraintdef(oid) from pg_constraint"
        " where conname = 'order_items_current_step_code_check'"
    ).fetchone()[0]
    return set(re.findall(r"'([a-z_]+)'", definition))


def documented_codes() -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", APP_DOC.read_text(encoding="utf-8")))


def test_every_step_code_is_allowed_by_the_database_and_documented(db: psycopg.Connection) -> None:
    vocabulary = step_code_vocabulary(db)
    assert {code.value for code in StepCode} <= vocabulary
    assert vocabulary - documented_codes() == set()


def error_codes_in_source() -> set[str]:
    """Every error_code the daemon can write: class and keyword ``code`` literals in the Python
    packages, and the codes the queue functions fail items with."""
    root = Path(__file__).resolve().parents[2]
    codes: set[str] = set()
    for package in ("processors", "monitor"):
        for path in (root / package).rglob("*.py"):
            codes |= set(re.findall(r'\bcode(?:\s*:\s*str)?\s*=\s*"([a-z_]+)"', path.read_text()))
    for path in MIGRATIONS_DIR.glob("*.sql"):
        codes |= set(
            re.findall(r"_fail_order_item_terminal\(\s*\w+,\s*'([a-z_]+)'", path.read_text())
        )
    return codes


def test_every_error_code_is_documented_for_the_app() -> None:
    codes = error_codes_in_source()
    assert {"internal_error", "photo_rejected", "max_attempts", "order_not_paid"} <= codes
    assert codes - documented_codes() == set()


@pytest.fixture
def step_log(db: psycopg.Connection) -> None:
    """Every (status, code, prose, pages_done) an item goes through, as a Realtime subscriber
    would see the row change."""
    db.execute(
        "create table step_log (n serial, item uuid, status text, code text, step text,"
        " pages_done int)"
    )
    db.execute("""create function log_step() returns trigger language plpgsql as $$
                  begin
                      if new.current_step is distinct from old.current_step
                         or new.current_step_code is distinct from old.current_step_code then
                          insert into step_log (item, status, code, step, pages_done)
                          values (new.id, new.generation_status, new.current_step_code,
                                  new.current_step, new.pages_done);
                      end if;
                      return null;
                  end $$""")
    db.execute(
        "create trigger log_step after update on order_items"
        " for each row execute function log_step()"
    )


def logged(db: psycopg.Connection, item: str) -> list[tuple]:
    return db.execute(
        "select status, code, step, pages_done from step_log where item = %s order by n", [item]
    ).fetchall()


@pytest.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[PipelineEnv]:
    async with PipelineEnv.open(database_url, tmp_path) as environment:
        yield environment


async def test_the_pipeline_writes_a_code_with_every_step(
    env: PipelineEnv, db: psycopg.Connection, step_log: None
) -> None:
    book = await env.add_book(pages=3, without_character=())
    item = await env.add_item(book.id)
    assert await env.run_once(await env.processor()) == 1

    steps = logged(db, item)
    codes = [code for _, code, _, _ in steps]
    assert codes[:3] == ["starting", "analyzing", "drawing_cover"]
    assert codes[-3:] == ["binding", "uploading", "completed"]
    pages = [(step, done) for _, code, step, done in steps if code == "drawing_page"]
    assert [step for step, _ in pages] == [f"Drawing page {n} of 3" for n in (1, 2, 3)]
    # pages_done counts saved pages, so it is never behind the prose.
    assert all(done >= int(step.split()[2]) for step, done in pages)
    assert item_row(db, item)["pages_total"] == 3


async def test_queue_transitions_write_their_codes(
    store: OrderStore, db: psycopg.Connection, step_log: None
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    await store.claim("w1", 1, 60)
    await store.fail(
        item,
        "w1",
        error_code="ai_unavailable",
        error_message="later",
        retryable=True,
        backoff_base_seconds=0,
        backoff_max_seconds=0,
    )
    await store.claim("w1", 1, 60)
    await store.release(item, "w1")
    await store.claim("w1", 1, 60)
    assert await store.expire_leases_of("w1") == 1
    await store.claim("w2", 1, 60)
    await store.fail(item, "w2", error_code="photo_rejected", error_message="no", retryable=False)
    assert (await store.retry_failed(item)).value == "ok"
    await store.claim("w3", 1, 60)
    await store.set_progress(item, "w3", 50, "Drawing page 1 of 2", step_code="drawing_page")
    await store.set_progress(item, "w3", 60, "Something without a code")
    await store.complete(item, "w3", pdf_path="p", pdf_url="u", cover_path="c", cover_url="cu")
    assert [(status, code) for status, code, _, _ in logged(db, item)] == [
        ("processing", "starting"),
        ("pending", "waiting_to_retry"),
        ("processing", "starting"),
        ("pending", "waiting_to_resume"),
        ("processing", "starting"),
        ("processing", "waiting_to_resume"),  # a restarted worker let go of it
        ("processing", "starting"),
        ("failed", "failed"),
        ("pending", "waiting_to_start"),
        ("processing", "starting"),
        ("processing", "drawing_page"),
        ("processing", None),  # no code: none rather than a stale one
        ("completed", "completed"),
    ]


# --- links that stay fresh -----------------------------------------------------------------


@pytest.fixture
async def storage_server() -> AsyncIterator[FakeStorageServer]:
    async with FakeStorageServer(buckets={"books": False}) as server:
        yield server


@pytest.fixture
async def signed_storage(storage_server: FakeStorageServer) -> AsyncIterator[SupabaseStorage]:
    async with httpx.AsyncClient(timeout=10) as http:
        client = await create_supabase_client(storage_server.url, storage_server.service_key, http)
        yield SupabaseStorage(client, "books", signed_url_ttl=7 * DAY)


def completed_item(
    db: psycopg.Connection,
    server: FakeStorageServer | None,
    *,
    expires_in: float | None,
    store_objects: bool = True,
) -> str:
    """A finished book whose URLs expire in ``expires_in`` seconds (None: never recorded)."""
    item = insert_item(db, book_id=insert_book(db))
    pdf, cover = f"generated/{item}/book.pdf", f"generated/{item}/cover.jpg"
    expiry = None if expires_in is None else datetime.now(UTC) + timedelta(seconds=expires_in)
    db.execute(
        """update order_items set generation_status = 'completed', progress = 100,
                         pdf_path = %s, cover_image_path = %s, pdf_url = 'https://old/pdf',
                         cover_image_url = 'https://old/cover', urls_expire_at = %s,
                         generated_at = now(), current_step = 'Your book is ready'
                   where id = %s""",
        [pdf, cover, expiry, item],
    )
    if server is not None and store_objects:
        server.put("books", pdf, b"%PDF-1.4 book", "application/pdf")
        server.put("books", cover, b"jpeg")
    return item


URL_COLUMNS = {"pdf_url", "cover_image_url", "urls_expire_at", "updated_at"}


def without(row: dict, columns: set[str]) -> dict:
    return {k: v for k, v in row.items() if k not in columns}


async def test_the_sweep_re_signs_only_urls_about_to_expire(
    store: OrderStore,
    db: psycopg.Connection,
    storage_server: FakeStorageServer,
    signed_storage: SupabaseStorage,
) -> None:
    due = completed_item(db, storage_server, expires_in=3600)
    unknown = completed_item(db, storage_server, expires_in=None)
    fresh = completed_item(db, storage_server, expires_in=6 * DAY)
    before = {item: item_row(db, item) for item in (due, unknown, fresh)}

    assert await refresh_expiring_urls(store, signed_storage, margin_seconds=DAY) == 2

    for item in (due, unknown):
        row = item_row(db, item)
        # Nothing but the URL columns changed: no personal data, no status, no paths.
        assert without(row, URL_COLUMNS) == without(before[item], URL_COLUMNS)
        assert row["urls_expire_at"] > datetime.now(UTC) + timedelta(days=6)
        for column, path in (
            ("pdf_url", row["pdf_path"]),
            ("cover_image_url", row["cover_image_path"]),
        ):
            url = httpx.URL(row[column])
            claims = storage_server.token_claims(url.params["token"])
            assert claims["url"] == f"books/{path}"
            # The recorded expiry is never later than the token's.
            assert row["urls_expire_at"].timestamp() <= claims["exp"]
            # ... and the URL opens, without the service key, as the app opens it.
            async with httpx.AsyncClient() as app:
                assert (await app.get(str(url))).status_code == 200
    assert item_row(db, fresh) == before[fresh]
    # A second sweep finds nothing left to do.
    assert await refresh_expiring_urls(store, signed_storage, margin_seconds=DAY) == 0


async def test_the_sweep_works_in_bounded_batches_and_skips_what_it_cannot_sign(
    store: OrderStore,
    db: psycopg.Connection,
    storage_server: FakeStorageServer,
    signed_storage: SupabaseStorage,
) -> None:
    items = [completed_item(db, storage_server, expires_in=60) for _ in range(5)]
    gone = completed_item(db, storage_server, expires_in=-60, store_objects=False)  # soonest
    # Results outside the item's own folder are never signed by the sweep.
    foreign = completed_item(db, storage_server, expires_in=60)
    db.execute(
        "update order_items set pdf_path = %s where id = %s",
        [f"generated/{items[0]}/book.pdf", foreign],
    )
    foreign_before = item_row(db, foreign)

    assert await refresh_expiring_urls(store, signed_storage, margin_seconds=DAY, batch=2) == 5
    for item in items:
        assert item_row(db, item)["pdf_url"].startswith(storage_server.url)
    assert item_row(db, gone)["pdf_url"] == "https://old/pdf"
    assert item_row(db, foreign) == foreign_before


async def test_urls_that_never_expire_are_left_alone(
    store: OrderStore, db: psycopg.Connection, tmp_path: Path
) -> None:
    item = completed_item(db, None, expires_in=None)
    before = item_row(db, item)
    assert await refresh_expiring_urls(store, LocalStorage(tmp_path), margin_seconds=DAY) == 0
    assert item_row(db, item) == before


async def test_completion_records_when_the_urls_expire(
    store: OrderStore,
    db: psycopg.Connection,
    storage_server: FakeStorageServer,
    signed_storage: SupabaseStorage,
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    pdf, cover = f"generated/{item}/book.pdf", f"generated/{item}/cover.jpg"
    storage_server.put("books", pdf, b"%PDF-1.4")
    storage_server.put("books", cover, b"jpeg")
    await store.claim("w", 1, 60)
    links = await sign_results(signed_storage, pdf, cover)
    assert await store.complete(
        item,
        "w",
        pdf_path=pdf,
        pdf_url=links.pdf_url,
        cover_path=cover,
        cover_url=links.cover_url,
        urls_expire_at=links.expires_at,
    )
    row = item_row(db, item)
    assert row["urls_expire_at"] == links.expires_at
    token = httpx.URL(row["pdf_url"]).params["token"]
    assert links.expires_at is not None
    assert links.expires_at.timestamp() <= storage_server.token_claims(token)["exp"]
    # Local storage's URLs do not expire, and no expiry is recorded.
    assert (await sign_results(LocalStorage(Path("/nonexistent")), pdf, cover)).expires_at is None


def test_a_margin_as_long_as_the_url_lifetime_is_refused() -> None:
    env = {
        "DATABASE_URL": "postgresql://localhost/books",
        "AI_PROVIDER": "local",
        "SUPABASE_URL": "https://x.supabase.co",
        "SUPABASE_SERVICE_ROLE_KEY": "k",
        "SIGNED_URL_TTL_SECONDS": "3600",
        "SIGNED_URL_REFRESH_MARGIN_SECONDS": "3600",
    }
    with pytest.raises(ConfigError, match="SIGNED_URL_REFRESH_MARGIN_SECONDS"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "STORAGE_PUBLIC": "true"}).storage_public


# --- the owner signs their own book --------------------------------------------------------


@contextmanager
def acting_as(conn: psycopg.Connection, role: str, user_id: str | None = None) -> Iterator[None]:
    """One request as PostgREST and Storage run it: the role plus the JWT claims."""
    claims = {"role": role} | ({"sub": user_id} if user_id else {})
    with conn.transaction(force_rollback=True):
        conn.execute(f"set local role {role}")
        conn.execute("select set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])
        yield


def can_sign(conn: psycopg.Connection, name: str) -> bool:
    """Whether Storage would sign ``name`` for the caller: createSignedUrl needs SELECT on the
    object's storage.objects row under the caller's RLS, and answers "Object not found" when the
    policies hide it (https://supabase.com/docs/reference/javascript/storage-from-createsignedurl:
    "objects table permissions: select")."""
    return conn.execute(
        "select exists (select 1 from storage.objects where bucket_id = 'books' and name = %s)",
        [name],
    ).fetchone()[0]


async def test_the_owner_may_sign_their_own_book_and_nobody_else(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        # The part of Supabase's storage schema that its policies run on.
        conn.execute("create schema storage")
        conn.execute("grant usage on schema storage to anon, authenticated, service_role")
        conn.execute(
            "create table storage.buckets (id text primary key, name text,"
            " public boolean default false)"
        )
        conn.execute(
            "create table storage.objects (id uuid primary key default"
            " gen_random_uuid(), bucket_id text, name text)"
        )
        conn.execute("alter table storage.objects enable row level security")
        conn.execute("grant select, insert on storage.objects to anon, authenticated")
    await migrate(empty_database_url)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(empty_database_url, autocommit=True) as db:
        book = insert_book(db, pages=1)
        item = insert_item(db, book_id=book, order_id=insert_order(db, user_id=alice))
        names = [f"generated/{item}/book.pdf", f"generated/{item}/cover.jpg"]
        for name in names:
            db.execute("insert into storage.objects (bucket_id, name) values ('books', %s)", [name])
    with psycopg.connect(empty_database_url) as app:
        for name in names:
            with acting_as(app, "authenticated", alice):
                assert can_sign(app, name)
            with acting_as(app, "authenticated", bob):
                assert not can_sign(app, name)
            with acting_as(app, "anon"):
                assert not can_sign(app, name)


# --- the Supabase CLI layout ---------------------------------------------------------------


def test_supabase_migrations_are_the_exported_migrations() -> None:
    assert differences() == [], "run: python run_monitor.py export-migrations"
    assert main(["export-migrations", "--check"]) == 0
    names = sorted(p.name for p in SUPABASE_MIGRATIONS_DIR.glob("*.sql"))
    # <timestamp>_<name>.sql, in the order of migrations/.
    assert [n.split("_", 1)[1] for n in names] == [
        p.name.split("_", 1)[1] for p in sorted(MIGRATIONS_DIR.glob("*.sql"))
    ]
    assert all(re.fullmatch(r"\d{14}_[a-z0-9_]+\.sql", n) for n in names)
    assert names == sorted(names, key=lambda n: n[:14])


def test_a_changed_migration_fails_the_check(tmp_path: Path) -> None:
    source = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, source)
    with (source / "002_queue.sql").open("a") as f:
        f.write("\n-- a change\n")
    (source / "099_new.sql").write_text("select 1;\n")
    assert differences(source) == ["20240101000200_queue.sql", "20240101013900_new.sql"]


def test_export_writes_its_own_files_and_leaves_the_apps_alone(tmp_path: Path) -> None:
    target = tmp_path / "supabase" / "migrations"
    target.mkdir(parents=True)
    own = target / "20990101000000_the_apps_own.sql"
    own.write_text("create table app_things (id int);\n")
    written = export(target=target)
    assert sorted(written) == sorted(render())
    assert differences(target=target) == []
    assert own.read_text() == "create table app_things (id int);\n"
    assert export(target=target) == []  # stable: a second run writes nothing


async def test_an_exported_database_needs_nothing_from_migrate(empty_database_url: str) -> None:
    """``supabase db push`` applies the exported files in order; ``migrate`` then finds each
    one recorded and applies nothing."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        for name, text in sorted(render().items()):
            with conn.transaction():
                conn.execute(text.encode())
    assert await migrate(empty_database_url) == []


async def test_once_ends_with_the_sweep(
    database_url: str,
    db: psycopg.Connection,
    storage_server: FakeStorageServer,
    signed_storage: SupabaseStorage,
) -> None:
    """``run_monitor.py once`` re-signs what is due after the queue is empty (``run`` schedules
    the same sweep hourly)."""
    due = completed_item(db, storage_server, expires_in=60)
    settings = Settings.from_env({"DATABASE_URL": database_url, "AI_PROVIDER": "local"})
    store = PostgresStore(database_url)
    monitor = Monitor(
        settings,
        store,
        recording(settings, Metrics(), signed_storage),
        url_refresh=partial(refresh_expiring_urls, store, signed_storage, margin_seconds=DAY),
    )
    assert await monitor.run_once() == 0
    assert item_row(db, due)["pdf_url"].startswith(storage_server.url)
