"""Settings for the test suites: the production settings with test-friendly knobs."""

import os
import tempfile

os.environ.setdefault("BLOBHUB_DATA_DIR", tempfile.mkdtemp(prefix="blobhub-test-"))

from blobhub.settings import *  # noqa: E402,F403

# Tasks run inline in the fast suite; integration tests start real workers instead.
CELERY_TASK_ALWAYS_EAGER = True
THROTTLE_RATE = "100000/min"
LOGIN_THROTTLE_RATE = "100000/min"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A file, not Django's shared-cache in-memory default: threads of the embedded worker
# then meet WAL and the busy timeout as in production, instead of the shared cache's
# table locks ("database table is locked"), which no timeout waits out.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405
