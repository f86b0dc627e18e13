-- Issue 13: the book a parent receives.
--
-- 1. The quality judge's verdict is stored with the page's checkpoint, in the same transaction,
--    so a resumed item never judges or redraws a checkpointed page again. A page that stayed
--    below the threshold under QA_ON_FAIL=review is flagged on its checkpoint and on the item.
-- 2. book_pages.text_box: where the story text is laid, as fractions of the page like
--    character_box. book_pages.text may hold a template (processors/story.py).
-- 3. Print profile per book (bleed, target PPI; the trim size exists since 001) and the print
--    files on the item: the interior PDF and the cover PDF, set by a new fenced function before
--    complete_order_item (which is left as it is).
-- No existing function is redefined.

alter table order_item_pages add column if not exists qa_verdict jsonb;
alter table order_item_pages add column if not exists needs_review boolean not null default false;
alter table order_items add column if not exists needs_review boolean not null default false;

alter table book_pages add column if not exists text_box jsonb;
alter table books add column if not exists print_bleed_in numeric(5, 3);
alter table books add column if not exists print_ppi integer;

alter table order_items add column if not exists print_interior_path text;
alter table order_items add column if not exists print_interior_url text;
alter table order_items add column if not exists print_cover_path text;
alter table order_items add column if not exists print_cover_url text;
-- True when some image had fewer pixels than the print PPI asks for and was upscaled (LANCZOS).
alter table order_items add column if not exists print_upscaled boolean;
-- The lowest effective PPI of an image as the model gave it, before any upscaling.
alter table order_items add column if not exists print_source_ppi numeric(7, 1);

-- checkpoint_order_item_page_with_usage (010) plus the judge's verdict and the review flag, in
-- one transaction. Fenced by the inner call: false, and nothing written, unless the caller owns
-- the processing item of a paid order.
create or replace function checkpoint_order_item_page_with_verdict(
    p_item uuid,
    p_worker text,
    p_page_number integer,
    p_image_path text,
    p_prompt_version text default null,
    p_model text default null,
    p_usage jsonb default null,
    p_verdict jsonb default null,
    p_needs_review boolean default false
)
returns boolean
language plpgsql
as $$
begin
    if not checkpoint_order_item_page_with_usage(p_item, p_worker, p_page_number, p_image_path,
                                                 p_prompt_version, p_model, p_usage) then
        return false;
    end if;
    update order_item_pages
       set qa_verdict = p_verdict,
           needs_review = coalesce(p_needs_review, false)
     where order_item_id = p_item
       and page_number = p_page_number;
    if coalesce(p_needs_review, false) then
        update order_items set needs_review = true, updated_at = now() where id = p_item;
    end if;
    return true;
end;
$$;

-- The print files of a finished book, written just before complete_order_item. Fenced like
-- every job write: only the claimant of a processing item may write it.
create or replace function set_order_item_print_files(
    p_item uuid,
    p_worker text,
    p_interior_path text,
    p_interior_url text,
    p_cover_path text,
    p_cover_url text,
    p_upscaled boolean,
    p_source_ppi double precision
)
returns boolean
language sql
as $$
    with updated as (
        update order_items
           set print_interior_path = p_interior_path,
               print_interior_url = p_interior_url,
               print_cover_path = p_cover_path,
               print_cover_url = p_cover_url,
               print_upscaled = p_upscaled,
               print_source_ppi = p_source_ppi,
               updated_at = now()
         where id = p_item
           and claimed_by = p_worker
           and generation_status = 'processing'
        returning 1
    )
    select exists (select 1 from updated);
$$;

-- The print profile and the text boxes of a book, written by import-book right after
-- import_book (003, left as it is). p_pages: array of {page_number, text_box?}. Null print
-- values mean "the PRINT_* settings".
create or replace function set_book_layout(
    p_book uuid,
    p_bleed_in numeric,
    p_ppi integer,
    p_pages jsonb
)
returns boolean
language plpgsql
as $$
begin
    update books set print_bleed_in = p_bleed_in, print_ppi = p_ppi, updated_at = now()
     where id = p_book;
    if not found then
        return false;
    end if;
    update book_pages bp
       set text_box = nullif(p -> 'text_box', 'null'::jsonb)
      from jsonb_array_elements(coalesce(p_pages, '[]'::jsonb)) p
     where bp.book_id = p_book
       and bp.page_number = (p ->> 'page_number')::integer;
    return true;
end;
$$;

revoke execute on function checkpoint_order_item_page_with_verdict(uuid, text, integer, text, text, text, jsonb, jsonb, boolean) from public;
revoke execute on function set_order_item_print_files(uuid, text, text, text, text, text, boolean, double precision) from public;
revoke execute on function set_book_layout(uuid, numeric, integer, jsonb) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        execute 'revoke execute on function checkpoint_order_item_page_with_verdict(uuid, text, integer, text, text, text, jsonb, jsonb, boolean) from anon, authenticated';
        execute 'revoke execute on function set_order_item_print_files(uuid, text, text, text, text, text, boolean, double precision) from anon, authenticated';
        execute 'revoke execute on function set_book_layout(uuid, numeric, integer, jsonb) from anon, authenticated';
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant execute on function checkpoint_order_item_page_with_verdict(uuid, text, integer, text, text, text, jsonb, jsonb, boolean) to service_role';
        execute 'grant execute on function set_order_item_print_files(uuid, text, text, text, text, text, boolean, double precision) to service_role';
        execute 'grant execute on function set_book_layout(uuid, numeric, integer, jsonb) to service_role';
    end if;
end
$$;

select _secure_daemon_functions(array[
    'checkpoint_order_item_page_with_verdict', 'set_order_item_print_files']);
