"""Image recipes: one TOML file per image under ``images/recipes/``.

A recipe declares what goes into an image (Debian suite, packages, container engine, the
container image preloaded for offline use) and how it boots. Validation errors name the
field, e.g. ``debian-12-podman.toml: packages[3]: Not a valid Debian package name.``
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from . import GUEST_DIR, IMAGES_DIR, RECIPES_DIR

#: Bumped when the builder changes what it produces from the same inputs.
BUILD_FORMAT = 1

#: Files besides the recipe whose content decides what a build produces.
BUILD_INPUTS = ("customize.py", "container.py", "disk.py")

BOOT_PROFILES = ("fast", "stock")
ENGINES = ("podman", "docker")
REQUIRED_PACKAGES = ("systemd-sysv", "openssh-server", "cloud-init", "sudo", "e2fsprogs")

NAME = validate.Regexp(r"^[a-z0-9][a-z0-9.-]{0,62}\Z", error="Must be lower-case letters, digits, '.' and '-'.")
PACKAGE = validate.Regexp(r"^[a-z0-9][a-z0-9+.-]+\Z", error="Not a valid Debian package name.")
USER = validate.Regexp(r"^[a-z_][a-z0-9_-]{0,31}\Z", error="Not a valid user name.")
IMAGE_REF = validate.Regexp(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z",
    error="Must be a container image reference with a tag, like 'computed/busybox:latest'.",
)


class RecipeError(ValueError):
    """A recipe that cannot be read or is invalid; the message names the file and field."""


class _EngineSchema(Schema):
    name = fields.String(required=True, validate=validate.OneOf(ENGINES))
    package = fields.String(required=True, validate=PACKAGE)


class _ContainerImageSchema(Schema):
    name = fields.String(required=True, validate=IMAGE_REF)
    packages = fields.List(fields.String(validate=PACKAGE), required=True, validate=validate.Length(min=1))
    command = fields.List(fields.String(validate=validate.Length(min=1)), load_default=lambda: ["/bin/sh"],
                          validate=validate.Length(min=1))


class _RecipeSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    version = fields.String(required=True, validate=validate.Regexp(r"^\d+(\.\d+){0,2}$", error="Must look like 1.2.3."))
    description = fields.String(load_default="")
    suite = fields.String(required=True, validate=NAME)
    architecture = fields.String(load_default="amd64", validate=validate.OneOf(["amd64"]))
    default_user = fields.String(required=True, validate=USER)
    disk_size_gib = fields.Integer(load_default=4, strict=True, validate=validate.Range(min=2, max=1024))
    boot = fields.String(load_default="fast", validate=validate.OneOf(BOOT_PROFILES))
    packages = fields.List(fields.String(validate=PACKAGE), required=True, validate=validate.Length(min=1))
    container_engine = fields.Nested(_EngineSchema, required=True)
    container_image = fields.Nested(_ContainerImageSchema, required=True)

    @validates_schema
    def _complete(self, data, **kwargs):
        packages = data.get("packages") or []
        errors = {}
        missing = [p for p in REQUIRED_PACKAGES if p not in packages]
        if not any(p.startswith("linux-image-") for p in packages):
            missing.append("a linux-image-* kernel")
        if missing:
            errors["packages"] = [f"Must include {', '.join(missing)}."]
        engine = data.get("container_engine")
        if engine and engine["package"] not in packages:
            errors["container_engine"] = {"package": [f"{engine['package']!r} is not in packages."]}
        if errors:
            raise ValidationError(errors)

    @post_load
    def _make(self, data, **kwargs):
        return Recipe(**data)


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    suite: str
    default_user: str
    packages: list[str]
    container_engine: dict
    container_image: dict
    description: str = ""
    architecture: str = "amd64"
    disk_size_gib: int = 4
    boot: str = "fast"

    def to_dict(self) -> dict:
        return _RecipeSchema().dump(self)

    def with_boot(self, boot: str) -> Recipe:
        """The same recipe booting another way, under a name of its own (``NAME-stock``)."""
        if boot not in BOOT_PROFILES:
            raise RecipeError(f"boot: must be one of {', '.join(BOOT_PROFILES)}")
        if boot == self.boot:
            return self
        data = self.to_dict() | {"boot": boot, "name": f"{self.name}-{boot}"}
        try:
            return _RecipeSchema().load(data)
        except ValidationError as e:
            raise RecipeError(f"{self.name} with {boot} boot: " + "; ".join(_flatten(e.messages))) from None

    @property
    def hash(self) -> str:
        """Identifies what a build of this recipe produces: the recipe, the guest files the
        builder copies in, and the builder's own steps. Equal hashes, equal images."""
        h = hashlib.sha256()
        h.update(json.dumps({"format": BUILD_FORMAT, "recipe": self.to_dict()}, sort_keys=True).encode())
        for path in sorted(GUEST_DIR.rglob("*")) + [IMAGES_DIR / n for n in BUILD_INPUTS]:
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(IMAGES_DIR)).encode() + b"\0")
                h.update(path.read_bytes() + b"\0")
        return "sha256:" + h.hexdigest()


def parse(text: str, source: str = "<recipe>") -> Recipe:
    """Parse and validate a recipe's TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{source}: not valid TOML: {e}") from None
    try:
        return _RecipeSchema().load(data)
    except ValidationError as e:
        raise RecipeError(f"{source}: " + "; ".join(_flatten(e.messages))) from None


def load(path: Path) -> Recipe:
    recipe = parse(path.read_text(), source=path.name)
    if recipe.name != path.stem:
        raise RecipeError(f"{path.name}: name: {recipe.name!r} must match the file name {path.stem!r}.")
    return recipe


def find(name: str, recipes_dir: Path = RECIPES_DIR) -> Recipe:
    """The recipe named NAME; ``NAME-stock`` is NAME's recipe with Debian's stock boot."""
    path = recipes_dir / f"{name}.toml"
    if path.is_file():
        return load(path)
    for boot in BOOT_PROFILES:
        base = recipes_dir / f"{name.removesuffix('-' + boot)}.toml"
        if name.endswith("-" + boot) and base.is_file():
            recipe = load(base)
            if recipe.boot != boot:
                return recipe.with_boot(boot)
    known = ", ".join(available(recipes_dir)) or "none"
    raise RecipeError(f"no recipe named {name!r} (known: {known})")


def available(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    return sorted(p.stem for p in recipes_dir.glob("*.toml"))


def _flatten(messages, prefix: str = "") -> list[str]:
    """marshmallow's nested error dict as ``field.sub[3]: message`` lines."""
    if isinstance(messages, list):
        return [f"{prefix}: {m}" if prefix else str(m) for m in messages]
    out = []
    for key, value in messages.items():
        if isinstance(key, int):
            path = f"{prefix}[{key}]"
        elif key == "_schema":
            path = prefix
        else:
            path = f"{prefix}.{key}" if prefix else str(key)
        out.extend(_flatten(value, path))
    return out
