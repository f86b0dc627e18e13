-- Photo retention (PHOTO_RETENTION_DAYS): some days after an item completed or failed for good,
-- the child's photo and the intermediate page images are deleted from storage and their paths
-- cleared here. The finished PDF and the personalized cover stay. The daemon's retention job
-- lists due items, deletes their objects (idempotent), then marks each item done.

alter table order_items add column if not exists photo_deleted_at timestamptz;

-- Items finished (completed, or failed terminally) more than p_days ago whose photo and page
-- images have not been purged yet, with the storage paths to delete. The child photo is left out
-- of the paths while another item that is not due yet still uses the same upload (a parent who
-- reorders with the same photo); its path is still cleared, and the last item to expire deletes it.
-- The cover and the PDF are never listed, even when a page checkpoint points at the same object.
create or replace function items_due_for_photo_deletion(p_days integer, p_limit integer)
returns table (item_id uuid, paths text[])
language sql
stable
as $$
    with due as (
        select oi.id, oi.child_photo_path, oi.cover_image_path, oi.pdf_path
          from order_items oi
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
               ) candidates
                where p is distinct from d.cover_image_path
                  and p is distinct from d.pdf_path
                order by p
           )
      from due d;
$$;

-- Clears the photo path and drops the page checkpoints (their images are gone, so a later
-- operator retry must draw them again). Only while the item is still finished; false otherwise.
-- Repeating it is harmless.
create or replace function mark_photo_deleted(p_item uuid)
returns boolean
language plpgsql
as $$
begin
    update order_items
       set child_photo_path = null,
           photo_deleted_at = coalesce(photo_deleted_at, now()),
           updated_at = now()
     where id = p_item
       and generation_status in ('completed', 'failed');
    if not found then
        return false;
    end if;
    delete from order_item_pages where order_item_id = p_item and page_number > 0;
    return true;
end;
$$;
