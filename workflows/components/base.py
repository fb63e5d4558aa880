"""Components: Python classes that declare their ports and compute on plain values."""

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Port:
    """A port's declared value type, and for config ports whether it is required and its default."""

    type: str = "any"
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    backoff_seconds: float = 1.0
    backoff_factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1`."""
        return self.backoff_seconds * (self.backoff_factor ** max(attempt - 1, 0))


class ComponentError(Exception):
    """A component's failure: it fires the failure routes with `{code, message}`."""

    def __init__(self, code: str, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def render(self) -> dict:
        return {"code": self.code, "message": self.message}


class Component:
    """Base class. Subclasses set `type` and their ports, and implement `run`.

    `run(ctx, config, inputs)` receives plain values by route and returns the plain
    output values by route. Raise ComponentError to fail (retryable ones are retried
    under `retry`).
    """

    type: ClassVar[str]
    config: ClassVar[dict[str, Port]] = {}
    inputs: ClassVar[dict[str, Port]] = {}
    outputs: ClassVar[dict[str, Port]] = {}
    # flow.end accepts input ports of any route.
    any_input_routes: ClassVar[bool] = False
    # The engine handles these itself (they complete as the execution begins).
    entry: ClassVar[bool] = False
    # No I/O and no side effects, quick over inputs of bounded size (WORKFLOW_MAX_VALUE_BYTES):
    # the engine may run it inside the transaction that claims its step, without a thread
    # (a run that is cut short leaves nothing behind, and the step is simply run again).
    pure: ClassVar[bool] = False
    timeout_seconds: ClassVar[float] = 30.0
    retry: ClassVar[RetryPolicy] = RetryPolicy()

    def run(self, ctx: Any, config: dict, inputs: dict) -> dict:
        raise NotImplementedError

    @classmethod
    def timeout_for(cls, config: dict) -> float:
        return cls.timeout_seconds


_registry: dict[str, type[Component]] = {}


def register(cls: type[Component]) -> type[Component]:
    _registry[cls.type] = cls
    return cls


def component_class(component_type: str) -> type[Component] | None:
    return _registry.get(component_type)


def registered_types() -> list[str]:
    return sorted(_registry)
