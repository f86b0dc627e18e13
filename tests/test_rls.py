"""Row-level security and privileges (migrations 004/005) on a real Postgres, acting as Supabase
does: ``set local role`` to ``anon``/``authenticated``/``service_role`` plus the request's JWT
claims in ``request.jwt.claims``, which ``auth.uid()`` reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import errors

from monitor.migrate import migrate
from tests.factories import insert_book, insert_item, insert_order

TABLES = ("books", "book_pages", "orders", "order_items", "order_item_pages", "book_analyses",
          "notifications", "schema_migrations")


@contextmanager
def acting_as(conn: psycopg.Connection, role: str, user_id: str | None = None) -> Iterator[None]:
    """One request as PostgREST runs it: a transaction with the role and the JWT claims set.
    Rolled back at the end, so refused statements do not poison the next one."""
    claims = {"role": role} | ({"sub": user_id} if user_id else {})
    tx = conn.transaction(force_rollback=True)
    with tx:
        conn.execute(f"set local role {role}")
        conn.execute("select set_config('request.jwt.claims', %s, true)", [json.dumps(claims)])
        yield


@contextmanager
def refused(conn: psycopg.Connection) -> Iterator[None]:
    """The statement inside must be refused by the database (privilege or policy)."""
    with pytest.raises(errors.InsufficientPrivilege):
        with conn.transaction():  # a savepoint, so the outer request can go on
            yield


class World:
    """Two users, each with a paid order holding a finished item, page checkpoints and a
    notification, plus one unpaid order each."""

    def __init__(self, db: psycopg.Connection) -> None:
        self.book = insert_book(db, pages=2)
        self.users = [str(uuid.uuid4()), str(uuid.uuid4())]
        self.orders: list[str] = []
        self.pending_orders: list[str] = []
        self.items: list[str] = []
        self.notifications: list[str] = []
        for user in self.users:
            order = insert_order(db, user_id=user)
            item = insert_item(db, book_id=self.book, order_id=order)
            for page in (0, 1, 2):
                db.execute(
                    "insert into order_item_pages (order_item_id, page_number, image_path)"
                    " values (%s, %s, %s)", [item, page, f"generated/{item}/pages/{page:02d}.jpg"])
            note = db.execute(
                "insert into notifications (user_id, order_item_id, kind, title, body)"
                " values (%s, %s, 'book_ready', 'Ready', 'Your book is ready') returning id",
                [user, item]).fetchone()[0]
            self.orders.append(order)
            self.items.append(item)
            self.notifications.append(str(note))
            self.pending_orders.append(insert_order(db, user_id=user, paid=False))
        db.execute("insert into book_analyses (book_id, prompt_version, model, analysis)"
                   " values (%s, 'v1', 'm', '{}')", [self.book])


@pytest.fixture
def world(db: psycopg.Connection) -> World:
    return World(db)


@pytest.fixture
def app(database_url: str) -> Iterator[psycopg.Connection]:
    """A second connection, used the way PostgREST uses its pool: one transaction per request."""
    with psycopg.connect(database_url) as conn:
        yield conn


def ids(conn: psycopg.Connection, query: str) -> set[str]:
    return {str(r[0]) for r in conn.execute(query).fetchall()}


def test_every_table_of_the_schema_has_rls(db: psycopg.Connection) -> None:
    without = db.execute(
        """select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity
              and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                                and d.objid = c.oid and d.deptype = 'e')"""
    ).fetchall()
    assert without == []


def test_each_user_sees_only_their_own_rows(app: psycopg.Connection, world: World) -> None:
    for me, user in enumerate(world.users):
        with acting_as(app, "authenticated", user):
            assert ids(app, "select id from orders") == {world.orders[me], world.pending_orders[me]}
            assert ids(app, "select id from order_items") == {world.items[me]}
            assert ids(app, "select order_item_id from order_item_pages") == {world.items[me]}
            assert app.execute("select count(*) from order_item_pages").fetchone()[0] == 3
            assert ids(app, "select id from notifications") == {world.notifications[me]}
            # The catalog is readable by every signed-in user.
            assert ids(app, "select id from books") == {world.book}
            assert app.execute("select count(*) from book_pages").fetchone()[0] == 2
            with refused(app):
                app.execute("select * from book_analyses")
            with refused(app):
                app.execute("select * from schema_migrations")


def test_signed_in_without_a_user_id_sees_no_orders(app: psycopg.Connection, world: World) -> None:
    with acting_as(app, "authenticated"):
        for table in ("orders", "order_items", "order_item_pages", "notifications"):
            assert app.execute(f"select count(*) from {table}").fetchone()[0] == 0, table


@pytest.mark.parametrize("table", TABLES)
def test_anon_gets_nothing(app: psycopg.Connection, world: World, table: str) -> None:
    # Even with a user's id in the claims: the anon role itself has no privilege.
    with acting_as(app, "anon", world.users[0]):
        with refused(app):
            app.execute(f"select * from {table}")
        with refused(app):
            app.execute(f"delete from {table}")


FORBIDDEN_WRITES = {
    "set status": "update order_items set generation_status = 'completed'",
    "set pdf url": "update order_items set pdf_url = 'https://evil.example/book.pdf'",
    "set progress": "update order_items set progress = 100",
    "set attempts": "update order_items set attempts = 0",
    "set claim": "update order_items set claimed_by = 'me', lease_expires_at = now()",
    "set error": "update order_items set error_message = 'x'",
    "change photo": "update order_items set child_photo_path = 'uploads/x/y.jpg'",
    "delete item": "delete from order_items",
    "pay order": "update orders set payment_status = 'paid'",
    "new order": "insert into orders (user_id, payment_status) values (auth.uid(), 'paid')",
    "delete order": "delete from orders",
    "write checkpoint": "insert into order_item_pages (order_item_id, page_number, image_path)"
                        " select id, 9, 'x' from order_items",
    "delete checkpoint": "delete from order_item_pages",
    "notification text": "update notifications set body = 'phish'",
    "new notification": "insert into notifications (user_id, kind, title, body)"
                        " values (auth.uid(), 'k', 't', 'b')",
    "delete notification": "delete from notifications",
    "edit book": "update books set title = 'x'",
    "new book": "insert into books (title) values ('x')",
    "edit page": "update book_pages set image_path = 'x'",
    "cache analysis": "insert into book_analyses (book_id, prompt_version, model, analysis)"
                      " select id, 'v9', 'm', '{}' from books",
    "migrations": "delete from schema_migrations",
}


@pytest.mark.parametrize("statement", FORBIDDEN_WRITES.values(), ids=FORBIDDEN_WRITES.keys())
def test_forbidden_writes_are_refused(
    app: psycopg.Connection, db: psycopg.Connection, world: World, statement: str
) -> None:
    with acting_as(app, "authenticated", world.users[0]):
        with refused(app):
            app.execute(statement)
    row = db.execute("select generation_status, pdf_url, progress from order_items where id = %s",
                     [world.items[0]]).fetchone()
    assert row == ("pending", None, 0)


def test_app_inserts_a_pending_item_only_into_its_own_unpaid_order(
    app: psycopg.Connection, db: psycopg.Connection, world: World
) -> None:
    me, other = world.users
    insert = ("insert into order_items (order_id, book_id, child_name, child_age, child_gender,"
              " child_photo_path) values (%s, %s, 'Leo', 4, 'boy', %s) returning id")
    # Its own unpaid order: accepted, and every generation column keeps its default.
    with acting_as(app, "authenticated", me):
        item = app.execute(insert, [world.pending_orders[0], world.book, f"uploads/{me}/leo.jpg"]
                           ).fetchone()[0]
        row = app.execute(
            "select generation_status, attempts, progress, claimed_by, pdf_url from order_items"
            " where id = %s", [item]).fetchone()
        assert row == ("pending", 0, 0, None, None)
        # Someone else's order, and its own already paid order (that would be a free book).
        for order in (world.pending_orders[1], world.orders[1], world.orders[0]):
            with refused(app):
                app.execute(insert, [order, world.book, f"uploads/{me}/leo.jpg"])
        # Generation columns cannot be written on insert either.
        with refused(app):
            app.execute(
                "insert into order_items (order_id, book_id, generation_status, pdf_url)"
                " values (%s, %s, 'completed', 'https://evil.example/x.pdf')",
                [world.pending_orders[0], world.book])
        with refused(app):
            app.execute(
                "insert into order_items (order_id, book_id, attempts, claimed_by)"
                " values (%s, %s, 0, 'me')", [world.pending_orders[0], world.book])
    # force_rollback: nothing the app did in the block above persists.
    assert db.execute("select count(*) from order_items where order_id = %s",
                      [world.pending_orders[0]]).fetchone()[0] == 0


def test_app_marks_only_its_own_notifications_read(
    app: psycopg.Connection, world: World
) -> None:
    mine, theirs = world.notifications
    with acting_as(app, "authenticated", world.users[0]):
        assert app.execute("update notifications set read_at = now() where id = %s",
                           [mine]).rowcount == 1
        assert app.execute("update notifications set read_at = now() where id = %s",
                           [theirs]).rowcount == 0
        assert app.execute("update notifications set read_at = now()").rowcount == 1
        # Handing a notification to someone else is refused too.
        with refused(app):
            app.execute("update notifications set user_id = %s where id = %s",
                        [world.users[1], mine])


def functions_of_the_schema(db: psycopg.Connection) -> list[str]:
    rows = db.execute(
        """select p.oid::regprocedure::text from pg_proc p
             join pg_namespace n on n.oid = p.pronamespace
            where n.nspname = 'public' and p.prokind in ('f', 'p')
              and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass
                                and d.objid = p.oid and d.deptype = 'e')"""
    ).fetchall()
    return sorted(r[0] for r in rows)


def test_only_the_service_role_may_execute_the_functions(db: psycopg.Connection) -> None:
    functions = functions_of_the_schema(db)
    assert "claim_order_items(text,integer,integer)" in functions
    assert any(f.startswith("items_due_for_photo_deletion(") for f in functions)
    for function in functions:
        for role, allowed in (("anon", False), ("authenticated", False), ("public", False),
                              ("service_role", True)):
            if role == "public":
                granted = db.execute(
                    "select exists (select 1 from pg_proc p, aclexplode(coalesce(p.proacl,"
                    " acldefault('f', p.proowner))) a where p.oid = %s::regprocedure"
                    " and a.grantee = 0 and a.privilege_type = 'EXECUTE')", [function]
                ).fetchone()[0]
            else:
                granted = db.execute("select has_function_privilege(%s, %s, 'execute')",
                                     [role, function]).fetchone()[0]
            assert granted is allowed, (role, function)


QUEUE_CALLS = {
    "claim": "select * from claim_order_items('me', 10, 60)",
    "complete": "select complete_order_item(%(item)s, 'me', 'p', 'u', 'c', 'cu')",
    "fail": "select fail_order_item(%(item)s, 'me', 'x', 'y', false)",
    "heartbeat": "select heartbeat_order_item(%(item)s, 'me', 60)",
    "progress": "select set_order_item_progress(%(item)s, 'me', 100, 'done')",
    "checkpoint": "select checkpoint_order_item_page(%(item)s, 'me', 1, 'x')",
    "context": "select load_order_item_context(%(item)s, 'me')",
    "retry": "select retry_failed_order_item(%(item)s)",
    "depth": "select order_queue_depth()",
    "import": "select import_book('{\"title\": \"x\"}', '[]')",
    "paid order": "select create_paid_order_item(%(book)s, 'Mia', 5, 'girl', 'x')",
    "summary": "select order_item_summary(%(item)s)",
    "retention list": "select * from items_due_for_photo_deletion(0, 10)",
    "retention mark": "select mark_photo_deleted(%(item)s)",
    "migration": "select record_migration('999_evil.sql', 'x')",
}


@pytest.mark.parametrize("role", ["authenticated", "anon"])
@pytest.mark.parametrize("call", QUEUE_CALLS.values(), ids=QUEUE_CALLS.keys())
def test_app_users_cannot_call_the_queue_functions(
    app: psycopg.Connection, db: psycopg.Connection, world: World, role: str, call: str
) -> None:
    with acting_as(app, role, world.users[0]):
        with refused(app):
            app.execute(call, {"item": world.items[0], "book": world.book})
    assert db.execute("select generation_status, claimed_by from order_items where id = %s",
                      [world.items[0]]).fetchone() == ("pending", None)


def test_the_service_role_runs_the_queue(app: psycopg.Connection, world: World) -> None:
    """The daemon's Supabase path: PostgREST as service_role, which bypasses RLS."""
    with acting_as(app, "service_role"):
        claimed = ids(app, "select id from claim_order_items('w1', 10, 60)")
        assert claimed == set(world.items)
        item = world.items[0]
        assert app.execute("select complete_order_item(%s, 'w1', 'generated/p.pdf', 'u',"
                           " 'generated/c.jpg', 'cu')", [item]).fetchone()[0] is True
        assert app.execute("select generation_status from order_items where id = %s",
                           [item]).fetchone()[0] == "completed"
        assert app.execute("select count(*) from notifications").fetchone()[0] == 3


def test_the_app_sees_the_daemons_progress(
    app: psycopg.Connection, db: psycopg.Connection, world: World
) -> None:
    db.execute("select * from claim_order_items('w1', 10, 60)")
    db.execute("select set_order_item_progress(%s, 'w1', 40, 'Drawing page 1 of 2')",
               [world.items[0]])
    with acting_as(app, "authenticated", world.users[0]):
        assert app.execute("select generation_status, progress, current_step from order_items"
                           ).fetchall() == [("processing", 40, "Drawing page 1 of 2")]


async def test_supabase_objects_are_kept_and_storage_is_locked_down(
    empty_database_url: str,
) -> None:
    """On a database that looks like Supabase (an auth.uid() of its own, a storage schema), the
    migrations keep Supabase's function and add the storage policies."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("create schema auth")
        conn.execute("create function auth.uid() returns uuid language sql stable as"
                     " $$ select '00000000-0000-0000-0000-0000000000aa'::uuid $$")
        conn.execute("grant usage on schema auth to anon, authenticated, service_role")
        conn.execute("create schema storage")
        conn.execute("grant usage on schema storage to anon, authenticated, service_role")
        conn.execute("create table storage.buckets (id text primary key, name text,"
                     " public boolean default false)")
        conn.execute("create table storage.objects (id uuid primary key default"
                     " gen_random_uuid(), bucket_id text, name text)")
        conn.execute("alter table storage.objects enable row level security")
        conn.execute("grant select, insert on storage.objects to anon, authenticated")
    await migrate(empty_database_url)
    await migrate(empty_database_url)  # idempotent
    user = "00000000-0000-0000-0000-0000000000aa"
    with psycopg.connect(empty_database_url, autocommit=True) as db:
        body = db.execute("select prosrc from pg_proc p join pg_namespace n on n.oid ="
                          " p.pronamespace where n.nspname = 'auth' and proname = 'uid'"
                          ).fetchone()[0]
        assert "0000000000aa" in body  # Supabase's own auth.uid() was not replaced
        assert db.execute("select public from storage.buckets where id = 'books'"
                          ).fetchone()[0] is False
        book = insert_book(db, pages=1)
        mine = insert_item(db, book_id=book, order_id=insert_order(db, user_id=user))
        theirs = insert_item(db, book_id=book)
        other_user = str(uuid.uuid4())
        for name in (f"generated/{mine}/book.pdf", f"generated/{theirs}/book.pdf",
                     f"uploads/{user}/photo.jpg", f"uploads/{other_user}/photo.jpg",
                     "catalog/x/cover.jpg"):
            db.execute("insert into storage.objects (bucket_id, name) values ('books', %s)",
                       [name])
        db.execute("insert into storage.objects (bucket_id, name) values ('other', %s)",
                   [f"uploads/{user}/photo.jpg"])
    with psycopg.connect(empty_database_url) as app:
        with acting_as(app, "authenticated", user):
            visible = {(r[0], r[1]) for r in app.execute(
                "select bucket_id, name from storage.objects").fetchall()}
            assert visible == {("books", f"generated/{mine}/book.pdf"),
                               ("books", f"uploads/{user}/photo.jpg")}
            app.execute("insert into storage.objects (bucket_id, name) values ('books', %s)",
                        [f"uploads/{user}/new.jpg"])
            for name in (f"uploads/{other_user}/x.jpg", f"generated/{mine}/fake.pdf"):
                with refused(app):
                    app.execute(
                        "insert into storage.objects (bucket_id, name) values ('books', %s)",
                        [name])
        with acting_as(app, "anon", user):
            assert app.execute("select count(*) from storage.objects").fetchone()[0] == 0
