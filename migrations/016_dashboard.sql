-- The operators' dashboard (monitor/dashboard.py, GET /dashboard/data) and the queue gauges of
-- /metrics (book_monitor_queue_depth, book_monitor_queue_oldest_wait_seconds). Read-only,
-- stable functions; only new ones, nothing earlier is redefined.
--
-- No personal data leaves here: ids, states, progress, codes and counts; a step text or a
-- parent-facing error sentence that names the child has the name replaced by "[child]"
-- (_ops_mask_child_name, 013_operator_queries.sql). No paths, URLs, photos or user ids.

-- The claimable queue in one round trip: how many items wait and how long the longest-waiting
-- one has been claimable (since its next_attempt_at, which a retry's backoff moves forward, so
-- a planned wait does not count as queue age). 0 seconds when nothing waits.
create or replace function order_queue_gauges()
returns jsonb
language sql
stable
as $$
    select jsonb_build_object(
        'depth', count(*),
        'oldest_wait_seconds',
            coalesce(extract(epoch from now() - min(oi.next_attempt_at)), 0)::double precision)
      from order_items oi
      join orders o on o.id = oi.order_id
     where o.payment_status = 'paid'
       and oi.generation_status = 'pending'
       and oi.next_attempt_at <= now();
$$;

-- Everything the dashboard shows, in one round trip: the queue counts of ops_queue_status(),
-- the items being drawn (every worker's, not just this process's), the most recent failures,
-- and the AI money recorded today. "Today" is the UTC day; an item's ai_usage.cost_usd is its
-- whole cost so far, so the sum is the cost of the items that changed today, which includes
-- earlier spend of an item that started yesterday: the dashboard labels it so.
create or replace function ops_dashboard(p_in_flight integer default 50, p_failures integer default 20)
returns jsonb
language sql
stable
as $$
    select jsonb_build_object(
        'queue', ops_queue_status(),
        'in_flight', (
            select coalesce(jsonb_agg(to_jsonb(f) order by f.lease_expires_at, f.id), '[]'::jsonb)
              from (select oi.id, oi.progress, oi.pages_done, oi.pages_total,
                           _ops_mask_child_name(oi.current_step, oi.child_name) as current_step,
                           oi.current_step_code, oi.claimed_by, oi.attempts, oi.max_attempts,
                           oi.lease_expires_at, oi.lease_expires_at < now() as lease_expired,
                           oi.updated_at
                      from order_items oi
                     where oi.generation_status = 'processing'
                     order by oi.lease_expires_at, oi.id
                     limit greatest(coalesce(p_in_flight, 50), 0)) f),
        'failures', (
            select coalesce(jsonb_agg(to_jsonb(f) order by f.updated_at desc, f.id), '[]'::jsonb)
              from (select oi.id, oi.error_code,
                           _ops_mask_child_name(oi.error_message, oi.child_name) as error_message,
                           oi.attempts, oi.max_attempts, oi.updated_at, o.payment_status
                      from order_items oi
                      join orders o on o.id = oi.order_id
                     where oi.generation_status = 'failed'
                     order by oi.updated_at desc, oi.id
                     limit greatest(coalesce(p_failures, 20), 0)) f),
        'spend_today', (
            select jsonb_build_object(
                       'since', date_trunc('day', now() at time zone 'utc') at time zone 'utc',
                       'cost_usd', coalesce(sum((ai_usage ->> 'cost_usd')::numeric)
                                       filter (where jsonb_typeof(ai_usage -> 'cost_usd') = 'number'), 0),
                       'unpriced_calls', coalesce(sum((ai_usage ->> 'unpriced_calls')::bigint)
                                       filter (where jsonb_typeof(ai_usage -> 'unpriced_calls') = 'number'), 0),
                       'items', count(*))
              from order_items
             where updated_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'
               and ai_usage is not null and ai_usage <> '{}'::jsonb)
    );
$$;

-- Run as owner, executable by book_monitor (migrations/011).
select _secure_daemon_functions(array['order_queue_gauges', 'ops_dashboard']);
