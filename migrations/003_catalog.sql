-- Catalog and order entry points used by `run_monitor.py import-book` and `demo`, so neither needs
-- SQL of its own. Service-role only, like the queue functions.

-- Where the hero stands on the cover, like book_pages.character_box.
alter table books add column if not exists cover_character_box jsonb;

-- Adds a book with its pages (or replaces the pages of an existing id). p_book: {id?, title,
-- genre?, age_min?, age_max?, cover_image_path, cover_character_box?, trim_width_in?,
-- trim_height_in?}; p_pages: an
-- array of {page_number, image_path, has_character?, character_box?, text?}.
create or replace function import_book(p_book jsonb, p_pages jsonb)
returns uuid
language plpgsql
as $$
declare
    v_id uuid := coalesce((p_book ->> 'id')::uuid, gen_random_uuid());
begin
    insert into books (id, title, genre, age_min, age_max, cover_image_path, cover_character_box,
                       trim_width_in, trim_height_in)
    values (v_id, p_book ->> 'title', p_book ->> 'genre', (p_book ->> 'age_min')::integer,
            (p_book ->> 'age_max')::integer, p_book ->> 'cover_image_path',
            nullif(p_book -> 'cover_character_box', 'null'::jsonb),
            coalesce((p_book ->> 'trim_width_in')::numeric, 8.5),
            coalesce((p_book ->> 'trim_height_in')::numeric, 8.5))
    on conflict (id) do update
        set title = excluded.title,
            genre = excluded.genre,
            age_min = excluded.age_min,
            age_max = excluded.age_max,
            cover_image_path = excluded.cover_image_path,
            cover_character_box = excluded.cover_character_box,
            trim_width_in = excluded.trim_width_in,
            trim_height_in = excluded.trim_height_in,
            updated_at = now();
    delete from book_pages where book_id = v_id;
    insert into book_pages (book_id, page_number, image_path, has_character, character_box, text)
    select v_id, (p ->> 'page_number')::integer, p ->> 'image_path',
           coalesce((p ->> 'has_character')::boolean, true),
           nullif(p -> 'character_box', 'null'::jsonb), p ->> 'text'
      from jsonb_array_elements(p_pages) p;
    return v_id;
end;
$$;

-- A paid order with one item, as the app writes it after checkout: for the demo and benchmarks.
create or replace function create_paid_order_item(
    p_book uuid,
    p_child_name text,
    p_child_age integer,
    p_child_gender text,
    p_child_photo_path text,
    p_user uuid default null
)
returns uuid
language plpgsql
as $$
declare
    v_order uuid;
    v_item uuid;
begin
    insert into orders (user_id, payment_status) values (p_user, 'paid') returning id into v_order;
    insert into order_items (order_id, book_id, child_name, child_age, child_gender, child_photo_path)
    values (v_order, p_book, p_child_name, p_child_age, p_child_gender, p_child_photo_path)
    returning id into v_item;
    return v_item;
end;
$$;

-- What the app would show of one item (for the demo's last line and operators' scripts).
create or replace function order_item_summary(p_item uuid)
returns jsonb
language sql
stable
as $$
    select jsonb_build_object(
        'id', id, 'generation_status', generation_status, 'progress', progress,
        'current_step', current_step, 'pages_done', pages_done, 'pages_total', pages_total,
        'pdf_path', pdf_path, 'cover_image_path', cover_image_path,
        'error_code', error_code, 'error_message', error_message, 'attempts', attempts,
        'ai_usage', ai_usage)
      from order_items
     where id = p_item;
$$;
