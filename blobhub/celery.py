"""The Celery app. Tasks take ids and call services (STYLE.md)."""

import gc
import logging
import os

from celery import Celery
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blobhub.settings")

app = Celery("blobhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect  # each pool process, once forked
@worker_ready.connect  # the worker's own process (where a threads pool runs the tasks)
def _freeze_loaded_objects(**kwargs) -> None:
    """Set what is loaded at start aside from the garbage collector, as blobhub.asgi does:
    full collections then scan only what tasks made, not the whole of Django and the engines."""
    gc.freeze()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(sender=None, **kwargs) -> None:
    """Around each task, what Django does around each request: close a database connection
    that is past CONN_MAX_AGE or broken (CELERY_DB_REUSE_MAX keeps the others open). Not for
    an eager task, which runs inside its caller's transaction."""
    from django.db import close_old_connections

    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


@worker_process_shutdown.connect  # each pool process, as it exits
@worker_shutdown.connect  # the worker's own process
def _send_pending_events(**kwargs) -> None:
    """Live events are published in the background (blobs.events): send what is left before
    the process exits. They are stored either way; this spares subscribers a gap to fill."""
    from blobs import events

    try:
        events.flush(timeout=5)
    except Exception:  # the process exits regardless
        logging.getLogger("blobhub.events").warning("live events left unsent at exit", exc_info=True)
