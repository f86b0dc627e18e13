"""Rows as the app and the catalog would write them, for arranging tests."""

from __future__ import annotations

import uuid

import psycopg


def insert_book(
    db: psycopg.Connection, *, pages: int = 3, title: str = "The Brave Explorer"
) -> str:
    book_id = str(uuid.uuid4())
    db.execute(
        "insert into books (id, title, cover_image_path) values (%s, %s, %s)",
        [book_id, title, f"catalog/{book_id}/cover.jpg"],
    )
    for n in range(1, pages + 1):
        db.execute(
            "insert into book_pages (book_id, page_number, image_path) values (%s, %s, %s)",
            [book_id, n, f"catalog/{book_id}/pages/{n:02d}.jpg"],
        )
    return book_id


def insert_order(db: psycopg.Connection, *, paid: bool = True, user_id: str | None = None) -> str:
    order_id = str(uuid.uuid4())
    db.execute(
        "insert into orders (id, user_id, payment_status) values (%s, %s, %s)",
        [order_id, user_id or str(uuid.uuid4()), "paid" if paid else "pending"],
    )
    return order_id


def insert_item(
    db: psycopg.Connection,
    *,
    book_id: str | None = None,
    order_id: str | None = None,
    paid: bool = True,
    child_name: str = "Mia",
    max_attempts: int = 3,
) -> str:
    order_id = order_id or insert_order(db, paid=paid)
    item_id = str(uuid.uuid4())
    # The photo is in the order's user's upload folder, as migration 011 requires of every row.
    (user_id,) = db.execute("select user_id from orders where id = %s", [order_id]).fetchone()
    db.execute(
        """insert into order_items (id, order_id, book_id, child_name, child_age, child_gender,
                                    child_photo_path, max_attempts)
           values (%s, %s, %s, %s, 5, 'girl', %s, %s)""",
        [item_id, order_id, book_id, child_name, f"uploads/{user_id}/{item_id}.jpg", max_attempts],
    )
    return item_id


def item_row(db: psycopg.Connection, item_id: str) -> dict:
    cursor = db.cursor(row_factory=psycopg.rows.dict_row)
    row = cursor.execute("select * from order_items where id = %s", [item_id]).fetchone()
    assert row is not None
    return row
