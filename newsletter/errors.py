"""One exception root for every failure the operator may see.

Context (the file, the URL, the recipient) lives in attributes; `str(e)` is one line that
names it, so the CLI can print it as is. Causes are chained with ``raise ... from e``.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(NewsletterError):
    """The configuration file is missing, unreadable or invalid.

    ``problems`` holds one ``FILE:LINE: key.path: message`` line per problem.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        first = problems[0] if problems else f"{path}: invalid configuration"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)


class FetchError(NewsletterError):
    """A source could not be fetched (network, HTTP status, file)."""

    def __init__(
        self, url: str, message: str, *, status: int | None = None, timed_out: bool = False
    ) -> None:
        self.url = url
        self.message = message
        self.status = status  # the HTTP status, when the server answered
        # The server did not answer in time, or the run's fetch deadline passed: the
        # source's other days are not tried in this run.
        self.timed_out = timed_out
        super().__init__(f"{url}: {message}")


class ParseError(NewsletterError):
    """A fetched body is not what the parser expects (never a silent empty list)."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        self.message = message
        super().__init__(f"{url}: cannot parse: {message}")


class TemplateError(NewsletterError):
    """A template is missing, broken, or uses an undefined variable."""

    def __init__(self, template: str, line: int | None, message: str) -> None:
        self.template = template
        self.line = line
        self.message = message
        where = f"{template}:{line}" if line else template
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[TemplateError], tuple[str, int | None, str]]:
        # Raised in a compose worker process, it must cross back to the parent intact.
        return (TemplateError, (self.template, self.line, self.message))


class StoreError(NewsletterError):
    """The state database cannot be opened or is from a newer version."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class ClaimLost(StoreError):
    """A sender's claim on ledger rows lapsed (its lease ran out) and others may have them:
    it stops that batch. Only a state shared by several senders (PostgreSQL) has this."""


class SendError(NewsletterError):
    """A message could not be delivered to one recipient."""

    def __init__(self, recipient: str, message: str) -> None:
        self.recipient = recipient
        self.message = message
        super().__init__(f"{recipient}: {message}")


class SubscriberError(NewsletterError):
    """A subscriber cannot be added as asked: ``email`` names them."""

    def __init__(self, email: str, message: str) -> None:
        self.email = email
        self.message = message
        super().__init__(f"{email}: {message}")


class SubscriberExistsError(SubscriberError):
    """The address is in the store already (compared case-insensitively); ``status`` is its row's."""

    def __init__(self, email: str, status: str) -> None:
        self.status = status
        super().__init__(email, f"already a subscriber ({status})")


class SubscriberRemovedError(SubscriberError):
    """The address was removed (``subscribers remove``): it is not added again by mistake."""

    def __init__(self, email: str) -> None:
        super().__init__(
            email,
            "was removed from this newsletter; add it again only on purpose "
            "(`newsletter subscribers add --again`)",
        )
