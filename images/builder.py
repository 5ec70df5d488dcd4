"""``computed image build``: from a recipe to a bootable image in the store.

Steps: extract the container image's packages and write it as a docker-archive; bootstrap
the guest with mmdebstrap (packages from Debian only), customizing it inside the same run
(``images.customize``); take out kernel and initrd; write the ext4 root file system into a
qcow2 disk; checksum everything into the manifest; publish atomically. Downloaded packages
are kept in the image cache, so later builds (and the other images) reuse them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from computed.settings import Settings

from . import container
from .customize import DPKG_OPTIONS, KERNEL_CMDLINE
from .disk import make_disk
from .manifest import Manifest, describe_artifact
from .progress import Progress
from .recipe import Recipe
from .library import SCRATCH_SEP, ImageLibrary, ImageBuild


class BuildError(RuntimeError):
    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class BuildResult:
    image: ImageBuild
    skipped: bool


class Builder:
    def __init__(self, settings: Settings, store: ImageLibrary | None = None, console: Console | None = None):
        self.settings = settings
        self.store = store or ImageLibrary(settings.image_library)
        self.console = console or Console(stderr=True)
        self.cache = settings.image_cache
        self.debs = self.cache / "debs"
        self.logs = self.cache / "logs"
        for d in (self.debs, self.logs, self.cache / "work"):
            d.mkdir(parents=True, exist_ok=True)

    def up_to_date(self, recipe: Recipe) -> ImageBuild | None:
        image = self.store.get(recipe.name)
        if image and image.manifest.recipe_hash == recipe.hash and all(
                image.artifact_path(role).is_file() for role in image.manifest.artifacts):
            return image
        return None

    def build(self, recipe: Recipe, force: bool = False) -> BuildResult:
        if not force and (image := self.up_to_date(recipe)):
            return BuildResult(image, skipped=True)
        with self.store.lock(recipe.name), _terminate_as_interrupt():
            if not force and (image := self.up_to_date(recipe)):  # built meanwhile by another process
                return BuildResult(image, skipped=True)
            self._remove_abandoned_work(recipe.name)
            with self.store.staging(recipe.name) as staging, self._workdir(recipe.name) as work:
                log = work / "build.log"
                try:
                    with Progress(f"Building image {recipe.name} ({recipe.boot} boot)", self.console) as progress:
                        manifest = self._build(recipe, work, staging, _Log(log, progress))
                        with progress.step("publish into the image store"):
                            image = self.store.publish(staging)
                except (Exception, KeyboardInterrupt) as e:
                    kept = self._keep_log(recipe.name, log)
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    where = f"\n(full log: {kept})" if kept else ""
                    raise BuildError(f"building {recipe.name} failed: {e}\n{_tail(kept)}{where}", kept) from e
        self._prune_debs()
        self.console.print(f"Built {manifest.name} {manifest.version} in {manifest.build_seconds:.0f}s: {image.path}")
        return BuildResult(image, skipped=False)

    def _prune_debs(self) -> None:
        """Keep one version of each package in the download cache: the one fetched last."""
        newest: dict[tuple[str, str], Path] = {}
        for deb in sorted(self.debs.glob("*.deb"), key=lambda p: p.stat().st_mtime):
            parts = deb.name.split("_")
            if len(parts) == 3:
                key = (parts[0], parts[2])  # package, architecture
                if key in newest:
                    newest[key].unlink(missing_ok=True)
                newest[key] = deb

    def _keep_log(self, name: str, log: Path) -> Path | None:
        if not log.exists():
            return None
        fd, kept = tempfile.mkstemp(prefix=f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=".log", dir=self.logs)
        os.close(fd)
        shutil.copy(log, kept)
        return Path(kept)

    # -- the steps ---------------------------------------------------------------------

    def _build(self, recipe: Recipe, work: Path, staging: Path, log: _Log) -> Manifest:
        started = time.monotonic()
        p = log.progress
        with p.step(f"container image {recipe.container_image['name']} from Debian packages"):
            archive = self._container_archive(recipe, work, log)
        plan = work / "plan.json"
        plan.write_text(json.dumps(self._customize_plan(recipe, archive)))
        rootfs = work / "rootfs"
        with p.step(f"install {len(recipe.packages)} packages and configure the guest (mmdebstrap)"):
            log.run(self._mmdebstrap_guest(recipe, plan, rootfs))
        with p.step("kernel and initrd for direct kernel boot"):
            kernel_version, kernel, initrd = _copy_boot_files(rootfs, staging)
        with p.step("installed package list"):
            packages = _installed_packages(rootfs)
            (staging / "packages.txt").write_text("".join(f"{n}\t{v}\n" for n, v in packages.items()))
        engine = recipe.container_engine
        if engine["package"] not in packages:
            raise BuildError(f"container engine package {engine['package']} was not installed")
        with p.step(f"root file system into a {recipe.disk_size_gib} GiB qcow2 disk"):
            disk_info = make_disk(rootfs, recipe.disk_size_gib, work, staging / "disk.qcow2")
        with p.step("checksums and manifest"):
            manifest = Manifest(
                name=recipe.name, version=recipe.version, description=recipe.description,
                recipe_hash=recipe.hash,
                built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                build_seconds=round(time.monotonic() - started, 1),
                suite=recipe.suite, architecture=recipe.architecture, boot=recipe.boot,
                kernel_version=kernel_version, kernel_cmdline=KERNEL_CMDLINE[recipe.boot],
                default_user=recipe.default_user,
                container_engine={**engine, "version": packages[engine["package"]]},
                container_image=recipe.container_image["name"],
                packages_installed=len(packages),
                artifacts={
                    "disk": describe_artifact(staging / "disk.qcow2", **disk_info),
                    "kernel": describe_artifact(kernel),
                    "initrd": describe_artifact(initrd),
                    "packages": describe_artifact(staging / "packages.txt"),
                },
            )
            manifest.write(staging)
        return manifest

    def _customize_plan(self, recipe: Recipe, archive: Path) -> dict:
        return {
            "boot": recipe.boot,
            "engine": recipe.container_engine["name"],
            "default_user": recipe.default_user,
            "container_archive": str(archive),
            "image_info": {
                "name": recipe.name, "version": recipe.version, "recipe_hash": recipe.hash,
                "default_user": recipe.default_user, "container_engine": recipe.container_engine["name"],
                "container_image": recipe.container_image["name"], "boot": recipe.boot,
            },
        }

    def _container_archive(self, recipe: Recipe, work: Path, log: _Log) -> Path:
        spec = recipe.container_image
        rootfs = work / "container-rootfs"
        log.run(["mmdebstrap", "--variant=extract", "--include=" + ",".join(spec["packages"]),
                 *self._mmdebstrap_common(), recipe.suite, str(rootfs), *self._mirror()])
        container.finish_rootfs(rootfs, log.run)
        archive = work / (spec["name"].replace("/", "_").replace(":", "_") + ".tar")
        container.write_archive(rootfs, spec["name"], spec["command"], archive,
                                created_by=f"computed image build: Debian {recipe.suite} {' '.join(spec['packages'])}")
        return archive

    def _mmdebstrap_guest(self, recipe: Recipe, plan: Path, rootfs: Path) -> list[str]:
        customize = f'{sys.executable} -m images.customize {plan} "$1"'
        return [
            "mmdebstrap", "--variant=minbase", "--include=" + ",".join(recipe.packages),
            "--skip=essential/unlink",
            '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
            f"--setup-hook=sync-in {self.debs} /var/cache/apt/archives/",
            f"--customize-hook=sync-out /var/cache/apt/archives {self.debs}",
            f"--customize-hook={customize}",
            *self._mmdebstrap_common(), *(f"--dpkgopt={o}" for o in DPKG_OPTIONS),
            recipe.suite, str(rootfs), *self._mirror(),
        ]

    def _mmdebstrap_common(self) -> list[str]:
        return ["--mode=root", "--components=main", "--aptopt=Acquire::Retries \"3\""]

    def _mirror(self) -> list[str]:
        return [self.settings.debian_mirror] if self.settings.debian_mirror else []

    # -- scratch space -------------------------------------------------------------------

    @contextmanager
    def _workdir(self, name: str) -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(prefix=f"{name}{SCRATCH_SEP}", dir=self.cache / "work"))
        try:
            yield path
        finally:
            remove_tree(path)

    def _remove_abandoned_work(self, name: str) -> None:
        """Scratch left by a killed build of NAME (we hold NAME's lock: nobody else uses it)."""
        for path in (self.cache / "work").glob(f"{name}{SCRATCH_SEP}*"):
            remove_tree(path)


class _Log:
    """Runs commands with their output in the build log, the last line shown as progress."""

    def __init__(self, path: Path, progress: Progress):
        self.path = path
        self.progress = progress

    def run(self, cmd: list[str]) -> None:
        with self.path.open("a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
            try:
                for line in proc.stdout:
                    log.write(line)
                    self.progress.detail(line)
                rc = proc.wait()
            except BaseException:
                proc.terminate()  # mmdebstrap unmounts what it mounted when terminated
                proc.wait()
                raise
        if rc != 0:
            raise BuildError(f"{cmd[0]} exited with status {rc}")


def _copy_boot_files(rootfs: Path, dest: Path) -> tuple[str, Path, Path]:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BuildError("no kernel in /boot: the recipe needs a linux-image-* package")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = rootfs / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise BuildError(f"no initrd for kernel {version}")
    shutil.copyfile(kernels[-1], dest / "vmlinuz")
    shutil.copyfile(initrd, dest / "initrd.img")
    return version, dest / "vmlinuz", dest / "initrd.img"


def _installed_packages(rootfs: Path) -> dict[str, str]:
    out = subprocess.run(["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W",
                          "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"],
                         check=True, capture_output=True, text=True).stdout
    return {n: v for n, v, s in (line.split("\t") for line in out.splitlines()) if s.startswith("ii")}


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts anything mounted below PATH (a killed mmdebstrap can leave
    /dev, /proc and /sys mounted in its chroot; deleting through them would be a disaster)."""
    prefix = str(Path(path).resolve()) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mountpoint in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], check=False)
    still = [m for m in Path("/proc/self/mountinfo").read_text().split() if m.startswith(prefix)]
    if still:
        raise BuildError(f"cannot remove {path}: still mounted: {', '.join(still)}")
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so an interrupted build cleans up after itself."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None:
        return ""
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""
