"""The Celery app. Tasks take ids and call services (STYLE.md)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blobhub.settings")

app = Celery("blobhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
