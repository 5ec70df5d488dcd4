"""Errors of the EC2 wire format itself (the core's errors are ``computed.errors``), and
the HTTP status EC2 answers each error with."""

from __future__ import annotations

from computed.errors import ComputedError


class UnknownParameter(ComputedError):
    code, status = "UnknownParameter", 400


class InvalidAction(ComputedError):
    code, status = "InvalidAction", 400


class MissingAction(ComputedError):
    code, status = "MissingAction", 400


class NoSuchVersion(ComputedError):
    code, status = "NoSuchVersion", 400


class MalformedQueryString(ComputedError):
    code, status = "MalformedQueryString", 400


class InvalidParameterCombination(ComputedError):
    code, status = "InvalidParameterCombination", 400


class InvalidAMIIDMalformed(ComputedError):
    code, status = "InvalidAMIID.Malformed", 400


class UnsupportedHttpVerb(ComputedError):
    code, status = "UnsupportedHttpVerb", 405


class DryRunOperation(ComputedError):
    code, status = "DryRunOperation", 412

    def __init__(self, message: str = "Request would have succeeded, but DryRun flag is set."):
        super().__init__(message)


#: statuses EC2 keeps; every other client error is 400 there (NotFound and conflicts too)
KEPT_STATUSES = frozenset({401, 403, 405, 412, 413})


def wire_status(status: int) -> int:
    """The HTTP status EC2 answers for an error the REST API answers with STATUS."""
    if status == 429:  # EC2's RequestLimitExceeded is a 503
        return 503
    if status >= 500 or status in KEPT_STATUSES:
        return status
    return 400
