-- Issue 17: every billed AI call is on the item. The usage so far is written with every page
-- checkpoint, in the same transaction as the checkpoint row (a crash between the two can no
-- longer lose the last page's cost), and just before a fail or release, whose functions are
-- left as they are (no redefinition): the daemon calls record_order_item_usage first.
-- p_usage replaces ai_usage: it is the processor's running total for the item, which starts
-- from the stored ai_usage when an attempt resumes.

-- Fenced like every job write: only the claimant of a processing item may write it.
create or replace function record_order_item_usage(p_item uuid, p_worker text, p_usage jsonb)
returns boolean
language sql
as $$
    with updated as (
        update order_items
           set ai_usage = coalesce(p_usage, ai_usage),
               updated_at = now()
         where id = p_item
           and claimed_by = p_worker
           and generation_status = 'processing'
        returning 1
    )
    select exists (select 1 from updated);
$$;

-- checkpoint_order_item_page (002, and whatever later migrations make of it) plus the usage,
-- atomically: a function call is one transaction.
create or replace function checkpoint_order_item_page_with_usage(
    p_item uuid,
    p_worker text,
    p_page_number integer,
    p_image_path text,
    p_prompt_version text default null,
    p_model text default null,
    p_usage jsonb default null
)
returns boolean
language plpgsql
as $$
begin
    if not checkpoint_order_item_page(p_item, p_worker, p_page_number, p_image_path,
                                      p_prompt_version, p_model) then
        return false;
    end if;
    return record_order_item_usage(p_item, p_worker, p_usage);
end;
$$;

revoke execute on function record_order_item_usage(uuid, text, jsonb) from public;
revoke execute on function checkpoint_order_item_page_with_usage(uuid, text, integer, text, text, text, jsonb) from public;
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        execute 'revoke execute on function record_order_item_usage(uuid, text, jsonb) from anon, authenticated';
        execute 'revoke execute on function checkpoint_order_item_page_with_usage(uuid, text, integer, text, text, text, jsonb) from anon, authenticated';
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        execute 'grant execute on function record_order_item_usage(uuid, text, jsonb) to service_role';
        execute 'grant execute on function checkpoint_order_item_page_with_usage(uuid, text, integer, text, text, text, jsonb) to service_role';
    end if;
end
$$;
