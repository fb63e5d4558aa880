# The image behind web, worker and beat in docker-compose.yml; the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BLOBHUB_DATA_DIR=/var/lib/blobhub

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The data dir exists in the image owned by the app user, so a fresh named volume
# mounted there inherits that ownership.
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home blobhub \
    && mkdir -p /var/lib/blobhub/beat \
    && chown -R blobhub:blobhub /var/lib/blobhub

COPY . .

USER blobhub
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "blobhub.asgi:application"]
