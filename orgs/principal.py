"""Who is calling: a user, an API key or an anonymous token holder."""

from dataclasses import dataclass

from orgs.models import ApiKey, User


@dataclass(frozen=True)
class Principal:
    user: User | None = None
    api_key: ApiKey | None = None
    anonymous_id: str | None = None
    client_ip: str | None = None

    @property
    def is_user(self) -> bool:
        return self.user is not None and self.api_key is None

    @property
    def is_anonymous(self) -> bool:
        return self.anonymous_id is not None

    @property
    def caller_id(self) -> str:
        """A stable name for rate limits and idempotency records."""
        if self.api_key is not None:
            return f"key:{self.api_key.id}"
        if self.user is not None:
            return f"user:{self.user.id}"
        return f"anon:{self.anonymous_id}"

    @property
    def label(self) -> str:
        """How the audit log names the actor (never a secret)."""
        if self.api_key is not None:
            return f"api key {self.api_key.lookup} ({self.api_key.role})"
        if self.user is not None:
            return f"user {self.user.username}"
        return "anonymous"
