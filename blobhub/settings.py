"""Settings, read from the environment in this one place.

With nothing set you get the embedded default: SQLite, the filesystem store, an
in-memory broker and channel layer, and secrets generated once under the data dir.
With DATABASE_URL / REDIS_URL / BLOB_STORAGE_URL set you get production.
"""

from pathlib import Path

import dj_database_url

from blobhub.env import env, env_bool, env_int, env_list, persistent_secret

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env("BLOBHUB_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env("SECRET_KEY") or persistent_secret(DATA_DIR / "secret_key", "django")
# Fernet keys, newest first: the first encrypts, all of them decrypt (rotation).
CREDENTIAL_KEYS = env_list("CREDENTIAL_KEYS") or [
    persistent_secret(DATA_DIR / "credential_key", "fernet")
]
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or ["*"]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "blobhub",
    "blobhub.console",
    "orgs",
    "blobs",
    "workflows",
    "scheduler",
    "onnx_models",
]

MIDDLEWARE = [
    "blobhub.api.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "blobhub.urls"
ASGI_APPLICATION = "blobhub.asgi.application"
AUTH_USER_MODEL = "orgs.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    # WAL lets readers and one writer work at once; IMMEDIATE transactions take the
    # write lock up front, so two writers queue on the busy timeout instead of one
    # failing half-way with "database is locked".
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": (
                    "PRAGMA journal_mode=WAL;"
                    "PRAGMA synchronous=NORMAL;"
                    "PRAGMA foreign_keys=ON;"
                ),
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, channel layer, cache ------------------------------------------
REDIS_URL = env("REDIS_URL")
EMBEDDED = not REDIS_URL

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {
            # Redis pub/sub: one PUBLISH per event and group, pushed to the servers that
            # subscribe, where the core backend took several round trips and a Lua script to
            # send and polled with BZPOPMIN to receive (bench/ws_fanout.py, docs/api.md).
            # Both are lossy; the WebSocket consumer fills any gap from the event table.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "blobhub.channel_layer.EmbeddedChannelLayer", "CONFIG": {"capacity": 1000}}}
    CELERY_BROKER_URL = "memory://localhost/"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"polling_interval": 0.05}

CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", "celery")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes the database connection after every task unless told to
# reuse it; a new PostgreSQL connection per task (a backend forked, its caches cold) cost
# more than a workflow step. Connections are reused for this many tasks, and closed sooner
# when CONN_MAX_AGE or an error says so (blobhub.celery, as Django does around a request).
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "recover-executions": {"task": "workflows.tasks.recover_executions", "schedule": 5.0},
    "scheduler-tick": {
        "task": "scheduler.tasks.tick",
        "schedule": float(env_int("SCHEDULER_TICK_SECONDS", 5)),
        # A tick nobody ran in time is pointless: the next one covers it.
        "options": {"expires": float(env_int("SCHEDULER_TICK_SECONDS", 5))},
    },
    "purge-idempotency-records": {
        "task": "blobhub.tasks.purge_idempotency_records",
        "schedule": 3600.0,
    },
    "collect-garbage": {
        "task": "blobs.tasks.collect_garbage",
        "schedule": 3600.0,
    },
    "expire-onnx-uploads": {
        "task": "onnx_models.tasks.expire_uploads",
        "schedule": 900.0,
    },
}

# --- Object storage ----------------------------------------------------------------
BLOB_STORAGE_URL = env("BLOB_STORAGE_URL") or (DATA_DIR / "objects").as_uri()
S3_ENDPOINT_URL = env("S3_ENDPOINT_URL")
BLOB_API_ENABLED = env_bool("BLOB_API_ENABLED", True)
BLOB_API_URL = env("BLOB_API_URL", "http://127.0.0.1:8000/api/v1")
BLOB_RETENTION_HOURS = env_int("BLOB_RETENTION_HOURS", 24)
# The largest object a binary upload to /api/v1/blobs may carry (it streams to disk).
BLOB_MAX_BYTES = env_int("BLOB_MAX_BYTES", 5 * 1024**3)
# Skills `read_blob` in mode `full` answers in one JSON document, so it is bounded.
SKILLS_READ_FULL_MAX_BYTES = env_int("SKILLS_READ_FULL_MAX_BYTES", 10 * 1024 * 1024)
# A Stepflow GET answered in JSON holds the object in memory; larger ones are read raw.
BLOB_JSON_READ_MAX_BYTES = env_int("BLOB_JSON_READ_MAX_BYTES", 16 * 1024 * 1024)

# --- Workflows -----------------------------------------------------------------------
WORKFLOW_MAX_VALUE_BYTES = env_int("WORKFLOW_MAX_VALUE_BYTES", 1024 * 1024)
WORKFLOW_EXECUTION_TIMEOUT_SECONDS = env_int("WORKFLOW_EXECUTION_TIMEOUT_SECONDS", 3600)
WORKFLOW_MAX_CALL_DEPTH = env_int("WORKFLOW_MAX_CALL_DEPTH", 5)
# CIDRs or host names that http.request may reach although they are private or loopback.
WORKFLOW_HTTP_ALLOWLIST = env_list("WORKFLOW_HTTP_ALLOWLIST")
WORKFLOW_HTTP_MAX_RESPONSE_BYTES = env_int("WORKFLOW_HTTP_MAX_RESPONSE_BYTES", 1024 * 1024)
WORKFLOW_HTTP_MAX_TIMEOUT_SECONDS = env_int("WORKFLOW_HTTP_MAX_TIMEOUT_SECONDS", 60)

# --- Scheduler -----------------------------------------------------------------------
SCHEDULER_TICK_SECONDS = env_int("SCHEDULER_TICK_SECONDS", 5)
# A firing found late by at most this much still fires; older ones are recorded as skipped.
SCHEDULER_GRACE_SECONDS = env_int("SCHEDULER_GRACE_SECONDS", 60)

# --- ONNX ------------------------------------------------------------------------------
ONNX_MAX_ARCHIVE_BYTES = env_int("ONNX_MAX_ARCHIVE_BYTES", 4 * 1024**3)
ONNX_MAX_MODEL_BYTES = env_int("ONNX_MAX_MODEL_BYTES", 4 * 1024**3)
ONNX_DIRECT_MAX_BYTES = 4 * 1024 * 1024  # `upload` and `download` (API.md §3.3)
ONNX_PART_BYTES = env_int("ONNX_PART_BYTES", 16 * 1024 * 1024)
ONNX_TRANSFER_URL_TTL_SECONDS = env_int("ONNX_TRANSFER_URL_TTL_SECONDS", 3600)
ONNX_INFER_MAX_INPUT_ELEMENTS = env_int("ONNX_INFER_MAX_INPUT_ELEMENTS", 10_000_000)
ONNX_INFER_TIMEOUT_SECONDS = env_int("ONNX_INFER_TIMEOUT_SECONDS", 30)
ONNX_SESSION_CACHE_SIZE = env_int("ONNX_SESSION_CACHE_SIZE", 8)
# Where clients reach this server, for the file store's signed part URLs; empty: from the request.
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", "")

# --- API ---------------------------------------------------------------------------
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 5 * 1024 * 1024)
# Routes whose bodies stream to disk take larger bodies (longest matching prefix wins).
REQUEST_BODY_LIMITS_BY_PREFIX = {
    "/api/v1/blobs": BLOB_MAX_BYTES,
    # One part of a multipart model upload (the plan never makes parts larger).
    "/v1/transfers/uploads/": max(ONNX_PART_BYTES, -(-ONNX_MAX_ARCHIVE_BYTES // 10_000)),
}
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
THROTTLE_RATE = env("THROTTLE_RATE", "1200/min")
LOGIN_THROTTLE_RATE = env("LOGIN_THROTTLE_RATE", "20/min")
# Reverse proxies in front of the app that append to X-Forwarded-For. With 0 the throttles count
# REMOTE_ADDR only: a header the client can write itself must not choose its throttle bucket.
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0)
ACCESS_TOKEN_TTL_SECONDS = env_int("ACCESS_TOKEN_TTL_SECONDS", 3600)
REFRESH_TOKEN_TTL_SECONDS = env_int("REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600)
IDEMPOTENCY_TTL_HOURS = 24

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "orgs.authentication.ApiKeyAuthentication",
        "orgs.authentication.BearerTokenAuthentication",
        "orgs.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["orgs.authentication.IsAuthenticatedPrincipal"],
    "DEFAULT_THROTTLE_CLASSES": ["blobhub.api.throttling.PrincipalRateThrottle"],
    "NUM_PROXIES": TRUSTED_PROXIES,
    "DEFAULT_PARSER_CLASSES": ["blobhub.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "blobhub.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "BlobHub API",
    "DESCRIPTION": "Organizations, typed versioned blobs, revisions and their engines.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"MemberRole": "orgs.models.Role", "ApiKeyRole": "orgs.models.ApiKey.KeyRole"},
}

# --- Sessions, security --------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve static files straight from the apps, so `serve` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOG_LEVEL = env("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "daphne": {"level": "WARNING"},
        "celery": {"level": "WARNING" if EMBEDDED else "INFO"},
    },
}
