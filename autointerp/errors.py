"""Errors that name the problem. The CLI turns any of these into a one-line message and exit code 1."""


class AutointerpError(Exception):
    """Base class for errors caused by the user's input or environment (not by a bug)."""


class ConfigError(AutointerpError):
    """A configuration value is missing, unknown or inconsistent."""


class CorpusError(AutointerpError):
    """A text source cannot be read or holds no text."""


class SubjectError(AutointerpError):
    """The subject model cannot be loaded or a hookpoint does not exist."""


class CoderError(AutointerpError):
    """A sparse coder's files are missing, corrupt or do not fit the model."""


class CacheError(AutointerpError):
    """An activation cache cannot be written, resumed or read."""


class ClientError(AutointerpError):
    """An LLM backend cannot serve any request (unknown backend or model, server down)."""


class RunError(AutointerpError):
    """A run folder is missing, incomplete, made by another config, or cannot be compared."""
