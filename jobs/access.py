"""Who sees every job: a superuser, or a user given the permission jobs.view_job (by itself or through a
group: Django's ModelBackend rule, ``user.has_perm``). Everyone else sees only their own jobs.

The polled reads ask this on every request. ``has_perm`` costs two queries, and building the same rule into
the jobs' query costs more than the rest of the request in query compilation, so the answer is kept in the
cache (Redis in production: shared by every web process), tagged with a generation. Any change that can
change the answer (a user's permissions or groups, a group's permissions, a group, permission or user deleted)
draws a new generation, at once and again when its transaction commits, and so does every ``migrate`` (a
new or restored database may reuse user ids); a lookup reads its entry and the
generation in one round trip and asks ``has_perm`` again where they differ. ``is_active`` and
``is_superuser`` are read from the request's own user row, never from the cache.
"""
from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import m2m_changed, post_migrate, pre_delete
from django.dispatch import receiver

SEES_EVERY_JOB = "jobs.view_job"
GENERATION_KEY = "access:generation"
ENTRY_TTL_S = 600  # entries of users who stopped asking leave the cache; correctness comes from the generation


def _entry_key(user_id: int) -> str:
    return f"access:sees-every-job:{user_id}"


def sees_every_job(user) -> bool:
    if not user.is_active:
        return False
    if user.is_superuser:
        return True
    key = _entry_key(user.pk)
    found = cache.get_many([GENERATION_KEY, key])
    generation, entry = found.get(GENERATION_KEY), found.get(key)
    if generation is not None and entry is not None and entry[0] == generation:
        return entry[1]
    if generation is None:
        cache.add(GENERATION_KEY, uuid.uuid4().hex, None)
        generation = cache.get(GENERATION_KEY)
    granted = user.has_perm(SEES_EVERY_JOB)
    cache.set(key, (generation, granted), ENTRY_TTL_S)
    return granted


def forget_all() -> None:
    """A new generation: every user's answer is looked up again."""
    cache.set(GENERATION_KEY, uuid.uuid4().hex, None)


def _changed() -> None:
    # At once (readers on this connection see the change already) and at commit (readers elsewhere only now).
    forget_all()
    transaction.on_commit(forget_all)


User = get_user_model()


@receiver(m2m_changed, sender=User.user_permissions.through, dispatch_uid="access-user-permissions")
@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="access-user-groups")
@receiver(m2m_changed, sender=Group.permissions.through, dispatch_uid="access-group-permissions")
def _membership_changed(sender, action: str, **kwargs) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        _changed()


@receiver(pre_delete, sender=Group, dispatch_uid="access-group-deleted")
@receiver(pre_delete, sender=Permission, dispatch_uid="access-permission-deleted")
@receiver(pre_delete, sender=User, dispatch_uid="access-user-deleted")
def _row_deleted(sender, **kwargs) -> None:
    _changed()


@receiver(post_migrate, dispatch_uid="access-migrated")
def _migrated(sender, **kwargs) -> None:
    forget_all()
