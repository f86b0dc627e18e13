-- The operator CLI's reads (monitor/ops.py: status, list, show). Read-only, stable functions;
-- `retry` reuses retry_failed_order_item from 002_queue.sql, exactly as the admin endpoint does.
--
-- Personal data (the child's details and photo, the stored result paths and URLs, the child
-- analysis, the parent's user id, the page image paths) leaves the database only when the caller
-- asks for it with p_pii. Executable by service_role only, through the default privileges of
-- 005_row_level_security.sql.

-- The queue at a glance: counts by state, what is drawing, what waits and since when, what
-- failed recently and why. "Failed in the last 24 h" is judged by updated_at, which every
-- transition to failed sets.
create or replace function ops_queue_status()
returns jsonb
language sql
stable
as $$
    select jsonb_build_object(
        'now', now(),
        'by_status', (
            select coalesce(jsonb_object_agg(generation_status, n), '{}'::jsonb)
              from (select generation_status, count(*) as n from order_items group by 1) s),
        'in_flight', (
            select count(*) from order_items
             where generation_status = 'processing' and lease_expires_at >= now()),
        'expired_leases', (
            select count(*) from order_items
             where generation_status = 'processing' and lease_expires_at < now()),
        'waiting', (
            select count(*) from order_items oi join orders o on o.id = oi.order_id
             where o.payment_status = 'paid' and oi.generation_status = 'pending'
               and oi.next_attempt_at <= now()),
        'retry_scheduled', (
            select count(*) from order_items oi join orders o on o.id = oi.order_id
             where o.payment_status = 'paid' and oi.generation_status = 'pending'
               and oi.next_attempt_at > now()),
        'pending_unpaid', (
            select count(*) from order_items oi join orders o on o.id = oi.order_id
             where o.payment_status is distinct from 'paid' and oi.generation_status = 'pending'),
        'oldest_waiting_since', (
            select min(oi.created_at) from order_items oi join orders o on o.id = oi.order_id
             where o.payment_status = 'paid' and oi.generation_status = 'pending'),
        -- Money recorded in ai_usage (processors/ai/pricing.py) on items that changed in the
        -- last 24 h, in-flight ones included; calls of models without a price are counted apart.
        'cost_last_24h_usd', (
            select coalesce(sum((ai_usage ->> 'cost_usd')::numeric), 0) from order_items
             where updated_at >= now() - interval '24 hours'
               and jsonb_typeof(ai_usage -> 'cost_usd') = 'number'),
        'unpriced_calls_last_24h', (
            select coalesce(sum((ai_usage ->> 'unpriced_calls')::bigint), 0) from order_items
             where updated_at >= now() - interval '24 hours'
               and jsonb_typeof(ai_usage -> 'unpriced_calls') = 'number'),
        'failed_last_24h', (
            select coalesce(jsonb_object_agg(code, n), '{}'::jsonb)
              from (select coalesce(error_code, 'unknown') as code, count(*) as n
                      from order_items
                     where generation_status = 'failed' and updated_at >= now() - interval '24 hours'
                     group by 1) f)
    );
$$;

-- A step text may name the child ("Drawing Mia's cover"): without p_pii the name becomes
-- "[child]". Every non-alphanumeric character of the name is escaped, so it matches literally.
create or replace function _ops_mask_child_name(p_step text, p_name text)
returns text
language sql
immutable
as $$
    select case
        when p_step is null or coalesce(btrim(p_name), '') = '' then p_step
        else regexp_replace(
            p_step,
            regexp_replace(btrim(p_name), '([^[:alnum:]])', '\\\1', 'g'),
            '[child]', 'gi')
    end;
$$;

-- Items, newest change first, filtered by state, by last change and by error code.
create or replace function ops_list_order_items(
    p_status text default null,
    p_since timestamptz default null,
    p_error_code text default null,
    p_limit integer default 50
)
returns table (
    id uuid,
    order_id uuid,
    book_id uuid,
    generation_status text,
    payment_status text,
    progress integer,
    pages_done integer,
    pages_total integer,
    attempts integer,
    max_attempts integer,
    error_code text,
    claimed_by text,
    next_attempt_at timestamptz,
    created_at timestamptz,
    updated_at timestamptz
)
language sql
stable
as $$
    select oi.id, oi.order_id, oi.book_id, oi.generation_status, o.payment_status, oi.progress,
           oi.pages_done, oi.pages_total, oi.attempts, oi.max_attempts, oi.error_code,
           oi.claimed_by, oi.next_attempt_at, oi.created_at, oi.updated_at
      from order_items oi
      join orders o on o.id = oi.order_id
     where (p_status is null or oi.generation_status = p_status)
       and (p_since is null or oi.updated_at >= p_since)
       and (p_error_code is null or oi.error_code = p_error_code)
     order by oi.updated_at desc, oi.id
     limit greatest(coalesce(p_limit, 50), 0);
$$;

-- One item in full: the row, its order and book, its page checkpoints. Null when no such item.
create or replace function ops_show_order_item(p_item uuid, p_pii boolean default false)
returns jsonb
language sql
stable
as $$
    select jsonb_build_object(
        'item', case when p_pii then to_jsonb(oi)
                     else (to_jsonb(oi) - array['child_name', 'child_age', 'child_gender',
                                                'child_photo_path', 'child_analysis', 'pdf_url',
                                                'pdf_path', 'cover_image_url', 'cover_image_path'])
                          || jsonb_build_object(
                                 'current_step', _ops_mask_child_name(oi.current_step, oi.child_name))
                end,
        'order', jsonb_build_object('id', o.id, 'payment_status', o.payment_status)
                 || case when p_pii then jsonb_build_object('user_id', o.user_id)
                         else '{}'::jsonb end,
        'book', jsonb_build_object('id', oi.book_id, 'title', b.title),
        'pages', (
            select coalesce(jsonb_agg(
                       jsonb_build_object('page_number', p.page_number, 'model', p.model,
                                          'prompt_version', p.prompt_version,
                                          'created_at', p.created_at)
                       || case when p_pii then jsonb_build_object('image_path', p.image_path)
                               else '{}'::jsonb end
                       order by p.page_number), '[]'::jsonb)
              from order_item_pages p
             where p.order_item_id = oi.id)
    )
      from order_items oi
      join orders o on o.id = oi.order_id
      left join books b on b.id = oi.book_id
     where oi.id = p_item;
$$;

-- Run as owner, executable by book_monitor (migrations/011).
select _secure_daemon_functions(array[
    'ops_queue_status', 'ops_list_order_items', 'ops_show_order_item']);
