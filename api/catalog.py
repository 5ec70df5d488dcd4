"""``/v1/sizes`` and ``/v1/images``: what can be launched."""

from __future__ import annotations

from .blueprint import Blueprint

from .schemas import ImageListSchema, SizeListSchema
from .service import service

blp = Blueprint("catalog", __name__, url_prefix="/v1", description="Sizes and images")


@blp.route("/sizes")
@blp.response(200, SizeListSchema)
def list_sizes():
    """The size catalog: vCPUs, memory, root disk and price per hour."""
    return {"sizes": [s.to_dict() for s in service().sizes.all()]}


@blp.route("/images")
@blp.response(200, ImageListSchema)
def list_images():
    """Images in the image store, from their manifests."""
    return {"images": [i.manifest.to_dict() for i in service().images.list()]}
