"""Reading configuration from the environment (and `*_FILE` paths for secrets)."""

import os
import secrets
import tempfile
from base64 import urlsafe_b64encode
from pathlib import Path


def env(name: str, default: str | None = None) -> str | None:
    """The variable's value, else the contents of the file named by `<name>_FILE`."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return default


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = env(name)
    return int(value) if value else default


def env_list(name: str) -> list[str]:
    value = env(name) or ""
    return [item.strip() for item in value.split(",") if item.strip()]


def persistent_secret(path: Path, kind: str) -> str:
    """A secret generated on first use and kept in the data dir (embedded default)."""
    if path.exists():
        return path.read_text().strip()
    if kind == "fernet":
        value = urlsafe_b64encode(secrets.token_bytes(32)).decode()
    else:
        value = secrets.token_urlsafe(50)
    # Write a private temp file of a unique name (processes in separate containers may share
    # a pid and this directory), then link it into place: linking fails if another process
    # got there first, and nobody ever reads a half-written secret.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0o600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_text().strip()
