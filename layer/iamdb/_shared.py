"""What every instance of a :class:`~iamdb._registry.Registry` shares, each part made on first
use: the process-wide settings, the token cache, the login limits (per-process buckets and the
fleet's ticket queue), the AWS client, telemetry and the current invocation's deadline.

The registry adds the instances (SQL connections, Mongo handles, :mod:`iamdb.aio`'s) on top;
:meth:`Shared._forget` is its :meth:`~iamdb._registry.Registry.reset`'s half for these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iamdb._aws.chain import CredentialResolver, default_resolver
from iamdb._core.invocation import Deadline, Invocation
from iamdb._core.log import WarnOnce, apply_level, join_powertools_logger
from iamdb._core.runtime import PROCESS, Runtime
from iamdb._core.settings import Settings, load_settings
from iamdb._core.telemetry import Telemetry
from iamdb._sql.tokens import TokenCache
from iamdb.errors import ConfigError

if TYPE_CHECKING:
    from iamdb._aws.client import AwsClient
    from iamdb._sql.limits import Limits


class Shared:
    """The services a registry's instances share (see the module's docstring)."""

    def __init__(
        self,
        *,
        runtime: Runtime | None,
        resolver: CredentialResolver | None,
        telemetry: Telemetry | None,
    ) -> None:
        self.runtime = runtime or PROCESS
        self._live = runtime is None  # the process itself: it may join Powertools' Logger
        # What the settings readers get: None reads os.environ there, so no frame that can be
        # on a traceback holds the whole environment (secret key included) as an argument.
        self._environ = None if runtime is None else runtime.environ
        self._resolver = resolver or (
            default_resolver if runtime is None else CredentialResolver(runtime)
        )
        self.deadline = Deadline(self.runtime.clock)
        self.invocation = Invocation(self.runtime.environ, self.runtime.clock)
        self.warn_once = WarnOnce()
        self._settings: Settings | None = None
        self._tokens: TokenCache | None = None
        self._limits: Limits | None = None
        self._aws: AwsClient | None = None
        self._telemetry: Telemetry | None = telemetry
        self._given_telemetry = telemetry
        self._joined_powertools = False
        self._served = False  # see _serving

    @property
    def tokens(self) -> TokenCache:
        """The token cache shared by every SQL instance."""
        if self._tokens is None:
            settings = self.settings
            self._tokens = TokenCache(
                resolver=self._resolver,
                clock=self.runtime.clock,
                refresh_seconds=settings.token_refresh_seconds,
            )
        return self._tokens

    @property
    def settings(self) -> Settings:
        """The process-wide settings (``IAMDB_*`` beyond one instance), read once."""
        if self._settings is None:
            self._settings = load_settings(self._environ)
        return self._settings

    def _serving(self) -> None:
        """What the registry does before it first serves a getter (again after :meth:`reset`),
        from :meth:`managed` and :meth:`mongo_handle`, where every getter, pool and engine
        comes in: ``IAMDB_LOG_LEVEL`` set on iamdb's logger, and iamdb's records joined to
        the application's Powertools Logger. Here, so that reading :attr:`settings` (the CLI
        does) changes nothing."""
        if not self._served:
            self._served = True
            apply_level(self.settings.log_level)
            self._join_powertools_logger()

    @property
    def telemetry(self) -> Telemetry:
        """Metrics and subsegments (see :mod:`iamdb._core.telemetry`), shared by every instance."""
        if self._telemetry is None:
            self._telemetry = Telemetry(self.settings.metrics_namespace, self.warn_once)
        return self._telemetry

    def _join_powertools_logger(self) -> None:
        """Log through the application's Powertools Logger once it has made one."""
        if not self._joined_powertools and self._live:
            self._joined_powertools = join_powertools_logger(
                keep_level=self.settings.log_level is not None
            )

    @property
    def aws(self) -> AwsClient:
        """The AWS client (DynamoDB, STS) every AWS call goes through."""
        if self._aws is None:
            from iamdb._aws.client import AwsClient

            self._aws = AwsClient(self.runtime, self._resolver)
        return self._aws

    @property
    def limits(self) -> Limits:
        """The permits of new IAM logins: per-process buckets, and the fleet's ticket queue."""
        if self._limits is None:
            from iamdb._sql.limits import Limits

            settings = self.settings
            fleet = None
            if settings.throttle_table:
                from iamdb._aws.client import resolve_endpoint
                from iamdb._sql.fleet import FleetLimiter

                resolve_endpoint("dynamodb", self.runtime.environ)  # ConfigError before any call
                table = settings.throttle_table
                fleet = FleetLimiter(table, self.aws, self.runtime, self.warn_once)
            self._limits = Limits(settings.connect_rate, fleet, self.runtime)
        return self._limits

    def set_lambda_context(self, context: Any) -> None:
        """Bound waits for IAM login permits and retries by the invocation's remaining time.

        ``context`` is the Lambda context (anything with ``get_remaining_time_in_millis``);
        None forgets it.
        """
        if context is None:
            self.deadline.set_context(None)
            self.invocation.clear()
            return
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if not callable(remaining):
            raise ConfigError(
                "context", "expected the Lambda context (with get_remaining_time_in_millis)"
            )
        self.deadline.set_context(remaining)
        self.invocation.set_context(getattr(context, "aws_request_id", None), remaining())
        self._join_powertools_logger()  # the handler's Logger may be newer than iamdb's first use

    def _forget(self) -> AwsClient | None:
        """Drop every shared part (the registry's lock held); returns the AWS client, which
        the caller closes outside the lock."""
        aws, self._aws = self._aws, None
        self._settings, self._tokens, self._served = None, None, False
        self._telemetry = self._given_telemetry
        self._limits = None
        self.deadline.set_context(None)
        self.invocation.clear()
        self._resolver.reset()
        self.warn_once.clear()
        return aws
