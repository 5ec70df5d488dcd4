"""``/v1/hosts``: the libvirt hosts instances run on (admins only): list, add, show,
disable, enable, remove, and rotate a host's management key."""

from __future__ import annotations

from flask.views import MethodView

from computed.accounts.registry import require_admin
from computed.errors import HostNotFound
from computed.hosts.capacity import total_room
from computed.hosts.registry import HOST_NAME, HostState

from .auth import current_caller
from .blueprint import Blueprint
from .host_schemas import HOST_NAME_PARAM, HostCreateSchema, HostListSchema, HostSchema, RotatedKeySchema
from .schemas import ErrorResponseSchema
from .service import service

blp = Blueprint("hosts", __name__, url_prefix="/v1/hosts", description="Hosts (admins only)")


@blp.before_request
def _admins_only() -> None:
    # before the body is parsed: a non-admin learns nothing from how its request was wrong
    require_admin(current_caller(), "manage hosts")


def view(state: HostState) -> dict:
    h, used = state.host, state.allocated
    vcpus, memory_mib = total_room(h, service().settings)
    return {
        "name": h.name, "uri": h.uri, "address": h.address, "enabled": h.enabled, "image_mode": h.image_mode,
        "storage_dir": h.storage_dir, "reachable": h.reachable, "last_error": h.last_error,
        "checked_at": h.checked_at, "capacity": {"vcpus": h.vcpus, "memory_mib": h.memory_mib},
        "room": {"vcpus": vcpus, "memory_mib": memory_mib},
        "allocated": {"instances": used.instances, "vcpus": used.vcpus, "memory_mib": used.memory_mib},
        "created_at": h.created_at,
        "management_keys": [key_view(k) for k in service().management_keys.list(h.name)],
    }


def key_view(row) -> dict:
    return {"id": row.id, "fingerprint": row.fingerprint, "public_key": row.public_key, "created_at": row.created_at,
            "retired_at": row.retired_at, "instances": service().management_keys.in_use(row.id)}


@blp.route("")
class Hosts(MethodView):
    @blp.response(200, HostListSchema)
    @blp.alt_response(403, schema=ErrorResponseSchema)
    def get(self):
        """Every host, by name: capacity, room under the overcommit ratios, what is
        allocated there, whether it answered its last check."""
        return {"hosts": [view(h) for h in service().hosts.list()]}

    @blp.arguments(HostCreateSchema, error_status_code=400)
    @blp.response(201, HostSchema)
    @blp.alt_response(400, schema=ErrorResponseSchema)
    @blp.alt_response(403, schema=ErrorResponseSchema)
    @blp.alt_response(409, schema=ErrorResponseSchema)
    @blp.alt_response(413, schema=ErrorResponseSchema)
    @blp.alt_response(415, schema=ErrorResponseSchema)
    def post(self, body):
        """Add a host. It must answer now: its CPUs and memory come from libvirt (a host that
        cannot be reached is a 400 saying why)."""
        return view(service().hosts.add(body["name"], body["uri"], body.get("address"), body["image_mode"],
                                        body.get("storage_dir"), body["enabled"]))


@blp.route("/<string:name>", parameters=[HOST_NAME_PARAM])
class Host(MethodView):
    @blp.response(200, HostSchema)
    @blp.alt_response(403, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    def get(self, name):
        """One host."""
        return view(service().hosts.get(_possible(name)))

    @blp.response(204)
    @blp.alt_response(403, schema=ErrorResponseSchema)
    @blp.alt_response(404, schema=ErrorResponseSchema)
    @blp.alt_response(409, schema=ErrorResponseSchema)
    def delete(self, name):
        """Remove a host; refused (409) while an instance that is not terminated is there
        (a stopped one too)."""
        service().hosts.remove(_possible(name))


def _switch(action: str, enabled: bool, doc: str):
    def handler(name):
        return view(service().hosts.set_enabled(_possible(name), enabled))
    handler.__name__ = f"{action}_host"
    handler.__doc__ = doc
    handler = blp.alt_response(404, schema=ErrorResponseSchema)(handler)
    handler = blp.alt_response(403, schema=ErrorResponseSchema)(handler)
    handler = blp.response(200, HostSchema)(handler)
    blp.route(f"/<string:name>/{action}", methods=["POST"], parameters=[HOST_NAME_PARAM])(handler)


_switch("disable", False, "Disable a host: it takes no new instance; those there go on (stop, start, terminate).")
_switch("enable", True, "Enable a host: the scheduler may place new instances there again.")


@blp.route("/<string:name>/rotate-key", methods=["POST"], parameters=[HOST_NAME_PARAM])
@blp.response(200, RotatedKeySchema)
@blp.alt_response(403, schema=ErrorResponseSchema)
@blp.alt_response(404, schema=ErrorResponseSchema)
def rotate_key(name):
    """Make a new management key for the host: its new guests get it. The older keys stay
    valid for the guests that have them, and are deleted once those are terminated."""
    keys = service().management_keys
    new = keys.rotate(_possible(name))
    rows = keys.list(name)
    return {"host": name, "management_key": key_view(next(r for r in rows if r.id == new.id)),
            "retired": [key_view(r) for r in rows if r.id != new.id]}


def _possible(name: str) -> str:
    """NAME if a host could have it; else it is not found, without asking the store for a
    name with, say, a NUL in it (which PostgreSQL refuses to compare)."""
    if not HOST_NAME.fullmatch(name):
        raise HostNotFound(f"the host {name!r} does not exist")
    return name
