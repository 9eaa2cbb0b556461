"""User-facing errors: each carries a message a user can act on, printed as one line (or a
short caret block for expressions) by the CLI, never as a traceback."""

from __future__ import annotations


class FreebindError(Exception):
    """Base class of every error freebind reports to a user.

    ``exit_code`` is what the CLI exits with: 2 for bad input (usage), 1 for a failure while
    doing the work."""

    exit_code = 1

    def render(self) -> str:
        return f"error: {self}"


class UsageError(FreebindError):
    exit_code = 2


class ExpressionError(UsageError):
    """A problem in a space expression, located at a column of the source text."""

    def __init__(self, message: str, source: str, start: int, end: int | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.start = max(0, start)
        self.end = max(self.start + 1, end if end is not None else self.start + 1)
        self.hint = hint

    def render(self) -> str:
        caret = " " * self.start + "^" * (self.end - self.start)
        lines = [f"error: {self.message}", f"  {self.source}", f"  {caret}"]
        if self.hint:
            lines.append(f"  {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:  # one line for logs and pytest messages
        loc = f" (column {self.start + 1})"
        return self.message + loc + (f"; {self.hint}" if self.hint else "")


class SpaceError(FreebindError):
    """A space cannot be resolved, loaded or used (missing package, missing weights, …)."""


class BundleError(FreebindError):
    """A bundle file is unreadable, of another format version, or incomplete."""


class BundleMissing(BundleError, UsageError):
    """The bundle a user named is not there (a usage error: exit 2, like every path of the
    wrong kind)."""


class UnknownSpace(SpaceError, UsageError):
    """A space reference names no registered space (a usage error: exit 2)."""


class MediaError(FreebindError):
    """A media file cannot be decoded."""


class EmbedSkipped(FreebindError):
    """A strict embedding run skipped inputs; ``report`` is the run's report (everything
    else was written)."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report
