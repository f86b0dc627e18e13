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
from tests.support.factories import insert_book, insert_item, insert_order

TABLES = (
    "books",
    "book_pages",
    "orders",
    "order_items",
    "order_item_pages",
    "book_analyses",
    "notifications",
    "schema_migrations",
)


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
def refused(conn: psycopg.Connection, *kinds: type[psycopg.Error]) -> Iterator[None]:
    """The statement inside must be refused by the database: by a privilege or policy, or by
    another of ``kinds`` (the photo-ownership trigger raises CheckViolation)."""
    with pytest.raises(kinds or errors.InsufficientPrivilege):
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
                    " values (%s, %s, %s)",
                    [item, page, f"generated/{item}/pages/{page:02d}.jpg"],
                )
            note = db.execute(
                "insert into notifications (user_id, order_item_id, kind, title, body)"
                " values (%s, %s, 'book_ready', 'Ready', 'Your book is ready') returning id",
                [user, item],
            ).fetchone()[0]
            self.orders.append(order)
            self.items.append(item)
            self.notifications.append(str(note))
            self.pending_orders.append(insert_order(db, user_id=user, paid=False))
        db.execute(
            "insert into book_analyses (book_id, prompt_version, model, analysis)"
            " values (%s, 'v1', 'm', '{}')",
            [self.book],
        )


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
    row = db.execute(
        "select generation_status, pdf_url, progress from order_items where id = %s",
        [world.items[0]],
    ).fetchone()
    assert row == ("pending", None, 0)


def test_app_inserts_a_pending_item_only_into_its_own_unpaid_order(
    app: psycopg.Connection, db: psycopg.Connection, world: World
) -> None:
    me, other = world.users
    insert = (
        "insert into order_items (order_id, book_id, child_name, child_age, child_gender,"
        " child_photo_path) values (%s, %s, 'Leo', 4, 'boy', %s) returning id"
    )
    # Its own unpaid order: accepted, and every generation column keeps its default.
    with acting_as(app, "authenticated", me):
        item = app.execute(
            insert, [world.pending_orders[0], world.book, f"uploads/{me}/leo.jpg"]
        ).fetchone()[0]
        row = app.execute(
            "select generation_status, attempts, progress, claimed_by, pdf_url from order_items"
            " where id = %s",
            [item],
        ).fetchone()
        assert row == ("pending", 0, 0, None, None)
        # Someone else's order, and its own already paid order (that would be a free book).
        for order in (world.pending_orders[1], world.orders[1], world.orders[0]):
            # (someone else's order: the photo is not its user's either, so the trigger of
            # migration 011 may refuse before the policy does)
            with refused(app, errors.InsufficientPrivilege, errors.CheckViolation):
                app.execute(insert, [order, world.book, f"uploads/{me}/leo.jpg"])
        # Generation columns cannot be written on insert either.
        with refused(app):
            app.execute(
                "insert into order_items (order_id, book_id, generation_status, pdf_url)"
                " values (%s, %s, 'completed', 'https://evil.example/x.pdf')",
                [world.pending_orders[0], world.book],
            )
        with refused(app):
            app.execute(
                "insert into order_items (order_id, book_id, attempts, claimed_by)"
                " values (%s, %s, 0, 'me')",
                [world.pending_orders[0], world.book],
            )
    # force_rollback: nothing the app did in the block above persists.
    assert (
        db.execute(
            "select count(*) from order_items where order_id = %s", [world.pending_orders[0]]
        ).fetchone()[0]
        == 0
    )


def test_app_marks_only_its_own_notifications_read(app: psycopg.Connection, world: World) -> None:
    mine, theirs = world.notifications
    with acting_as(app, "authenticated", world.users[0]):
        assert (
            app.execute("update notifications set read_at = now() where id = %s", [mine]).rowcount
            == 1
        )
        assert (
            app.execute("update notifications set read_at = now() where id = %s", [theirs]).rowcount
            == 0
        )
        assert app.execute("update notifications set read_at = now()").rowcount == 1
        # Handing a notification to someone else is refused too.
        with refused(app):
            app.execute(
                "update notifications set user_id = %s where id = %s", [world.users[1], mine]
            )


def functions_of_the_schema(db: psycopg.Connection) -> list[str]:
    rows = db.execute(
        """select p.oid::regprocedure::text from pg_proc p
             join pg_namespace n on n.oid = p.pronamespace
            where n.nspname = 'public' and p.prokind in ('f', 'p')
              and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass
                                and d.objid = p.oid and d.deptype = 'e')"""
    ).fetchall()
    return sorted(r[0] for r in rows)


#: Pure predicates the app's policies call, so the app's role must be able to execute them; they
#: read and write nothing.
POLICY_PREDICATES = {"photo_path_in_user_uploads(text,uuid)"}


def test_only_the_service_role_may_execute_the_functions(db: psycopg.Connection) -> None:
    functions = functions_of_the_schema(db)
    assert "claim_order_items(text,integer,integer)" in functions
    assert any(f.startswith("items_due_for_photo_deletion(") for f in functions)
    assert POLICY_PREDICATES <= set(functions)
    for function in functions:
        app = function in POLICY_PREDICATES
        for role, allowed in (
            ("anon", False),
            ("authenticated", app),
            ("public", False),
            ("service_role", True),
        ):
            if role == "public":
                granted = db.execute(
                    "select exists (select 1 from pg_proc p, aclexplode(coalesce(p.proacl,"
                    " acldefault('f', p.proowner))) a where p.oid = %s::regprocedure"
                    " and a.grantee = 0 and a.privilege_type = 'EXECUTE')",
                    [function],
                ).fetchone()[0]
            else:
                granted = db.execute(
                    "select has_function_privilege(%s, %s, 'execute')", [role, function]
                ).fetchone()[0]
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
    assert db.execute(
        "select generation_status, claimed_by from order_items where id = %s", [world.items[0]]
    ).fetchone() == ("pending", None)


def test_the_service_role_runs_the_queue(app: psycopg.Connection, world: World) -> None:
    """The daemon's Supabase path: PostgREST as service_role, which bypasses RLS."""
    with acting_as(app, "service_role"):
        claimed = ids(app, "select id from claim_order_items('w1', 10, 60)")
        assert claimed == set(world.items)
        item = world.items[0]
        assert (
            app.execute(
                "select complete_order_item(%s, 'w1', 'generated/p.pdf', 'u',"
                " 'generated/c.jpg', 'cu')",
                [item],
            ).fetchone()[0]
            is True
        )
        assert (
            app.execute(
                "select generation_status from order_items where id = %s", [item]
            ).fetchone()[0]
            == "completed"
        )
        assert app.execute("select count(*) from notifications").fetchone()[0] == 3


def test_the_app_sees_the_daemons_progress(
    app: psycopg.Connection, db: psycopg.Connection, world: World
) -> None:
    db.execute("select * from claim_order_items('w1', 10, 60)")
    db.execute(
        "select set_order_item_progress(%s, 'w1', 40, 'Drawing page 1 of 2')", [world.items[0]]
    )
    with acting_as(app, "authenticated", world.users[0]):
        assert app.execute(
            "select generation_status, progress, current_step from order_items"
        ).fetchall() == [("processing", 40, "Drawing page 1 of 2")]


async def test_supabase_objects_are_kept_and_storage_is_locked_down(
    empty_database_url: str,
) -> None:
    """On a database that looks like Supabase (an auth.uid() of its own, a storage schema), the
    migrations keep Supabase's function and add the storage policies."""
    make_supabase_like(empty_database_url)
    await migrate(empty_database_url)
    await migrate(empty_database_url)  # idempotent
    user = "00000000-0000-0000-0000-0000000000aa"
    with psycopg.connect(empty_database_url, autocommit=True) as db:
        body = db.execute(
            "select prosrc from pg_proc p join pg_namespace n on n.oid ="
            " p.pronamespace where n.nspname = 'auth' and proname = 'uid'"
        ).fetchone()[0]
        assert "0000000000aa" in body  # Supabase's own auth.uid() was not replaced
        assert (
            db.execute("select public from storage.buckets where id = 'books'").fetchone()[0]
            is False
        )
        book = insert_book(db, pages=1)
        mine = insert_item(db, book_id=book, order_id=insert_order(db, user_id=user))
        theirs = insert_item(db, book_id=book)
        other_user = str(uuid.uuid4())
        for name in (
            f"generated/{mine}/book.pdf",
            f"generated/{theirs}/book.pdf",
            f"uploads/{user}/photo.jpg",
            f"uploads/{other_user}/photo.jpg",
            "catalog/x/cover.jpg",
        ):
            db.execute("insert into storage.objects (bucket_id, name) values ('books', %s)", [name])
        db.execute(
            "insert into storage.objects (bucket_id, name) values ('other', %s)",
            [f"uploads/{user}/photo.jpg"],
        )
    with psycopg.connect(empty_database_url) as app:
        with acting_as(app, "authenticated", user):
            visible = {
                (r[0], r[1])
                for r in app.execute("select bucket_id, name from storage.objects").fetchall()
            }
            assert visible == {
                ("books", f"generated/{mine}/book.pdf"),
                ("books", f"uploads/{user}/photo.jpg"),
            }
            app.execute(
                "insert into storage.objects (bucket_id, name) values ('books', %s)",
                [f"uploads/{user}/new.jpg"],
            )
            for name in (f"uploads/{other_user}/x.jpg", f"generated/{mine}/fake.pdf"):
                with refused(app):
                    app.execute(
                        "insert into storage.objects (bucket_id, name) values ('books', %s)", [name]
                    )
        with acting_as(app, "anon", user):
            assert app.execute("select count(*) from storage.objects").fetchone()[0] == 0


# --------------------------------------------------------------- confused deputy (migration 011)
# The app writes two kinds of paths: order_items.child_photo_path (insert only; it has no update
# privilege on order_items) and storage.objects.name (its uploads). Each way of pointing one at
# another user's data is refused, for the app by its policy and for every writer by the trigger.

PROJECT = "https://project-ref.supabase.co"


def foreign_photo_paths(world: World) -> dict[str, str]:
    """Every way we know to point user A's item at data that is not A's upload."""
    me, other = world.users
    mine, theirs = world.items
    return {
        "B's upload": f"uploads/{other}/photo.jpg",
        "B's upload as public URL": f"{PROJECT}/storage/v1/object/public/books/uploads/{other}/p.jpg",
        "B's upload as signed URL": f"{PROJECT}/storage/v1/object/sign/books/uploads/{other}/p.jpg"
        "?token=x",
        "B's upload as authenticated URL": f"{PROJECT}/storage/v1/object/authenticated/books/uploads/{other}/p.jpg",
        "B's folder through a dot-dot": f"uploads/{me}/../{other}/photo.jpg",
        "B's folder after an empty segment": f"uploads//{other}/photo.jpg",
        "B's folder, absolute": f"/uploads/{other}/photo.jpg",
        "B's generated cover": f"generated/{theirs}/cover.jpg",
        "B's generated page": f"generated/{theirs}/pages/01.jpg",
        "A's own generated cover": f"generated/{mine}/cover.jpg",
        "the catalog cover": f"catalog/{world.book}/cover.jpg",
        "a catalog page as URL": f"{PROJECT}/storage/v1/object/public/books/catalog/{world.book}/"
        "pages/01.jpg",
        "A's folder itself": f"uploads/{me}/",
        "A's id as a file name": f"uploads/{me}",
        "an uploads folder named like A": f"uploads/{me}x/photo.jpg",
    }


PHOTO_CASES = [
    "B's upload",
    "B's upload as public URL",
    "B's upload as signed URL",
    "B's upload as authenticated URL",
    "B's folder through a dot-dot",
    "B's folder after an empty segment",
    "B's folder, absolute",
    "B's generated cover",
    "B's generated page",
    "A's own generated cover",
    "the catalog cover",
    "a catalog page as URL",
    "A's folder itself",
    "A's id as a file name",
    "an uploads folder named like A",
]
INSERT_ITEM = (
    "insert into order_items (order_id, book_id, child_name, child_age, child_gender,"
    " child_photo_path) values (%s, %s, 'Leo', 4, 'boy', %s) returning id"
)


@pytest.mark.parametrize("case", PHOTO_CASES)
def test_the_app_cannot_insert_an_item_with_someone_elses_photo(
    app: psycopg.Connection, world: World, case: str
) -> None:
    path = foreign_photo_paths(world)[case]
    with acting_as(app, "authenticated", world.users[0]):
        with refused(app, errors.CheckViolation):
            app.execute(INSERT_ITEM, [world.pending_orders[0], world.book, path])


@pytest.mark.parametrize("case", PHOTO_CASES)
def test_the_app_policy_alone_refuses_someone_elses_photo(
    app: psycopg.Connection, world: World, case: str
) -> None:
    """With the trigger out of the way, the insert policy itself holds (defence in depth)."""
    path = foreign_photo_paths(world)[case]
    with app.transaction(force_rollback=True):
        app.execute("alter table order_items disable trigger order_items_child_photo_owned")
        app.execute("set local role authenticated")
        app.execute(
            "select set_config('request.jwt.claims', %s, true)",
            [json.dumps({"role": "authenticated", "sub": world.users[0]})],
        )
        with refused(app):
            app.execute(INSERT_ITEM, [world.pending_orders[0], world.book, path])


def test_the_app_may_insert_its_own_photo_as_key_or_url(
    app: psycopg.Connection, world: World
) -> None:
    me = world.users[0]
    with acting_as(app, "authenticated", me):
        for path in (
            f"uploads/{me}/leo.jpg",
            f"uploads/{me}/2026/leo 2.jpg",
            f"{PROJECT}/storage/v1/object/public/books/uploads/{me}/leo.jpg",
            None,
        ):
            assert app.execute(INSERT_ITEM, [world.pending_orders[0], world.book, path]).fetchone()[
                0
            ]


@pytest.mark.parametrize("case", PHOTO_CASES)
def test_the_app_cannot_repoint_an_items_photo(
    app: psycopg.Connection, db: psycopg.Connection, world: World, case: str
) -> None:
    path = foreign_photo_paths(world)[case]
    with acting_as(app, "authenticated", world.users[0]):
        with refused(app):
            app.execute("update order_items set child_photo_path = %s", [path])
    assert (
        db.execute("select child_photo_path from order_items where id = %s", [world.items[0]])
        .fetchone()[0]
        .startswith(f"uploads/{world.users[0]}/")
    )


@pytest.mark.parametrize("role", ["service_role", "owner"])
@pytest.mark.parametrize("case", PHOTO_CASES)
def test_no_writer_can_point_an_item_at_someone_elses_photo(
    app: psycopg.Connection, world: World, case: str, role: str
) -> None:
    """The daemon's roles bypass RLS, the trigger does not: insert, update and both ways of
    moving an item under another order's user are refused."""
    path = foreign_photo_paths(world)[case]
    me, other = world.users
    with app.transaction(force_rollback=True):
        if role == "service_role":
            app.execute("set local role service_role")
        with refused(app, errors.CheckViolation):
            app.execute(INSERT_ITEM, [world.orders[0], world.book, path])
        with refused(app, errors.CheckViolation):
            app.execute(
                "update order_items set child_photo_path = %s where id = %s", [path, world.items[0]]
            )
        with refused(app, errors.CheckViolation):
            app.execute(
                "select create_paid_order_item(%s, 'Leo', 4, 'boy', %s, %s)", [world.book, path, me]
            )
    with app.transaction(force_rollback=True):
        if role == "service_role":
            app.execute("set local role service_role")
        # A's item moved into B's order, or A's order handed to B: A's photo is not B's.
        with refused(app, errors.CheckViolation):
            app.execute(
                "update order_items set order_id = %s where id = %s",
                [world.orders[1], world.items[0]],
            )
        with refused(app, errors.CheckViolation):
            app.execute("update orders set user_id = %s where id = %s", [other, world.orders[0]])
        # And an order without a user owns no upload folder.
        with refused(app, errors.CheckViolation):
            app.execute(
                "select create_paid_order_item(%s, 'Leo', 4, 'boy', %s)",
                [world.book, f"uploads/{me}/leo.jpg"],
            )


def test_rows_from_before_the_rule_still_load_and_can_be_cleared(
    db: psycopg.Connection, world: World
) -> None:
    """The trigger checks writes of the path, not other columns of old rows: the queue keeps
    working on a legacy row (the daemon refuses its photo), and retention may null it."""
    item = world.items[0]
    with db.transaction():
        db.execute("set local session_replication_role = replica")
        db.execute(
            "update order_items set child_photo_path = %s where id = %s",
            [f"uploads/{world.users[1]}/photo.jpg", item],
        )
    assert {str(r[0]) for r in db.execute("select id from claim_order_items('w', 10, 60)")} == set(
        world.items
    )
    assert db.execute("select set_order_item_progress(%s, 'w', 5, 'x')", [item]).fetchone()[0]
    db.execute("update order_items set child_photo_path = null where id = %s", [item])


# --------------------------------------------------------------- storage stand-in
def make_supabase_like(url: str, user_grants: str = "select, insert") -> None:
    """An auth.uid() of Supabase's own (a fixed user) and a stand-in storage schema: buckets and
    objects with RLS on and the app's roles granted ``user_grants``, as Supabase grants them."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create schema auth")
        conn.execute(
            "create function auth.uid() returns uuid language sql stable as"
            " $$ select '00000000-0000-0000-0000-0000000000aa'::uuid $$"
        )
        conn.execute("grant usage on schema auth to anon, authenticated, service_role")
        conn.execute("create schema storage")
        conn.execute("grant usage on schema storage to anon, authenticated, service_role")
        conn.execute(
            "create table storage.buckets (id text primary key, name text,"
            " public boolean default false)"
        )
        conn.execute(
            "create table storage.objects (id uuid primary key default"
            " gen_random_uuid(), bucket_id text, name text, version text)"
        )
        conn.execute("alter table storage.objects enable row level security")
        conn.execute(f"grant {user_grants} on storage.objects to anon, authenticated")


async def test_the_app_replaces_and_deletes_only_its_own_uploads(
    empty_database_url: str,
) -> None:
    """Upsert is Storage's insert, or select + update of the existing row; remove is a delete
    (supabase.com/docs/guides/storage/security/access-control). A may do both to A's upload and
    to nothing else."""
    make_supabase_like(empty_database_url, "select, insert, update, delete")
    await migrate(empty_database_url)
    me, other = "00000000-0000-0000-0000-0000000000aa", str(uuid.uuid4())
    with psycopg.connect(empty_database_url, autocommit=True) as db:
        book = insert_book(db, pages=1)
        theirs_item = insert_item(db, book_id=book)
        objects = {
            "mine": f"uploads/{me}/photo.jpg",
            "theirs": f"uploads/{other}/photo.jpg",
            "result": f"generated/{theirs_item}/book.pdf",
            "catalog": f"catalog/{book}/cover.jpg",
        }
        for name in objects.values():
            db.execute(
                "insert into storage.objects (bucket_id, name, version) values ('books', %s, 'v1')",
                [name],
            )
        db.execute(
            "insert into storage.objects (bucket_id, name, version) values ('other', %s, 'v1')",
            [objects["mine"]],
        )

    def version(db: psycopg.Connection, name: str, bucket: str = "books") -> str | None:
        row = db.execute(
            "select version from storage.objects where bucket_id = %s and name = %s", [bucket, name]
        ).fetchone()
        return row[0] if row else None

    with psycopg.connect(empty_database_url) as app:
        with acting_as(app, "authenticated", me):
            # Upsert of A's own upload: the existing row is seen and updated.
            assert (
                app.execute(
                    "update storage.objects set version = 'v2' where bucket_id ="
                    " 'books' and name = %s",
                    [objects["mine"]],
                ).rowcount
                == 1
            )
            # B's upload, results, the catalog, another bucket: not visible, so not updated.
            for key in ("theirs", "result", "catalog"):
                assert (
                    app.execute(
                        "update storage.objects set version = 'v2' where name = %s", [objects[key]]
                    ).rowcount
                    == 0
                ), key
                assert (
                    app.execute(
                        "delete from storage.objects where name = %s", [objects[key]]
                    ).rowcount
                    == 0
                ), key
            assert (
                app.execute("delete from storage.objects where bucket_id = 'other'").rowcount == 0
            )
            # Moving A's own object into B's folder or generated/ is refused by the check.
            for target in (
                objects["theirs"],
                f"generated/{theirs_item}/cover.jpg",
                f"catalog/{book}/cover.jpg",
            ):
                with refused(app):
                    app.execute(
                        "update storage.objects set name = %s where name = %s",
                        [target, objects["mine"]],
                    )
            # Writing into B's folder is refused outright.
            with refused(app):
                app.execute(
                    "insert into storage.objects (bucket_id, name) values ('books', %s)",
                    [f"uploads/{other}/new.jpg"],
                )
            assert version(app, objects["mine"]) == "v2"
            assert (
                app.execute(
                    "delete from storage.objects where name = %s", [objects["mine"]]
                ).rowcount
                == 1
            )
            app.execute("reset role")  # the owner's view of the same transaction
            assert version(app, objects["mine"]) is None  # replaced, then deleted by A
            for key in ("theirs", "result", "catalog"):
                assert version(app, objects[key]) == "v1", key
            assert version(app, objects["mine"], "other") == "v1"
