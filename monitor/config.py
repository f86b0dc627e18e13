"""One Settings object, built from the environment (and ``.env``), validated once at start.

What is required depends on the adapters chosen: ``DATABASE_URL`` with local storage and the
local AI provider is a complete configuration with no Supabase or Gemini account. Every problem
is collected and reported in one message, so an operator fixes them in one go.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from dotenv import dotenv_values

from monitor.webhook import secret_problem as webhook_secret_problem
from processors.ai.models import DEFAULT_ANALYSIS_MODEL, DEFAULT_IMAGE_MODELS
from processors.print_pdf import BLEED_IN_RANGE, PPI_RANGE

T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration is incomplete or invalid; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class Secret(str):
    """A string that never shows itself in ``repr``, logs or tracebacks of Settings."""

    def __repr__(self) -> str:
        return "Secret('***')"


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs and the status endpoint."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Settings:
    # Where orders live.
    database_url: Secret | None = None
    supabase_url: str | None = None
    supabase_service_role_key: Secret | None = None
    # The queue.
    poll_interval_seconds: float = 10.0
    max_concurrent_orders: int = 5
    lease_seconds: int = 300
    max_attempts: int = 3
    retry_backoff_base_seconds: float = 30.0
    retry_backoff_max_seconds: float = 1800.0
    shutdown_grace_seconds: float = 30.0
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # The operations surface.
    host: str = "0.0.0.0"
    port: int = 5000
    auto_start_monitor: bool = True
    admin_token: Secret | None = None
    #: ``POST /generate-cover`` requests drawn at once by this process; more answer 429.
    cover_max_concurrent: int = 1
    log_format: str = "auto"
    log_level: str = "INFO"
    # Blob storage.
    storage_backend: str = "local"
    storage_bucket: str = "books"
    storage_public: bool = False
    signed_url_ttl_seconds: int = 7 * 24 * 3600
    #: Signed result URLs expiring within this are signed again by the hourly sweep.
    signed_url_refresh_margin_seconds: int = 24 * 3600
    local_storage_dir: Path = Path("storage")
    cache_dir: Path = Path(".cache")
    #: Catalog pages' model inputs and check copies kept in memory between the orders of a book
    #: (processors/page_inputs.py); 0 keeps none.
    page_input_cache_mb: int = 64
    # Image AI.
    ai_provider: str = "local"
    google_api_key: Secret | None = None
    # Current GA models, processors/ai/models.py (Gemini API deprecations page, 2026-12-01).
    gemini_analysis_model: str = DEFAULT_ANALYSIS_MODEL
    gemini_image_models: tuple[str, ...] = DEFAULT_IMAGE_MODELS
    gemini_api_version: str = "v1beta"
    gemini_base_url: str | None = None
    #: One call. Image models answer in roughly 10-60 s (the 4K tier of gemini-3-pro-image
    #: slowest); 120 s leaves room for that without letting a hung call hold a page for long.
    gemini_timeout_seconds: float = 120.0
    #: One illustration, across its retries, redraws and the softened-prompt retry.
    page_deadline_seconds: float = 420.0
    #: How far a picture may stray from the ratio asked for (0.04: about 4%).
    output_aspect_tolerance: float = 0.04
    #: First wait before the models are checked again when none is usable (doubles, max 600).
    model_check_retry_seconds: float = 30.0
    #: Sent only to models that take the size (processors/ai/models.py): both current image
    #: models take 1K/2K/4K, gemini-2.5-flash-image took none. ``auto``: per request, the
    #: smallest size whose pixels reach the book's print profile, else the model's largest.
    image_size: str | None = "auto"
    #: The cover and up to 11 pages in one round of image calls (bench/README.md, section 0).
    page_concurrency: int = 12
    #: True: the cover (and its judge) before any page, every page with it as reference; False:
    #: pages start with the cover and the first ones go without it, every page judged against
    #: it (processors/book.py ``_Reference``; bench/README.md, section 1c).
    cover_first: bool = False
    ai_max_concurrency: int = 24
    ai_requests_per_minute: float | None = None
    #: Pacing of analysis calls (their model has its own quota); None: not paced.
    ai_analysis_requests_per_minute: float | None = None
    #: The quota window AI_REQUESTS_PER_MINUTE's token bucket is sized to (a minute at Gemini;
    #: the bench scales it with its latencies).
    ai_rate_window_seconds: float = 60.0
    ai_max_retries: int = 3
    ai_backoff_base_seconds: float = 2.0
    #: JSON price table laid over processors/ai/prices.json (USD per 1M tokens, per model).
    ai_prices_file: Path | None = None
    #: The book-quality judge (processors/qa.py): ``judge`` asks the analysis model after every
    #: illustration, ``off`` accepts what passes the image checks.
    qa_mode: str = "judge"
    qa_max_redraws: int = 2
    #: ``fail``: a page that stays below the threshold fails the item (quality_check_failed);
    #: ``review``: the book completes with needs_review set on the item and the page.
    qa_on_fail: str = "fail"
    #: Likeness score (0-10) a page needs to pass, besides the judge's yes/no checks.
    qa_min_likeness: float = 6.0
    #: Print profile defaults (a book's print_bleed_in/print_ppi override them).
    print_bleed_in: float = 0.125
    print_ppi: int = 300
    # Notifications and privacy.
    notify_webhook_url: str | None = None
    notify_webhook_secret: Secret | None = None
    photo_retention_days: int = 30
    # Email to the parent (monitor/mailer.py); off while smtp_host is None.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: Secret | None = None
    #: "starttls" (upgrade required), "tls" (implicit TLS, smtps:// or port 465) or "none".
    smtp_security: str = "starttls"
    email_from: str | None = None
    email_max_attempts: int = 10
    email_backoff_base_seconds: float = 60.0
    #: An email still unsent this long after its notification is dropped, never sent late.
    email_max_age_hours: float = 72.0

    @property
    def email_enabled(self) -> bool:
        """Whether parents get email: SMTP and EMAIL_FROM are configured."""
        return self.smtp_host is not None and self.email_from is not None

    @property
    def store_backend(self) -> str:
        """``postgres`` when DATABASE_URL is set (it adds LISTEN), else ``supabase``."""
        return "postgres" if self.database_url else "supabase"

    def secrets(self) -> list[str]:
        """Every secret value, so log sinks can scrub them wherever they turn up."""
        values = [getattr(self, f.name) for f in fields(self)]
        found = [str(v) for v in values if isinstance(v, Secret) and v]
        if self.database_url:
            password = urlsplit(self.database_url).password
            if password:
                found.append(password)
        return found

    def describe(self) -> dict[str, Any]:
        """The settings with secrets masked: safe for logs and the status endpoint."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = "***" if value else None
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        if self.database_url:
            out["database_url"] = redact_url(self.database_url)
        return out

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, env_file: str | None = ".env"
    ) -> Settings:
        """Build from ``environ`` (default: the process environment over ``.env``)."""
        return _Parser(merged_environ(environ, env_file)).settings()

    @classmethod
    def for_database_only(
        cls, environ: Mapping[str, str] | None = None, *, env_file: str | None = ".env"
    ) -> Settings:
        """For commands that only talk to the database (``migrate``): DATABASE_URL (required)
        and the log settings are read and checked; storage and AI settings are not looked at."""
        return _Parser(merged_environ(environ, env_file)).database_only()


#: The variables whose values are secrets, for scrubbing before Settings exist (start-up errors).
SECRET_VARIABLES = (
    "DATABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_SERVICE_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_AI_API_KEY",
    "ADMIN_TOKEN",
    "NOTIFY_WEBHOOK_SECRET",
    "SMTP_URL",
    "SMTP_PASSWORD",
)


#: The defaults, written once (in the dataclass above): the parser falls back to them.
DEFAULT = Settings()


def merged_environ(environ: Mapping[str, str] | None, env_file: str | None) -> Mapping[str, str]:
    """``environ``, or (when None) the process environment over the dotenv file, if it exists."""
    if environ is not None:
        return environ
    file_values = dotenv_values(env_file) if env_file and Path(env_file).exists() else {}
    return {**{k: v for k, v in file_values.items() if v is not None}, **os.environ}


def raw_secrets(environ: Mapping[str, str]) -> list[str]:
    """The secret values in ``environ`` (and the password inside DATABASE_URL), unvalidated."""
    found = [v.strip() for k, v in environ.items() if k in SECRET_VARIABLES and v and v.strip()]
    for name in ("DATABASE_URL", "SMTP_URL"):
        try:
            password = urlsplit((environ.get(name) or "").strip()).password
        except ValueError:
            password = None
        if password:
            found += [password, unquote(password)]
    return found


class _Parser:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = {k: v for k, v in environ.items() if v is not None and v.strip() != ""}
        self.problems: list[str] = []

    def first(self, *names: str) -> str | None:
        for name in names:
            if name in self.env:
                return self.env[name].strip()
        return None

    def typed(
        self,
        name: str,
        convert: Callable[[str], T],
        default: T,
        check: Callable[[T], bool] | None = None,
        expect: str = "",
    ) -> T:
        raw = self.first(name)
        if raw is None:
            return default
        try:
            value = convert(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not {expect or convert.__name__}")
            return default
        if check is not None and not check(value):
            self.problems.append(f"{name}={raw!r} must be {expect}")
            return default
        return value

    def positive_int(self, name: str, default: int) -> int:
        return self.typed(name, int, default, lambda v: v > 0, "a positive integer")

    def non_negative_int(self, name: str, default: int, meaning: str = "") -> int:
        expect = f"an integer >= 0 ({meaning})" if meaning else "an integer >= 0"
        return self.typed(name, int, default, lambda v: v >= 0, expect)

    def positive_float(self, name: str, default: float) -> float:
        return self.typed(name, float, default, lambda v: v > 0, "a positive number")

    def boolean(self, name: str, default: bool) -> bool:
        return self.typed(name, _parse_bool, default, expect="true or false")

    def choice(self, name: str, options: tuple[str, ...], default: str) -> str:
        value = (self.first(name) or default).lower()
        if value not in options:
            self.problems.append(f"{name}={value!r} must be one of {', '.join(options)}")
            return default
        return value

    def price_file(self, name: str) -> Path | None:
        """A price table file, read now so a typo fails at start rather than at the first call."""
        from processors.ai.pricing import PriceTable, PriceTableError

        if not (raw := self.first(name)):
            return None
        try:
            PriceTable.load(Path(raw))
        except PriceTableError as exc:
            self.problems.append(f"{name}: {exc}")
        return Path(raw)

    def database_only(self) -> Settings:
        database_url = self.first("DATABASE_URL")
        if not database_url:
            self.problems.append(
                "DATABASE_URL is required (with only the Supabase SQL editor, "
                "paste the files of migrations/ in order)"
            )
        elif not database_url.startswith(("postgres://", "postgresql://")):
            self.problems.append("DATABASE_URL must be a postgresql:// connection string")
        log_format, log_level = self.log_settings()
        if self.problems:
            raise ConfigError(self.problems)
        return Settings(
            database_url=Secret(database_url) if database_url else None,
            log_format=log_format,
            log_level=log_level,
        )

    def log_settings(self) -> tuple[str, str]:
        log_level = (self.first("LOG_LEVEL") or DEFAULT.log_level).upper()
        if log_level not in {"TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"}:
            self.problems.append(f"LOG_LEVEL={log_level!r} is not a log level")
            log_level = DEFAULT.log_level
        return self.choice("LOG_FORMAT", ("auto", "json", "pretty"), DEFAULT.log_format), log_level

    def settings(self) -> Settings:
        database_url = self.first("DATABASE_URL")
        supabase_url = self.first("SUPABASE_URL")
        supabase_key = self.first("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY")
        api_key = self.first("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_AI_API_KEY")

        if database_url and not database_url.startswith(("postgres://", "postgresql://")):
            self.problems.append("DATABASE_URL must be a postgresql:// connection string")
        storage_backend = self.choice(
            "STORAGE_BACKEND", ("supabase", "local"), "supabase" if supabase_url else "local"
        )
        ai_provider = self.choice(
            "AI_PROVIDER", ("gemini", "local"), "gemini" if api_key else "local"
        )
        needs_supabase = not database_url or storage_backend == "supabase"
        if needs_supabase:
            why = (
                "the supabase store (DATABASE_URL is not set)"
                if not database_url
                else "STORAGE_BACKEND=supabase"
            )
            if not supabase_url:
                self.problems.append(f"SUPABASE_URL is required for {why}")
            if not supabase_key:
                self.problems.append(f"SUPABASE_SERVICE_ROLE_KEY is required for {why}")
        if supabase_url and not supabase_url.startswith(("https://", "http://")):
            self.problems.append("SUPABASE_URL must start with https://")
        if ai_provider == "gemini" and not api_key:
            self.problems.append(
                "GOOGLE_API_KEY (or GEMINI_API_KEY) is required for AI_PROVIDER=gemini"
            )

        image_models = tuple(
            m.strip() for m in (self.first("GEMINI_IMAGE_MODEL") or "").split(",") if m.strip()
        )
        log_format, log_level = self.log_settings()
        rpm = self.first("AI_REQUESTS_PER_MINUTE")
        analysis_rpm = self.first("AI_ANALYSIS_REQUESTS_PER_MINUTE")

        values: dict[str, Any] = dict(
            database_url=Secret(database_url) if database_url else None,
            supabase_url=supabase_url.rstrip("/") if supabase_url else None,
            supabase_service_role_key=Secret(supabase_key) if supabase_key else None,
            poll_interval_seconds=self.positive_float(
                "POLL_INTERVAL_SECONDS", DEFAULT.poll_interval_seconds
            ),
            max_concurrent_orders=self.positive_int(
                "MAX_CONCURRENT_ORDERS", DEFAULT.max_concurrent_orders
            ),
            lease_seconds=self.typed(
                "LEASE_SECONDS", int, DEFAULT.lease_seconds, lambda v: v >= 3, "an integer >= 3"
            ),
            max_attempts=self.positive_int("MAX_ATTEMPTS", DEFAULT.max_attempts),
            retry_backoff_base_seconds=self.positive_float(
                "RETRY_BACKOFF_BASE_SECONDS", DEFAULT.retry_backoff_base_seconds
            ),
            retry_backoff_max_seconds=self.positive_float(
                "RETRY_BACKOFF_MAX_SECONDS", DEFAULT.retry_backoff_max_seconds
            ),
            shutdown_grace_seconds=self.typed(
                "SHUTDOWN_GRACE_SECONDS",
                float,
                DEFAULT.shutdown_grace_seconds,
                lambda v: v >= 0,
                "a number >= 0",
            ),
            host=self.first("HOST") or DEFAULT.host,
            port=self.typed("PORT", int, DEFAULT.port, lambda v: 0 <= v < 65536, "a TCP port"),
            auto_start_monitor=self.boolean("AUTO_START_MONITOR", DEFAULT.auto_start_monitor),
            admin_token=Secret(t) if (t := self.first("ADMIN_TOKEN")) else None,
            cover_max_concurrent=self.positive_int(
                "COVER_MAX_CONCURRENT", DEFAULT.cover_max_concurrent
            ),
            log_format=log_format,
            log_level=log_level,
            storage_backend=storage_backend,
            storage_bucket=self.first("STORAGE_BUCKET") or DEFAULT.storage_bucket,
            storage_public=self.boolean("STORAGE_PUBLIC", DEFAULT.storage_public),
            signed_url_ttl_seconds=self.positive_int(
                "SIGNED_URL_TTL_SECONDS", DEFAULT.signed_url_ttl_seconds
            ),
            signed_url_refresh_margin_seconds=self.positive_int(
                "SIGNED_URL_REFRESH_MARGIN_SECONDS", DEFAULT.signed_url_refresh_margin_seconds
            ),
            local_storage_dir=Path(self.first("LOCAL_STORAGE_DIR") or DEFAULT.local_storage_dir),
            cache_dir=Path(self.first("CACHE_DIR") or DEFAULT.cache_dir),
            page_input_cache_mb=self.non_negative_int(
                "PAGE_INPUT_CACHE_MB", DEFAULT.page_input_cache_mb, "megabytes, 0 keeps none"
            ),
            ai_provider=ai_provider,
            google_api_key=Secret(api_key) if api_key else None,
            gemini_analysis_model=self.first("GEMINI_ANALYSIS_MODEL")
            or DEFAULT.gemini_analysis_model,
            gemini_image_models=image_models or DEFAULT_IMAGE_MODELS,
            gemini_api_version=self.first("GEMINI_API_VERSION") or DEFAULT.gemini_api_version,
            gemini_base_url=self.first("GEMINI_BASE_URL"),
            gemini_timeout_seconds=self.positive_float(
                "GEMINI_TIMEOUT_SECONDS", DEFAULT.gemini_timeout_seconds
            ),
            page_deadline_seconds=self.positive_float(
                "PAGE_DEADLINE_SECONDS", DEFAULT.page_deadline_seconds
            ),
            output_aspect_tolerance=self.typed(
                "OUTPUT_ASPECT_TOLERANCE",
                float,
                DEFAULT.output_aspect_tolerance,
                lambda v: 0 < v < 0.5,
                "a number between 0 and 0.5",
            ),
            model_check_retry_seconds=self.positive_float(
                "MODEL_CHECK_RETRY_SECONDS", DEFAULT.model_check_retry_seconds
            ),
            image_size=_image_size(self.choice("IMAGE_SIZE", ("auto", "1k", "2k", "4k"), "auto")),
            page_concurrency=self.positive_int("PAGE_CONCURRENCY", DEFAULT.page_concurrency),
            cover_first=self.boolean("COVER_FIRST", DEFAULT.cover_first),
            ai_max_concurrency=self.positive_int("AI_MAX_CONCURRENCY", DEFAULT.ai_max_concurrency),
            ai_requests_per_minute=self.positive_float("AI_REQUESTS_PER_MINUTE", 0.0)
            if rpm
            else None,
            ai_analysis_requests_per_minute=self.positive_float(
                "AI_ANALYSIS_REQUESTS_PER_MINUTE", 0.0
            )
            if analysis_rpm
            else None,
            ai_rate_window_seconds=self.positive_float(
                "AI_RATE_WINDOW_SECONDS", DEFAULT.ai_rate_window_seconds
            ),
            ai_max_retries=self.non_negative_int("AI_MAX_RETRIES", DEFAULT.ai_max_retries),
            ai_backoff_base_seconds=self.positive_float(
                "AI_BACKOFF_BASE_SECONDS", DEFAULT.ai_backoff_base_seconds
            ),
            ai_prices_file=self.price_file("AI_PRICES_FILE"),
            qa_mode=self.choice("QA_MODE", ("judge", "off"), "judge"),
            qa_max_redraws=self.typed(
                "QA_MAX_REDRAWS", int, 2, lambda v: 0 <= v <= 5, "an integer from 0 to 5"
            ),
            qa_on_fail=self.choice("QA_ON_FAIL", ("fail", "review"), "fail"),
            qa_min_likeness=self.typed(
                "QA_MIN_LIKENESS", float, 6.0, lambda v: 0 <= v <= 10, "a number from 0 to 10"
            ),
            print_bleed_in=self.typed(
                "PRINT_BLEED_IN",
                float,
                0.125,
                lambda v: BLEED_IN_RANGE[0] <= v <= BLEED_IN_RANGE[1],
                f"inches, from {BLEED_IN_RANGE[0]:g} to {BLEED_IN_RANGE[1]:g}",
            ),
            print_ppi=self.typed(
                "PRINT_PPI",
                int,
                300,
                lambda v: PPI_RANGE[0] <= v <= PPI_RANGE[1],
                f"an integer from {PPI_RANGE[0]} to {PPI_RANGE[1]}",
            ),
            notify_webhook_url=self.first("NOTIFY_WEBHOOK_URL"),
            notify_webhook_secret=Secret(s) if (s := self.first("NOTIFY_WEBHOOK_SECRET")) else None,
            photo_retention_days=self.non_negative_int(
                "PHOTO_RETENTION_DAYS", DEFAULT.photo_retention_days, "0 switches retention off"
            ),
        )
        if worker_id := self.first("WORKER_ID"):
            values["worker_id"] = worker_id
        if values["notify_webhook_url"] and not values["notify_webhook_secret"]:
            self.problems.append("NOTIFY_WEBHOOK_SECRET is required when NOTIFY_WEBHOOK_URL is set")
        signs_urls = values["storage_backend"] == "supabase" and not values["storage_public"]
        if signs_urls and (
            values["signed_url_refresh_margin_seconds"] >= values["signed_url_ttl_seconds"]
        ):
            # Every URL would be due again as soon as it is signed: the sweep would never rest.
            self.problems.append(
                "SIGNED_URL_REFRESH_MARGIN_SECONDS must be below SIGNED_URL_TTL_SECONDS"
            )
        if values["notify_webhook_secret"] and (
            problem := webhook_secret_problem(values["notify_webhook_secret"])
        ):
            self.problems.append(f"NOTIFY_WEBHOOK_SECRET {problem}")
        values.update(self.email_settings())
        if self.problems:
            raise ConfigError(self.problems)
        return Settings(**values)

    def email_settings(self) -> dict[str, Any]:
        """SMTP_URL, or SMTP_HOST and friends, plus EMAIL_FROM: all or nothing."""
        url, host = self.first("SMTP_URL"), self.first("SMTP_HOST")
        email_from = self.first("EMAIL_FROM")
        starttls = self.boolean("SMTP_STARTTLS", True)
        values: dict[str, Any] = dict(
            email_from=email_from,
            email_max_attempts=self.positive_int("EMAIL_MAX_ATTEMPTS", 10),
            email_backoff_base_seconds=self.positive_float("EMAIL_BACKOFF_BASE_SECONDS", 60.0),
            email_max_age_hours=self.positive_float("EMAIL_MAX_AGE_HOURS", 72.0),
        )
        if url and host:
            self.problems.append("set SMTP_URL or SMTP_HOST, not both")
            return values
        if not url and not host:
            if email_from:
                self.problems.append("EMAIL_FROM is set but no SMTP server (SMTP_URL or SMTP_HOST)")
            return values
        if url:
            # The password is never repeated in a problem: the URL is shown without it.
            parts = urlsplit(url)
            try:
                port = parts.port
            except ValueError:
                self.problems.append(f"SMTP_URL={redact_url(url)!r} has an invalid port")
                return values
            if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
                self.problems.append(
                    f"SMTP_URL={redact_url(url)!r} must look like "
                    "smtp://user:password@host:587 or smtps://...:465"
                )
                return values
            host, tls = parts.hostname, parts.scheme == "smtps"
            user = unquote(parts.username) if parts.username else None
            password = unquote(parts.password) if parts.password else None
        else:
            port = self.typed("SMTP_PORT", int, 0, lambda v: 0 < v < 65536, "a TCP port") or None
            tls = port == 465
            user, password = self.first("SMTP_USER"), self.first("SMTP_PASSWORD")
        security = "tls" if tls else ("starttls" if starttls else "none")
        if not email_from:
            self.problems.append("EMAIL_FROM is required when SMTP_URL or SMTP_HOST is set")
        elif "@" not in email_from or any(c in email_from for c in "\r\n"):
            self.problems.append(f"EMAIL_FROM={email_from!r} is not an email address")
        if password and not user:
            self.problems.append("SMTP_PASSWORD needs SMTP_USER (or a user in SMTP_URL)")
        values.update(
            smtp_host=host,
            smtp_port=port or (465 if tls else 587),
            smtp_user=user,
            smtp_password=Secret(password) if password else None,
            smtp_security=security,
        )
        return values


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


def _image_size(value: str) -> str:
    """``auto`` as the adapters spell it, a size as Gemini does (``2K``, not ``2k``)."""
    return value if value == "auto" else value.upper()
