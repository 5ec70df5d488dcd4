"""``computed image build|list|rm``: the image library from the command line."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from computed.settings import Settings
from images import recipe as recipes
from images.builder import Builder, BuildError
from images.library import ImageLibrary


@click.group()
def image() -> None:
    """Build, list and remove guest images."""


@image.command()
@click.argument("name", required=False)
@click.option("--default", "default", is_flag=True, help="Build the default image (a setting).")
@click.option("--force", is_flag=True, help="Rebuild even if an image with the same recipe hash exists.")
@click.pass_obj
def build(settings: Settings, name: str | None, default: bool, force: bool) -> None:
    """Build image NAME from images/recipes/NAME.toml (NAME-stock: the same with Debian's stock boot).

    A build whose recipe hash matches the stored image is skipped."""
    if bool(name) == default:
        raise click.UsageError("give an image NAME or --default (known: " + ", ".join(recipes.available()) + ")")
    try:
        recipe = recipes.find(name or settings.default_image)
    except recipes.RecipeError as e:
        raise click.ClickException(str(e)) from None
    try:
        result = Builder(settings).build(recipe, force=force)
    except BuildError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo(f"build of {recipe.name} interrupted; nothing was left in the image store", err=True)
        raise SystemExit(130) from None
    if result.skipped:
        click.echo(f"{recipe.name} is up to date ({recipe.hash[:19]}): {result.image.path}", err=True)


@image.command("list")
@click.option("--json", "as_json", is_flag=True, help="Each manifest, with absolute artifact paths.")
@click.pass_obj
def list_(settings: Settings, as_json: bool) -> None:
    """List the images in the store."""
    images = ImageLibrary(settings.image_library).list()
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in images], indent=2))
        return
    if not images:
        click.echo(f"no images in {settings.image_library}; build one with: computed image build --default", err=True)
        return
    table = Table("NAME", "VERSION", "ENGINE", "USER", "KERNEL", "DISK", "BUILT", box=None)
    for i in images:
        m = i.manifest
        engine = f"{m.container_engine['name']} {m.container_engine.get('version', '')}".strip()
        disk = f"{m.artifacts['disk']['size'] / 2**20:.0f} MiB"
        table.add_row(m.name, m.version, engine, m.default_user, m.kernel_version, disk, m.built_at)
    Console().print(table)


@image.command()
@click.argument("name")
@click.pass_obj
def rm(settings: Settings, name: str) -> None:
    """Remove image NAME from the store."""
    if not ImageLibrary(settings.image_library).remove(name):
        raise click.ClickException(f"no image named {name!r} in {settings.image_library}")
    click.echo(f"removed {name}", err=True)


@image.command()
@click.argument("name")
@click.pass_obj
def verify(settings: Settings, name: str) -> None:
    """Check image NAME's files against the sizes and sha256 sums in its manifest."""
    stored = ImageLibrary(settings.image_library).get(name)
    if stored is None:
        raise click.ClickException(f"no image named {name!r} in {settings.image_library}")
    problems = stored.manifest.verify(stored.path)
    if problems:
        raise click.ClickException(f"{name} is damaged:\n  " + "\n  ".join(problems))
    click.echo(f"{name}: {len(stored.manifest.artifacts)} files match the manifest", err=True)
