"""The one frozen settings object.

Every setting is an environment variable ``STREAMREC_<NAME>`` (e.g. ``STREAMREC_DB_URL``) and
most are also a flag of ``streamrec run``; flags win over the environment, which wins over the
defaults below. Units are in the names (``_ms``, ``_bytes``). Nothing but this module reads the
environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from streamrec.errors import ConfigError


class ArmSpec(BaseModel):
    """One A/B arm of ``STREAMREC_AB_ARMS`` (a JSON list of these objects)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    weight: float = Field(1.0, gt=0, description="share of users, relative to the others")
    weight_ann: float | None = Field(None, ge=0)
    weight_trending: float | None = Field(None, ge=0)
    weight_covisit: float | None = Field(None, ge=0)
    explore_rate: float | None = Field(None, ge=0, lt=1)
    impression_demote_strength: float | None = Field(None, ge=0)
    model_version: int | None = Field(
        None,
        ge=1,
        description="the model repository version this arm ranks with; every arm must then "
        "name the same one (one model is served at a time: README, A/B arms)",
    )

    def overrides(self) -> dict[str, float]:
        """The ranking settings this arm changes."""
        fixed = {"name", "weight", "model_version"}
        return {k: v for k, v in self.model_dump().items() if k not in fixed and v is not None}


class Settings(BaseSettings):
    """All worker settings, with defaults that run on one laptop.

    See the configuration table in README.md for the meaning of each field.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", frozen=True, extra="forbid")

    # Kafka
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    output_bootstrap_servers: str | None = Field(
        None, description="where recommendations and dead letters go (default: bootstrap_servers)"
    )
    output_client: Literal["kafka-python", "confluent-kafka"] = Field(
        "kafka-python",
        description=(
            "the client that publishes recommendations and dead letters: confluent-kafka"
            " (optional extra streamrec[confluent]) sends on native threads instead of the"
            " worker's GIL"
        ),
    )
    group_id: str = Field("streamrec", description="consumer group of the workers")
    client_id: str = Field("streamrec", description="Kafka client id prefix")
    events_topic: str = Field("streamrec.events", description="input events topic")
    items_topic: str = Field("streamrec.items", description="catalog topic")
    recs_topic: str = Field("streamrec.recommendations", description="output topic")
    dlq_topic: str = Field("streamrec.events.dlq", description="dead-letter topic")
    session_timeout_ms: int = Field(6000, ge=1000, description="consumer group session timeout")
    heartbeat_interval_ms: int = Field(1000, ge=100, description="consumer heartbeat interval")
    max_poll_interval_ms: int = Field(
        3000, ge=1000, description="max time between polls before the group evicts us"
    )
    poll_timeout_ms: int = Field(200, ge=0, description="how long one poll waits for records")
    batch_max_events: int = Field(200, ge=1, description="records processed per batch at most")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    # Model, index, ranking (the ranking defaults were chosen on a validation window by
    # benchmarks/tune.py: BENCHMARKS.md; tests/docs/test_tuning.py keeps them in step)
    model_dir: Path = Field(
        Path("model"),
        description="model directory written by `streamrec train`, or a repository of "
        "numbered versions (the highest complete one is served and newer ones are followed)",
    )
    model_poll_interval_s: float = Field(
        30.0, ge=0, description="how often a model repository is checked for a newer version"
    )
    top_k: int = Field(10, ge=1, le=1000, description="items per recommendation")
    encoder_threads: int = Field(1, ge=1, description="onnxruntime intra-op threads")
    hnsw_m: int = Field(16, ge=2, description="hnswlib M (graph degree)")
    hnsw_ef_construction: int = Field(200, ge=10, description="hnswlib ef at build time")
    hnsw_ef_search: int = Field(128, ge=10, description="hnswlib ef at query time")
    index_snapshot_dir: Path | None = Field(
        None, description="directory of index snapshots (unset: no snapshots, rebuild at start)"
    )
    index_snapshot_interval_s: float = Field(
        300.0, gt=0, description="seconds between index snapshots (one more at shutdown)"
    )
    index_compact_deleted_ratio: float = Field(
        0.2, gt=0, le=1, description="rebuild the graph when deleted items exceed this share"
    )
    exclude_history: bool = Field(True, description="never recommend items already in history")
    history_max_len: int = Field(200, ge=1, description="events of history kept per user")
    ranking: Literal["fused", "encoder"] = Field(
        "fused", description="fused sources (encoder, trending, co-visitation) or encoder only"
    )
    fusion_method: Literal["rrf", "score"] = Field(
        "rrf", description="merge of the candidate sources: reciprocal rank or min-max scores"
    )
    fusion_rrf_k: float = Field(60.0, ge=0, description="the reciprocal-rank fusion constant")
    weight_ann: float = Field(1.0, ge=0, description="fusion weight of the encoder's candidates")
    weight_trending: float = Field(0.5, ge=0, description="fusion weight of the trending list")
    weight_covisit: float = Field(1.5, ge=0, description="fusion weight of co-visitation")
    blend_half_history: float = Field(
        3.0, ge=0, description="history length at which the encoder gets half its weight"
    )
    trending_floor: float = Field(
        0.0, ge=0, le=1, description="share of the trending weight kept for long histories"
    )
    candidate_pool: int = Field(100, ge=1, le=10000, description="candidates per source")
    explore_rate: float = Field(
        0.03, ge=0.0, lt=1.0, description="probability that a slot shows an exploration item"
    )
    explore_from: Literal["ann", "fused", "catalog"] = Field(
        "catalog", description="exploration pool: encoder candidates, fused tail or whole catalog"
    )
    explore_pool: int = Field(100, ge=1, description="size of the ann and fused pools")
    explore_seed: int = Field(0, description="seed of the exploration policy (per event id)")
    trending_half_life_s: float = Field(
        7 * 86400.0, gt=0, description="half-life of the trending list, in event-time seconds"
    )
    trending_min_score: float = Field(
        0.001,
        ge=0,
        description="decayed score (in clicks) under which an item's trending row is forgotten",
    )
    covisit_window: int = Field(20, ge=1, description="earlier events of a user paired per event")
    covisit_half_life_s: float = Field(
        30 * 86400.0, ge=0, description="half-life of co-visitation counts, event-time s (0: none)"
    )
    covisit_max_users: int = Field(
        150_000,
        ge=1,
        description=(
            "users whose recent window co-visitation remembers (least recently active "
            "forgotten first): about 1 to 2 KiB each, 150,000 users at most ~300 MiB"
        ),
    )
    covisit_max_pairs: int = Field(
        3_000_000,
        ge=1000,
        description=(
            "co-visitation neighbour entries kept over all items (least recently counted rows "
            "forgotten first): about 72 bytes each, 3,000,000 about 210 MiB"
        ),
    )
    purchase_weight: float = Field(
        3.0, ge=0, description="weight of a purchase relative to a click (trending, co-visitation)"
    )
    new_item_vectors: bool = Field(
        True, description="vectors for never-trained items from co-occurrence evidence"
    )
    new_item_prior: float = Field(
        0.0, ge=0, description="co-occurrence weight at which a new item's vector has half norm"
    )
    new_item_refresh_ratio: float = Field(
        0.5,
        ge=0,
        description="rewrite a new item's vector when its evidence grew by this share (0: always)",
    )
    ab_arms: tuple[ArmSpec, ...] = Field(
        (), description="A/B arms (JSON list): users split by a stable hash; empty: no test"
    )
    ab_salt: str = Field("streamrec", description="salt of the arm assignment hash")
    output_reasons: bool = Field(
        True, description="each output item says its source (and co-visitation anchor)"
    )
    impression_demote_after: int = Field(
        10, ge=1, description="times an item is shown without a click before it is demoted"
    )
    impression_demote_strength: float = Field(
        0.5, ge=0, description="decay rate of a demoted item's score per show (0: no demotion)"
    )
    unknown_item_policy: Literal["accept", "dlq"] = Field(
        "accept", description="events for items in neither model nor catalog: keep or dead-letter"
    )

    # Input validation
    max_event_bytes: int = Field(65536, ge=128, description="larger records are dead-lettered")
    max_id_len: int = Field(256, ge=1, description="longest accepted id, in characters")
    max_event_future_ms: int = Field(
        3_600_000, ge=0, description="events stamped further ahead of now are dead-lettered"
    )
    max_event_age_ms: int = Field(
        0, ge=0, description="events older than this are dead-lettered (0: no limit)"
    )

    # State
    db_url: str = Field("sqlite:///streamrec.db", description="SQLAlchemy database URL")
    db_timeout_ms: int = Field(
        2000,
        ge=100,
        description="longest wait of one database call (SQLite busy wait, PostgreSQL connect "
        "and statement timeouts); keep it under max_poll_interval_ms",
    )
    signals_topic: str = Field(
        "",
        description="global-signals topic: workers exchange trending and co-visitation deltas "
        "through it (empty: each worker counts only the events it consumes)",
    )
    signals_interval_ms: int = Field(
        1000, ge=10, description="how often a worker publishes its trending/co-visitation deltas"
    )
    signals_max_items: int = Field(
        5000, ge=1, description="trending items per published delta at most (the heaviest kept)"
    )
    signals_max_pairs: int = Field(
        20000, ge=0, description="co-visitation pairs per published delta at most (heaviest kept)"
    )
    signals_retention_ms: int = Field(
        3_600_000,
        ge=60_000,
        description="retention of the signals topic when `streamrec topics` creates it (what a "
        "restarted worker can rebuild from)",
    )
    stream_state_restore_events: int = Field(
        50_000,
        ge=0,
        description=(
            "applied events per claimed partition (the latest ones) read back from the database "
            "into the fused ranking's trending and co-visitation state; 0 disables the restore"
        ),
    )

    applied_events_retention_hours: float = Field(
        192.0,
        ge=0,
        description=(
            "applied event ids are kept (deduplicated) this long after they were applied, then "
            "deleted; keep it above the input topic's retention (Kafka's default 168 h) plus a "
            "margin; 0 keeps them forever"
        ),
    )
    applied_events_prune_rows: int = Field(
        5000, ge=1, description="applied events deleted per prune (one short DELETE per loop)"
    )

    # Operations
    metrics_host: str = Field("127.0.0.1", description="address of /metrics, /healthz, /readyz")
    metrics_port: int = Field(9108, ge=0, le=65535, description="0 disables the HTTP server")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(False, description="structured JSON log lines")
    broker_unready_after_ms: int = Field(
        2000, ge=0, description="no broker connection for this long: not ready, error counted"
    )
    publish_timeout_ms: int = Field(
        10000,
        ge=100,
        description="an output record not acked within this long fails and is sent again "
        "(it stays in the outbox)",
    )
    drain_timeout_ms: int = Field(
        3000, ge=0, description="the same at shutdown (keep SIGTERM exits under 10 s)"
    )
    outbox_max_pending: int = Field(
        10000,
        ge=1,
        description="output records waiting for acks at which consumption pauses (resumes at half)",
    )
    catalog_batch_max_records: int = Field(
        1000, ge=1, description="catalog records applied to the index per loop iteration at most"
    )
    catalog_catchup_s: float = Field(
        30.0,
        ge=0,
        description=(
            "seconds the worker applies the catalog at start before it consumes events (the"
            " rest is applied a slice per loop iteration, between batches)"
        ),
    )

    @field_validator("ab_arms", mode="before")
    @classmethod
    def _arms_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):  # given as text (a flag, an override): the env's JSON
            try:
                return json.loads(value) if value.strip() else ()
            except ValueError:
                raise ValueError("must be a JSON list of arms") from None
        return value

    @model_validator(mode="after")
    def _arms_valid(self) -> Settings:
        if not self.ab_arms:
            return self
        names = [a.name for a in self.ab_arms]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError("ab_arms needs two or more arms with distinct names")
        if self.ranking != "fused":
            raise ValueError("ab_arms needs ranking=fused (an arm changes the fused ranking)")
        versions = {a.model_version for a in self.ab_arms}
        if versions != {None} and len(versions) > 1:
            raise ValueError(
                "ab_arms: when one arm names a model_version every arm must name the same one "
                f"(got {sorted(versions, key=str)}): a worker serves one model at a time; a "
                "second version would need its own encoder, its own item index (items x dim "
                "x 4 bytes plus the graph, again) kept current by the catalog topic, and its "
                "own new-item vectors"
            )
        return self

    def pinned_model_version(self) -> int | None:
        """The repository version the A/B arms name (None: the repository's newest is served
        and followed)."""
        return self.ab_arms[0].model_version if self.ab_arms else None

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name at least one HOST:PORT")
        return value

    def kafka_security(self) -> dict[str, Any]:
        """Security keyword arguments common to kafka-python clients."""
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        for key, value in (
            ("ssl_cafile", self.ssl_cafile),
            ("ssl_certfile", self.ssl_certfile),
            ("ssl_keyfile", self.ssl_keyfile),
        ):
            if value is not None:
                opts[key] = str(value)
        return opts

    def secret_values(self) -> list[str]:
        """Secrets that must never reach a log line (the log filter masks them)."""
        from sqlalchemy.engine import make_url

        out = [make_url(self.db_url).password or ""]
        if self.sasl_password is not None:
            out.append(self.sasl_password.get_secret_value())
        return [str(s) for s in out if s]

    def __repr_args__(self) -> Any:
        # never show the database password when settings are printed or logged
        for key, value in super().__repr_args__():
            yield key, (self.safe_db_url() if key == "db_url" else value)

    def safe_db_url(self) -> str:
        """The database URL with any password masked, for logs."""
        from sqlalchemy.engine import make_url

        return make_url(self.db_url).render_as_string(hide_password=True)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment plus explicit overrides (``None`` ignored).

    Raises:
        ConfigError: a value is invalid; the message names the setting.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except SettingsError as exc:  # a JSON setting (ab_arms) that is not JSON
        raise ConfigError(f"invalid settings: {exc} (expected JSON)") from None
