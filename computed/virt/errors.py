"""The failure of a launch step (a disk, a seed, an image copy, a domain): ``LaunchError``,
raised by the provisioner and the storages, caught by the lifecycle, which ends the launch
with its code as the instance's state reason. Not an API error: the API had answered."""

from __future__ import annotations


class LaunchError(RuntimeError):
    """A launch step failed; ``code`` is the instance's state reason code."""

    def __init__(self, message: str, code: str = "Server.InternalError"):
        super().__init__(message)
        self.code = code
