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
