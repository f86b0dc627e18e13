-- Queue honesty (issue 10).
--
-- 1. Payment is checked by every fenced write that spends or delivers (progress, page checkpoint,
--    completion), in the same call that writes: once the order is no longer paid the item ends
--    'failed' with 'order_not_paid' (and its notification) and the write reports false, so the
--    worker stops before its next paid image call.
-- 2. Two budgets. `attempts` / `max_attempts` count the attempts begun from 'pending' (failures
--    the daemon saw and retried). A reclaim of an expired lease (a worker killed, OOM-killed,
--    stalled past its lease, or taken over by its restarted successor through expire_leases_of)
--    is a crash: it counts in `crash_count` against `max_crashes` (default 5) and spends no
--    attempt. An item that keeps killing its workers ends 'failed' with 'crash_loop'.
-- 3. Progress never goes backwards: a resumed attempt keeps the progress its checkpoints earned.
-- 4. A failed-for-good item tells the parent the final message, not the retry text: the daemon
--    passes both (fail_order_item's p_final_error_message).
--
-- expire_leases_of (008) and release_order_item (007) are unchanged: expire_leases_of only
-- expires the leases, and the claim that follows now counts that takeover as a crash; a release
-- still gives its attempt back (the next claim from 'pending' counts it again) and spends no crash.

alter table order_items add column if not exists crash_count integer not null default 0;
alter table order_items add column if not exists max_crashes integer not null default 5;

-- Locks the item when p_worker owns it ('processing', claimed by p_worker) and checks the order's
-- payment in the same transaction. Returns 'ok', 'lost' (not owned) or 'order_not_paid' (the item
-- has just been failed with that code and its notification; the caller must write nothing more).
create or replace function _lock_owned_paid_item(p_item uuid, p_worker text)
returns text
language plpgsql
as $$
declare
    v_payment_status text;
begin
    select o.payment_status
      into v_payment_status
      from order_items oi
      join orders o on o.id = oi.order_id
     where oi.id = p_item
       and oi.claimed_by = p_worker
       and oi.generation_status = 'processing'
       for update of oi;
    if not found then
        return 'lost';
    end if;
    if v_payment_status is distinct from 'paid' then
        perform _fail_order_item_terminal(
            p_item, 'order_not_paid',
            'This order is no longer paid, so we stopped creating the book.');
        return 'order_not_paid';
    end if;
    return 'ok';
end;
$$;

-- Redefined from 002_queue.sql: (a) the dead-letter loop also ends items whose lease expired:
-- 'crash_loop' once crash_count >= max_crashes, 'order_not_paid' when their order is no longer
-- paid (a crashed worker's refunded item no longer stays 'processing' forever); the 'max_attempts'
-- case now applies to due 'pending' items only; (b) reclaiming an expired lease increments
-- crash_count, not attempts; a claim from 'pending' increments attempts as before; (c) the
-- claim's guard is attempts < max_attempts for pending items and crash_count < max_crashes for
-- expired ones, inside the materialized CTE as before.
create or replace function claim_order_items(p_worker text, p_limit integer, p_lease_seconds integer)
returns setof order_items
language plpgsql
as $$
declare
    v_dead record;
begin
    -- Dead-letter: an item whose budget is used up is failed instead of being reclaimed forever.
    for v_dead in
        select oi.id,
               case when o.payment_status is distinct from 'paid' then 'order_not_paid'
                    when oi.generation_status = 'processing' then 'crash_loop'
                    else 'max_attempts' end as code
          from order_items oi
          join orders o on o.id = oi.order_id
         where (oi.generation_status = 'processing' and oi.lease_expires_at < now()
                and (oi.crash_count >= oi.max_crashes or o.payment_status is distinct from 'paid'))
            or (oi.generation_status = 'pending' and oi.next_attempt_at <= now()
                and oi.attempts >= oi.max_attempts and o.payment_status = 'paid')
           for update of oi skip locked
    loop
        perform _fail_order_item_terminal(
            v_dead.id, v_dead.code,
            case v_dead.code
                when 'order_not_paid' then 'This order is no longer paid, so we stopped creating the book.'
                when 'crash_loop' then 'We could not create your book: it kept stopping our system. Our team has been notified.'
                else 'We tried several times but could not create your book. Our team has been notified.'
            end);
    end loop;

    -- The claim itself: one statement. The CTE is materialized so it acts as a fence: the LIMIT
    -- and the budget guards apply before the update, whatever plan the planner picks.
    return query
    with candidates as materialized (
        select oi.id
          from order_items oi
          join orders o on o.id = oi.order_id
         where o.payment_status = 'paid'
           and ((oi.generation_status = 'pending' and oi.next_attempt_at <= now()
                 and oi.attempts < oi.max_attempts)
                or (oi.generation_status = 'processing' and oi.lease_expires_at < now()
                    and oi.crash_count < oi.max_crashes))
         order by oi.next_attempt_at, oi.id
         limit greatest(p_limit, 0)
           for update of oi skip locked
    )
    update order_items oi
       set generation_status = 'processing',
           claimed_by = p_worker,
           lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           -- oi.generation_status is the value before this update.
           attempts = oi.attempts + case when oi.generation_status = 'pending' then 1 else 0 end,
           crash_count = oi.crash_count + case when oi.generation_status = 'processing' then 1 else 0 end,
           started_at = now(),
           current_step = 'Starting',
           error_code = null,
           error_message = null,
           updated_at = now()
      from candidates c
     where oi.id = c.id
    returning oi.*;
end;
$$;

-- Extends the lease while the caller still owns the item. Returns 'ok', 'lost' (someone else owns
-- it now, or it is no longer processing) or 'order_not_paid' (refunded meanwhile: the item is
-- failed here, and the worker stops).
-- Redefined from 002_queue.sql: the ownership and payment check is _lock_owned_paid_item (same
-- behaviour, one copy shared with the other fenced writes).
create or replace function heartbeat_order_item(p_item uuid, p_worker text, p_lease_seconds integer)
returns text
language plpgsql
as $$
declare
    v_state text;
begin
    v_state := _lock_owned_paid_item(p_item, p_worker);
    if v_state <> 'ok' then
        return v_state;
    end if;
    update order_items
       set lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           updated_at = now()
     where id = p_item;
    return 'ok';
end;
$$;

-- Redefined from 002_queue.sql: (a) plpgsql; checks ownership and payment through
-- _lock_owned_paid_item (an unpaid order fails the item 'order_not_paid' and returns false);
-- (b) progress never decreases: greatest(p_progress, the stored progress), still clamped 0..100.
create or replace function set_order_item_progress(
    p_item uuid,
    p_worker text,
    p_progress integer,
    p_step text,
    p_pages_total integer default null,
    p_usage jsonb default null
)
returns boolean
language plpgsql
as $$
begin
    if _lock_owned_paid_item(p_item, p_worker) <> 'ok' then
        return false;
    end if;
    update order_items
       set progress = least(greatest(p_progress, progress, 0), 100),
           current_step = left(p_step, 200),
           pages_total = coalesce(p_pages_total, pages_total),
           ai_usage = coalesce(p_usage, ai_usage),
           updated_at = now()
     where id = p_item;
    return true;
end;
$$;

-- Records one finished illustration (page 0 is the cover). Upsert: a repeated step after a lost
-- lease writes the same deterministic path again, harmlessly.
-- Redefined from 002_queue.sql: the ownership check is _lock_owned_paid_item, so an unpaid order
-- fails the item 'order_not_paid' and nothing is recorded (returns false).
create or replace function checkpoint_order_item_page(
    p_item uuid,
    p_worker text,
    p_page_number integer,
    p_image_path text,
    p_prompt_version text default null,
    p_model text default null
)
returns boolean
language plpgsql
as $$
begin
    if _lock_owned_paid_item(p_item, p_worker) <> 'ok' then
        return false;
    end if;
    insert into order_item_pages (order_item_id, page_number, image_path, prompt_version, model)
    values (p_item, p_page_number, p_image_path, p_prompt_version, p_model)
    on conflict (order_item_id, page_number) do update
        set image_path = excluded.image_path,
            prompt_version = excluded.prompt_version,
            model = excluded.model,
            created_at = now();
    update order_items
       set pages_done = (select count(*) from order_item_pages
                          where order_item_id = p_item and page_number > 0),
           updated_at = now()
     where id = p_item;
    return true;
end;
$$;

-- Redefined from 002_queue.sql: ownership and payment are checked first through
-- _lock_owned_paid_item: an unpaid order fails the item 'order_not_paid' (its book_failed
-- notification, no book_ready) and returns false. The update and notification are unchanged.
create or replace function complete_order_item(
    p_item uuid,
    p_worker text,
    p_pdf_path text,
    p_pdf_url text,
    p_cover_path text,
    p_cover_url text,
    p_usage jsonb default null
)
returns boolean
language plpgsql
as $$
declare
    v_user_id uuid;
    v_title text;
begin
    if _lock_owned_paid_item(p_item, p_worker) <> 'ok' then
        return false;
    end if;
    update order_items oi
       set generation_status = 'completed',
           progress = 100,
           current_step = 'Your book is ready',
           pdf_path = p_pdf_path,
           pdf_url = p_pdf_url,
           cover_image_path = p_cover_path,
           cover_image_url = p_cover_url,
           generated_at = now(),
           ai_usage = coalesce(p_usage, oi.ai_usage),
           error_code = null,
           error_message = null,
           claimed_by = null,
           lease_expires_at = null,
           updated_at = now()
      from orders o
     where oi.id = p_item
       and o.id = oi.order_id
    returning o.user_id into v_user_id;
    select b.title into v_title
      from order_items oi join books b on b.id = oi.book_id
     where oi.id = p_item;
    insert into notifications (user_id, order_item_id, kind, title, body)
    values (v_user_id, p_item, 'book_ready', 'Your book is ready!',
            format('Your personalized copy of "%s" is ready to read.', coalesce(v_title, 'your book')));
    return true;
end;
$$;

-- Retryable failures go back to 'pending' after an exponential backoff with jitter (at least the
-- server-requested p_retry_after_seconds), showing p_error_message (the "we will keep trying"
-- text); terminal ones, and retryable ones whose attempts are used up, end 'failed' with
-- p_final_error_message (default: p_error_message) on the row and in the notification. The
-- attempt budget is the row's max_attempts, capped by the daemon's MAX_ATTEMPTS (p_max_attempts);
-- crashes do not count here (crash_count). Returns 'retry', 'failed' or 'lost'.
-- Redefined from 002_queue.sql: new parameter p_final_error_message (the old 9-argument
-- signature is dropped first, so named calls stay unambiguous); a final failure writes it
-- instead of p_error_message.
drop function if exists fail_order_item(uuid, text, text, text, boolean, double precision,
                                        double precision, double precision, integer);
create or replace function fail_order_item(
    p_item uuid,
    p_worker text,
    p_error_code text,
    p_error_message text,
    p_retryable boolean,
    p_retry_after_seconds double precision default null,
    p_backoff_base_seconds double precision default 30,
    p_backoff_max_seconds double precision default 1800,
    p_max_attempts integer default null,
    p_final_error_message text default null
)
returns text
language plpgsql
as $$
declare
    v_attempts integer;
    v_max_attempts integer;
    v_delay double precision;
begin
    select attempts, max_attempts
      into v_attempts, v_max_attempts
      from order_items
     where id = p_item
       and claimed_by = p_worker
       and generation_status = 'processing'
       for update;
    if not found then
        return 'lost';
    end if;
    if not p_retryable or v_attempts >= least(v_max_attempts, coalesce(p_max_attempts, v_max_attempts)) then
        perform _fail_order_item_terminal(p_item, p_error_code,
                                          coalesce(p_final_error_message, p_error_message));
        return 'failed';
    end if;
    v_delay := least(p_backoff_base_seconds * power(2, greatest(v_attempts - 1, 0)), p_backoff_max_seconds)
               * (0.5 + random() * 0.5);
    v_delay := greatest(v_delay, coalesce(p_retry_after_seconds, 0));
    update order_items
       set generation_status = 'pending',
           error_code = p_error_code,
           error_message = p_error_message,
           current_step = 'Waiting to retry',
           next_attempt_at = now() + make_interval(secs => v_delay),
           claimed_by = null,
           lease_expires_at = null,
           updated_at = now()
     where id = p_item;
    return 'retry';
end;
$$;

-- Operator action: a failed item gets a fresh set of attempts. Returns 'ok', 'not_found',
-- 'not_failed' or 'order_not_paid'.
-- Redefined from 002_queue.sql: also resets crash_count, so a 'crash_loop' item the operator
-- fixed gets its crash budget back.
create or replace function retry_failed_order_item(p_item uuid)
returns text
language plpgsql
as $$
declare
    v_status text;
    v_payment_status text;
begin
    select oi.generation_status, o.payment_status
      into v_status, v_payment_status
      from order_items oi
      join orders o on o.id = oi.order_id
     where oi.id = p_item
       for update of oi;
    if not found then
        return 'not_found';
    end if;
    if v_status <> 'failed' then
        return 'not_failed';
    end if;
    if v_payment_status is distinct from 'paid' then
        return 'order_not_paid';
    end if;
    update order_items
       set generation_status = 'pending',
           attempts = 0,
           crash_count = 0,
           error_code = null,
           error_message = null,
           current_step = 'Waiting to start',
           next_attempt_at = now(),
           updated_at = now()
     where id = p_item;
    return 'ok';
end;
$$;
