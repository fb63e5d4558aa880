"""The embedded default's background half: a Celery worker and the beat, as threads.

`manage.py serve` starts this beside the ASGI server. The broker is kombu's in-memory
transport, which is shared by every thread of the process, so a task sent by a
request is consumed by these worker threads.
"""

import socket
import threading

from celery.beat import EmbeddedService
from django.conf import settings

from blobhub.celery import app


class EmbeddedRuntime:
    def __init__(self, concurrency: int = 4, beat: bool = True):
        self.worker = app.WorkController(
            pool_cls="threads",
            concurrency=concurrency,
            hostname=f"embedded@{socket.gethostname()}",
            without_mingle=True,
            without_gossip=True,
            without_heartbeat=True,
        )
        self._thread = threading.Thread(target=self.worker.start, name="celery-worker", daemon=True)
        self.beat = (
            EmbeddedService(app, thread=True, schedule_filename=settings.CELERY_BEAT_SCHEDULE_FILENAME)
            if beat
            else None
        )

    def start(self) -> None:
        self._thread.start()
        if self.beat is not None:
            self.beat.start()

    def stop(self) -> None:
        if self.beat is not None:
            self.beat.stop()
        self.worker.stop(in_sighandler=False)
        self._thread.join(timeout=30)
