-- The print files' links (print_interior_url, print_cover_url, migration 014) are signed at
-- completion like pdf_url and cover_image_url, and die with them: the re-sign sweep
-- (monitor/url_refresh.py) now signs them again too, in the same write, under the same
-- urls_expire_at (they are signed together, so one expiry covers all four).

-- Replaces 012_app_contract.sql's items_with_expiring_urls (dropped at the end of this file; the
-- daemon no longer calls it), with these changes: (a) it also returns print_interior_path and
-- print_cover_path; (b) an item whose print paths are set must have both under the item's own
-- generated/{item id}/ folder, like its PDF and cover (an item with a foreign print path is not
-- listed, so the service role never signs another item's file); an item without print files
-- (completed before migration 014) is listed as before, with null print paths. A new name
-- rather than a redefinition, because the return type changes (create or replace cannot, and
-- 012 must stay re-runnable).
create or replace function items_with_expiring_result_urls(
    p_margin_seconds integer,
    p_limit integer,
    p_skip jsonb default '[]'
)
returns table (
    item_id uuid,
    pdf_path text,
    cover_image_path text,
    print_interior_path text,
    print_cover_path text
)
language sql
stable
as $$
    select oi.id, oi.pdf_path, oi.cover_image_path, oi.print_interior_path, oi.print_cover_path
      from order_items oi
     where oi.generation_status = 'completed'
       and oi.pdf_path is not null  -- the partial index's predicate
       and (oi.urls_expire_at is null
            or oi.urls_expire_at < now() + make_interval(secs => p_margin_seconds))
       and starts_with(oi.pdf_path, 'generated/' || oi.id::text || '/')
       and starts_with(oi.cover_image_path, 'generated/' || oi.id::text || '/')
       and ((oi.print_interior_path is null and oi.print_cover_path is null)
            or (starts_with(oi.print_interior_path, 'generated/' || oi.id::text || '/')
                and starts_with(oi.print_cover_path, 'generated/' || oi.id::text || '/')))
       and not (p_skip ? oi.id::text)
     order by oi.urls_expire_at nulls first, oi.id
     limit greatest(p_limit, 0);
$$;

-- Writes the freshly signed screen and print URLs in one transaction: the row is locked while
-- it still has the very print paths that were signed (both null for an item without print
-- files), then 012's refresh_order_item_urls writes the screen URLs and the expiry (only while
-- completed with those paths), then the two print URL columns. False, and nothing written, when
-- a path changed since the item was listed.
create or replace function refresh_order_item_urls_with_print(
    p_item uuid,
    p_pdf_path text,
    p_pdf_url text,
    p_cover_path text,
    p_cover_url text,
    p_print_interior_path text,
    p_print_interior_url text,
    p_print_cover_path text,
    p_print_cover_url text,
    p_urls_expire_at timestamptz
)
returns boolean
language plpgsql
as $$
begin
    perform 1
       from order_items
      where id = p_item
        and print_interior_path is not distinct from p_print_interior_path
        and print_cover_path is not distinct from p_print_cover_path
        for update;
    if not found then
        return false;
    end if;
    if not refresh_order_item_urls(p_item, p_pdf_path, p_pdf_url, p_cover_path, p_cover_url,
                                   p_urls_expire_at) then
        return false;
    end if;
    if p_print_interior_path is not null then
        update order_items
           set print_interior_url = p_print_interior_url,
               print_cover_url = p_print_cover_url
         where id = p_item;
    end if;
    return true;
end;
$$;

revoke execute on function items_with_expiring_result_urls(integer, integer, jsonb) from public;
revoke execute on function refresh_order_item_urls_with_print(uuid, text, text, text, text, text, text, text, text, timestamptz) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        execute 'revoke execute on function items_with_expiring_result_urls(integer, integer, jsonb) from anon, authenticated';
        execute 'revoke execute on function refresh_order_item_urls_with_print(uuid, text, text, text, text, text, text, text, text, timestamptz) from anon, authenticated';
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant execute on function items_with_expiring_result_urls(integer, integer, jsonb) to service_role';
        execute 'grant execute on function refresh_order_item_urls_with_print(uuid, text, text, text, text, text, text, text, text, timestamptz) to service_role';
    end if;
end
$$;

-- Run as owner, executable by book_monitor (migrations/011).
select _secure_daemon_functions(array[
    'items_with_expiring_result_urls', 'refresh_order_item_urls_with_print']);

-- 012's listing, replaced by items_with_expiring_result_urls above.
drop function if exists items_with_expiring_urls(integer, integer, jsonb);
