-- A daemon starting under a WORKER_ID that still holds items is a restart after a crash: a
-- process that has only just started has no work, so those leases belong to its dead
-- predecessor. Expiring them lets the next claim (by any worker) resume the items from their
-- checkpoints now instead of after LEASE_SECONDS. The reclaim counts as a new attempt, as any
-- crash does. WORKER_ID must therefore be unique among running processes. Returns the count.
create or replace function expire_leases_of(p_worker text)
returns integer
language sql
as $$
    with expired as (
        update order_items
           set lease_expires_at = now() - interval '1 millisecond',
               current_step = 'Waiting to resume',
               updated_at = now()
         where claimed_by = p_worker
           and generation_status = 'processing'
           and lease_expires_at >= now()
        returning 1
    )
    select count(*)::integer from expired;
$$;
