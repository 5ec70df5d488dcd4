"""The service's errors, one class per EC2-style error code. The core raises them; the REST
API turns them into ``{"error": {"code", "message"}}`` with the class's HTTP status."""

from __future__ import annotations


class ComputedError(Exception):
    code = "InternalError"
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidParameterValue(ComputedError):
    code, status = "InvalidParameterValue", 400


class MissingParameter(ComputedError):
    code, status = "MissingParameter", 400


class InvalidInstanceType(ComputedError):
    code, status = "InvalidInstanceType", 400


class InvalidImageNotFound(ComputedError):
    code, status = "InvalidAMIID.NotFound", 400


class InvalidKeyPairNotFound(ComputedError):
    code, status = "InvalidKeyPair.NotFound", 400


class KeyPairNotFound(InvalidKeyPairNotFound):
    """A key pair named in the URL that does not exist."""
    status = 404


class InvalidKeyPairDuplicate(ComputedError):
    code, status = "InvalidKeyPair.Duplicate", 409


class InvalidKeyFormat(ComputedError):
    code, status = "InvalidKey.Format", 400


class InstanceNotFound(ComputedError):
    code, status = "InvalidInstanceID.NotFound", 404


class InstanceIdMalformed(ComputedError):
    code, status = "InvalidInstanceID.Malformed", 400


class IncorrectInstanceState(ComputedError):
    code, status = "IncorrectInstanceState", 409


class IdempotentParameterMismatch(ComputedError):
    code, status = "IdempotentParameterMismatch", 400


class InsufficientInstanceCapacity(ComputedError):
    code, status = "InsufficientInstanceCapacity", 503


class InstanceLimitExceeded(ComputedError):
    """A launch that would take an account past one of its limits (instances, vCPUs, memory)."""
    code, status = "InstanceLimitExceeded", 400


class KeyPairLimitExceeded(ComputedError):
    """An account at its limit of key pairs (the setting account_max_key_pairs), as EC2's code."""
    code, status = "KeyPairLimitExceeded", 400


class PortLimitExceeded(ComputedError):
    """An account at its limit of forwarded ports (the setting account_max_forwarded_ports),
    counted over all its instances."""
    code, status = "PortLimitExceeded", 400


class BudgetExceeded(ComputedError):
    """A launch or start refused while the account's spend this month is at or over its
    budget and the budget's action is stop: the account can change that (raise the budget,
    remove it, make it notify only), so a conflict with its state, not a bad request."""
    code, status = "BudgetExceeded", 409


class BudgetNotFound(ComputedError):
    code, status = "InvalidBudget.NotFound", 404


class AccountNotFound(ComputedError):
    code, status = "InvalidAccountID.NotFound", 404


class AccessKeyNotFound(ComputedError):
    """An access key id that names no key the caller may see: unknown, deleted, or another
    account's (which answers exactly as one that does not exist)."""
    code, status = "InvalidAccessKeyId.NotFound", 404


class AccessKeyLimitExceeded(ComputedError):
    """A third access key for an account: two are enough to rotate (IAM's limit too)."""
    code, status = "LimitExceeded", 409


class LastActiveAccessKey(ComputedError):
    """Deleting or deactivating an account's last active key, which would leave it no way
    in, without ``force``."""
    code, status = "LastActiveAccessKey", 409


class UnauthorizedOperation(ComputedError):
    """An operation the caller's account may not do (admins only)."""
    code, status = "UnauthorizedOperation", 403


class HostNotFound(ComputedError):
    code, status = "InvalidHostID.NotFound", 404


class InvalidHostDuplicate(ComputedError):
    code, status = "InvalidHost.Duplicate", 409


class HostInUse(ComputedError):
    """A host that still has instances cannot be removed."""
    code, status = "InvalidHost.InUse", 409


class PortInUse(ComputedError):
    """A host port already forwarded to an instance, or taken on the host by another program."""
    code, status = "InvalidPort.InUse", 409


class PortNotFound(ComputedError):
    code, status = "InvalidPort.NotFound", 404


class ServiceUnavailable(ComputedError):
    code, status = "ServiceUnavailable", 503


class AuthFailure(ComputedError):
    """Missing, unknown or wrong credentials. The message never says which part was wrong."""
    code, status = "AuthFailure", 401
