"""The engine registry: how a blob type plugs into blobs (DESIGN §2).

An engine registers, from its AppConfig.ready(), its type string, a validator run at
commit, its data-channel queries and commands, its limits, and an optional hook for
when a blob's default revision changes. `blobs` never imports an engine.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orgs.models import Role


@dataclass(frozen=True)
class Problem:
    """One reason a revision's content is invalid, with the JSON path it concerns."""

    path: str
    message: str
    level: str = "error"

    def render(self) -> dict:
        return {"path": self.path, "message": self.message, "level": self.level}


@dataclass(frozen=True)
class Handler:
    """A data-channel query or command.

    `run(ctx, args)` returns the payload of the success envelope. A command with
    `writes_content` needs a writable draft; other commands (runtime ones: sessions,
    executions) work on any ready revision.
    """

    run: Callable[[Any, dict], dict]
    writes_content: bool = False
    needs: Role = Role.READ
    # Whether callers who read the blob only because it is public may run this query.
    public: bool = True


@dataclass
class Engine:
    type: str
    validate: Callable[[Any], list[Problem]] | None = None
    queries: dict[str, Handler] = field(default_factory=dict)
    commands: dict[str, Handler] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    on_default_changed: Callable[[Any, Any], None] | None = None


_engines: dict[str, Engine] = {}


def register(engine: Engine) -> None:
    if engine.type in _engines and _engines[engine.type] is not engine:
        raise RuntimeError(f"An engine for {engine.type} is registered already.")
    _engines[engine.type] = engine


def engine_for(blob_type: str) -> Engine:
    """The registered engine, or a plain one whose content validates trivially."""
    return _engines.get(blob_type) or Engine(type=blob_type)


def all_limits() -> dict[str, int]:
    merged: dict[str, int] = {}
    for engine in _engines.values():
        merged.update(engine.limits)
    return merged


def limits_for(blob_type: str) -> dict[str, int]:
    return dict(engine_for(blob_type).limits)
