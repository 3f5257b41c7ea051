"""Errors a user can fix. Entry points print them as one line and exit non-zero."""


class DeltaPatchError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ConfigError(DeltaPatchError, ValueError):
    """A name, value or path in the configuration is wrong."""


class UnsafeTargetError(ConfigError):
    """A configuration read from disk (a run folder) names a ``_target_`` outside the allow-list."""


class ResumeError(ConfigError):
    """A run folder holds a run started with another configuration (``resume=force`` overrides)."""


class PatchError(DeltaPatchError, ValueError):
    """A patch file is corrupt, or does not fit the network it is loaded onto."""


class CheckpointError(DeltaPatchError, ValueError):
    """A checkpoint file is missing, truncated, or holds something other than tensors."""


class CorruptDataError(DeltaPatchError):
    """A data file (an image, an archive) exists but cannot be read."""


class ResourceError(DeltaPatchError):
    """The run needs more of a resource (GPU memory, disk) than there is."""


class InvariantError(DeltaPatchError):
    """A method that promises to keep the base model changed it (a bug, reported loudly)."""


class ReportError(DeltaPatchError):
    """A finished run cannot be turned into what was asked (missing config, base or patch)."""


class RunsError(DeltaPatchError):
    """A folder of runs is missing or holds no usable results.json."""
