-- Retention runs with the service role and deletes what a row names: it must never become a
-- confused deputy. A row written before migration 011 (or with its trigger switched off) may name
-- another family's upload, and a checkpoint row may name anything; deleting either would destroy
-- data that is not this item's.

-- Redefined from 006_retention.sql: (a) the child photo is offered for deletion only when it is in
-- the upload folder of the item's order's user (photo_path_in_user_uploads, migration 011); (b) a
-- page image only when it is under the item's own generated/{item id}/ folder; nothing else
-- changes (the photo still stays while a newer item of the same path is not yet due).
create or replace function items_due_for_photo_deletion(p_days integer, p_limit integer)
returns table (item_id uuid, paths text[])
language sql
stable
as $$
    with due as (
        select oi.id, oi.child_photo_path, oi.cover_image_path, oi.pdf_path, o.user_id
          from order_items oi
          join orders o on o.id = oi.order_id
         where oi.generation_status in ('completed', 'failed')
           and oi.photo_deleted_at is null
           and coalesce(oi.generated_at, oi.updated_at) < now() - make_interval(days => p_days)
         order by coalesce(oi.generated_at, oi.updated_at), oi.id
         limit greatest(p_limit, 0)
    )
    select d.id,
           array(
               select p from (
                   select d.child_photo_path as p
                    where d.child_photo_path is not null
                      and photo_path_in_user_uploads(d.child_photo_path, d.user_id)
                      and not exists (
                          select 1 from order_items other
                           where other.child_photo_path = d.child_photo_path
                             and other.id <> d.id
                             and not (other.generation_status in ('completed', 'failed')
                                      and coalesce(other.generated_at, other.updated_at)
                                          < now() - make_interval(days => p_days)))
                   union
                   select c.image_path
                     from order_item_pages c
                    where c.order_item_id = d.id
                      and c.page_number > 0
                      and c.image_path like 'generated/' || d.id::text || '/%'
               ) candidates
                where p is distinct from d.cover_image_path
                  and p is distinct from d.pdf_path
                order by p
           )
      from due d;
$$;

-- Run as owner, executable by book_monitor (migrations/011).
select _secure_daemon_functions(array['items_due_for_photo_deletion']);
