-- A released item (graceful shutdown) keeps its place in the queue instead of going to the back:
-- it is a half-finished book whose customer has waited longest, and its checkpoints let the next
-- claimant resume at once. Only next_attempt_at changes from 002; it is no longer reset to now().
create or replace function release_order_item(p_item uuid, p_worker text)
returns boolean
language sql
as $$
    with released as (
        update order_items
           set generation_status = 'pending',
               attempts = greatest(attempts - 1, 0),
               current_step = 'Waiting to resume',
               claimed_by = null,
               lease_expires_at = null,
               updated_at = now()
         where id = p_item
           and claimed_by = p_worker
           and generation_status = 'processing'
        returning 1
    )
    select exists (select 1 from released);
$$;
