"""Encryption of credentials at rest with rotatable keys from CREDENTIAL_KEYS."""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.CREDENTIAL_KEYS))


def encrypt(value: str) -> str:
    """Encrypt with the newest key (the first in CREDENTIAL_KEYS)."""
    return _current().encrypt(value.encode()).decode()


def decrypt(ciphertext: str) -> str:
    """Decrypt with whichever configured key encrypted it. Call only where the secret is used."""
    try:
        return _current().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise RuntimeError("No configured credential key decrypts this credential.") from None


def reencrypt(ciphertext: str) -> str:
    """The same secret under the newest key (for key rotation)."""
    return _current().rotate(ciphertext.encode()).decode()
