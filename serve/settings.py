"""Service settings: typed, read from flags, ``DISTILLWATCH_*`` variables and defaults.

What it knows: every knob of ``distillwatch serve`` and which values are unsafe or make no
sense. Flags (keyword arguments) win over environment variables, which win over defaults
(CONTRACT §5). API keys are hashed (SHA-256) as soon as they are read; the plaintext is
never kept. Binding a non-loopback address without API keys is refused unless
``allow_insecure`` is set explicitly.

What it does not know: the model, the store, HTTP.

Example::

    settings = load_settings(port=8080)      # DISTILLWATCH_* for everything else
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MIN_BODY_BYTES = 1024
MAX_BODY_BYTES = 1024 * MIB
MAX_EVENTS_PER_REQUEST = 1_000_000
SHORT_KEY_CHARS = 16


class SettingsError(ValueError):
    """Settings the service refuses to start with; one line naming the setting."""


def hash_key(key: str | bytes) -> str:
    """The SHA-256 hex digest under which an API key is held."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hashlib.sha256(raw).hexdigest()


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


class ServiceSettings(BaseSettings):
    """Configuration of ``distillwatch serve`` (environment prefix ``DISTILLWATCH_``)."""

    model_config = SettingsConfigDict(
        env_prefix="DISTILLWATCH_", extra="ignore", validate_default=True, frozen=True
    )

    model: Path | None = Field(
        None, description="model directory; None means the shipped model (model/default)"
    )
    db: Path = Field(
        Path("distillwatch.sqlite3"), description="SQLite file holding every account's state"
    )
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        repr=False,
        description=(
            "accepted API keys, comma separated in DISTILLWATCH_API_KEYS; held only as "
            "SHA-256 hex digests (hashed when read)"
        ),
    )
    max_body_bytes: int = Field(
        10 * MIB, ge=MIN_BODY_BYTES, le=MAX_BODY_BYTES, description="request body limit (413)"
    )
    max_events_per_request: int = Field(
        10_000, ge=1, le=MAX_EVENTS_PER_REQUEST, description="events in one request (413)"
    )
    host: str = Field("127.0.0.1", min_length=1, description="address to bind")
    port: int = Field(8000, ge=1, le=65_535, description="TCP port to bind")
    allow_insecure: bool = Field(
        False, description="explicit opt-in to serve a non-loopback address without API keys"
    )
    torch_threads: int = Field(
        1,
        ge=1,
        le=256,
        description=(
            "torch intra-op threads of the serve process; one step of the network is too "
            "small to split, concurrency comes from serving requests in parallel"
        ),
    )
    embed_backend: Literal["onnx", "torch", "onnx-int8"] | None = Field(
        None,
        description=(
            "run the model's encoder through this backend instead of its saved one "
            "(onnx-int8: 2-3x faster on CPU, slightly less exact; see the model card)"
        ),
    )
    workers: int = Field(
        0,
        ge=0,
        le=256,
        description=(
            "worker processes that update account states (each account always on the same "
            "one), so that ingest uses every core; 0 updates in the serve process itself. "
            "The serve process still embeds, stores and answers; about one per core"
        ),
    )
    state_cache_accounts: int = Field(
        4096,
        ge=0,
        le=10_000_000,
        description=(
            "recently active accounts whose state is kept deserialized in memory (shared "
            "out among the workers when there are any)"
        ),
    )
    fleet_max_prompts_per_account: int = Field(
        64,
        ge=1,
        le=100_000,
        description=(
            "recent prompts per account kept for live fleet linking (older ones are evicted "
            "from the fleet window when new ones arrive)"
        ),
    )
    fleet_max_prompts: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description=(
            "prompts in the whole live fleet window (about 0.8 KB each on disk with a 384-d "
            "embedder, ~2-3x that in memory); the oldest arrivals are evicted beyond it"
        ),
    )
    fleet_min_prompt_prob: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=(
            "with a model that has a per-prompt head, only prompts it gives at least this "
            "harvesting probability enter the live fleet window (None: the model's fleet "
            "stage setting, else 0.5; 0: every prompt), as in batch fleets"
        ),
    )
    fleet_cache_seconds: float = Field(
        5.0,
        ge=0.0,
        le=3600.0,
        description="GET /v1/fleets answers its last result while younger than this",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _hash_keys(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            keys = [k.strip() for k in value.split(",")]
        elif isinstance(value, list | tuple | set | frozenset):
            keys = [str(k).strip() for k in value]
        else:
            raise ValueError("expected comma-separated API keys")
        keys = [k for k in keys if k]
        for k in keys:
            if not all(0x21 <= ord(c) <= 0x7E for c in k):
                raise ValueError(
                    "an API key may hold only visible ASCII characters (no spaces, no commas)"
                )
        if any(len(k) < SHORT_KEY_CHARS for k in keys):
            log.warning(
                "an API key is shorter than %d characters; use long random keys", SHORT_KEY_CHARS
            )
        return tuple(sorted({hash_key(k) for k in keys}))

    @field_validator("db")
    @classmethod
    def _db_parent_exists(cls, value: Path) -> Path:
        if value.exists() and value.is_dir():
            raise ValueError(f"{value} is a directory, expected an SQLite file path")
        parent = value.expanduser().resolve().parent
        if not parent.is_dir():
            raise ValueError(f"directory {parent} does not exist")
        return value

    @model_validator(mode="after")
    def _fleet_window_holds_an_account(self) -> ServiceSettings:
        if self.fleet_max_prompts < self.fleet_max_prompts_per_account:
            raise ValueError(
                f"fleet_max_prompts ({self.fleet_max_prompts}) must be at least "
                f"fleet_max_prompts_per_account ({self.fleet_max_prompts_per_account})"
            )
        return self

    @model_validator(mode="after")
    def _refuse_open_unauthenticated(self) -> ServiceSettings:
        if not self.api_keys and not is_loopback(self.host) and not self.allow_insecure:
            raise ValueError(
                f"refusing to serve {self.host} without API keys: set DISTILLWATCH_API_KEYS, "
                "bind 127.0.0.1, or set DISTILLWATCH_ALLOW_INSECURE=1 to accept the risk"
            )
        return self

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys)


def load_settings(**overrides: Any) -> ServiceSettings:
    """Settings from ``overrides`` (flags; ``None`` means not given), the environment, defaults.

    Raises :class:`SettingsError` with one line naming each bad setting.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return ServiceSettings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            where = f"{name} (DISTILLWATCH_{name.upper()})" if err["loc"] else name
            problems.append(f"{where}: {err['msg']}")
        raise SettingsError("invalid service settings: " + "; ".join(problems)) from None
