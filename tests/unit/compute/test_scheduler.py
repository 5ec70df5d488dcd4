"""The scheduler (computed/scheduler.py) on its own, over a store (SQLite and PostgreSQL):
its filters (disabled, unreachable, vCPUs and memory under the overcommit ratios, image not
at its shared path), its weighers (spread, pack, the image's small preference), ties, the
instances of one request, and the InsufficientInstanceCapacity message naming each
host's reason. Hosts and instances are rows written here, so each case says exactly what
the store holds; one test feeds it a host added from libvirt's test driver instead."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import threading
from collections import Counter
from decimal import Decimal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from computed.clock import FakeClock
from computed.store.engine import Database
from computed.errors import InsufficientInstanceCapacity
from computed.hosts.capacity import allocations
from computed.hosts.registry import Hosts
from computed.store.models import Host, HostImage, Instance
from computed.compute.scheduler import MAX_REASONS, Scheduler
from computed.settings import Settings
from computed.compute.sizes import Size, SizeCatalog
from images.library import ImageLibrary, ImageBuild

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SIZES = SizeCatalog()
NANO = SIZES.get("t3.nano")  # 2 vCPUs, 512 MiB
MICRO = SIZES.get("t3.micro")  # 2 vCPUs, 1024 MiB


# -- helpers ------------------------------------------------------------------------------

@pytest.fixture
def db(store_url):
    database = Database(store_url)
    yield database
    database.dispose()


@pytest.fixture
def image(tmp_path, publish_fake) -> ImageBuild:
    return publish_fake(ImageLibrary(tmp_path / "images"), "img")


@pytest.fixture
def settings(tmp_path):
    """settings(**changes) -> Settings under tmp_path (no environment, no config file)."""

    def make(**changes) -> Settings:
        return Settings.load({"COMPUTED_VAR_DIR": str(tmp_path)}, **changes)

    return make


def add_host(db: Database, name: str, vcpus: int | None, memory_mib: int | None, enabled: bool = True,
             reachable: bool = True, image_mode: str = "shared") -> None:
    with db.session() as s:
        s.add(Host(name=name, uri=f"test:///hosts/{name}.xml", address="127.0.0.1", enabled=enabled,
                   image_mode=image_mode, storage_dir="/srv/computed" if image_mode == "copy" else None,
                   vcpus=vcpus, memory_mib=memory_mib, reachable=reachable, checked_at=T0, created_at=T0))


def new_instance(host: str, vcpus: int, memory_mib: int, state: str = "running") -> Instance:
    iid = "i-" + secrets.token_hex(9)[:17]
    return Instance(id=iid, reservation_id="r-" + secrets.token_hex(9)[:17], state=state, size="custom",
                    vcpus=vcpus, memory_mib=memory_mib, disk_gib=8, price_per_hour="0", currency="USD",
                    image="img", image_version="1.0.0", image_path="/nowhere", host=host,
                    host_uri=f"test:///hosts/{host}.xml", domain_name=f"computed-{iid}",
                    launch_time=T0, state_changed_at=T0, terminated_at=T0 if state == "terminated" else None)


def add_instance(db: Database, host: str, vcpus: int, memory_mib: int, state: str = "running") -> str:
    """An instance placed on HOST by hand (as an earlier launch would have left it)."""
    inst = new_instance(host, vcpus, memory_mib, state)
    with db.session() as s:
        s.add(inst)
    return inst.id


def place(db: Database, settings: Settings, size: Size, image: ImageBuild, count: int = 1) -> list[str]:
    """Where the scheduler puts COUNT instances of SIZE, written to the store in the same
    transaction (as a launch does), so that the next placement counts them."""
    with db.session() as s:
        hosts = Scheduler(settings).place(s, size, image, count)
    for host in hosts:
        add_instance(db, host.name, size.vcpus, size.memory_mib)
    return [h.name for h in hosts]


def refusal(db: Database, settings: Settings, size: Size, image: ImageBuild, count: int = 1) -> str:
    """The message of the InsufficientInstanceCapacity a placement raises (nothing written)."""
    before = instance_count(db)
    with pytest.raises(InsufficientInstanceCapacity) as e:
        place(db, settings, size, image, count)
    assert instance_count(db) == before
    return e.value.message


def instance_count(db: Database) -> int:
    with db.reading() as s:
        return s.scalar(select(func.count()).select_from(Instance))


# -- no host -------------------------------------------------------------------------------

def test_no_hosts_at_all(db, settings, image):
    assert refusal(db, settings(), NANO, image) == (
        "no host can take a t3.nano (the service has no hosts (computed host add))")
    assert refusal(db, settings(), NANO, image, count=3) == (
        "no host can take a t3.nano for instance 1 of 3 (the service has no hosts (computed host add))")


# -- filters -------------------------------------------------------------------------------

def test_each_filter_names_its_reason_and_a_host_that_passes_them_all_is_chosen(db, settings, image):
    cfg = settings(cpu_overcommit=1.5, memory_overcommit=1.0)
    add_host(db, "a-disabled", 64, 65536, enabled=False)
    add_host(db, "b-unreachable", 64, 65536, reachable=False)
    # 2 CPUs * 1.5 = room for 3 vCPUs, 2 taken by a stopped instance (its place is kept)
    add_host(db, "c-cpus", 2, 65536)
    add_instance(db, "c-cpus", 2, 256, state="stopped")
    add_host(db, "d-memory", 64, 1024)
    add_instance(db, "d-memory", 1, 768)
    add_host(db, "e-never-checked", None, None)  # capacity unknown: room for nothing
    # a disabled host that is full and unreachable too is refused for the first reason
    add_host(db, "f-all-three", 0, 0, enabled=False, reachable=False)
    assert refusal(db, cfg, NANO, image) == (
        "no host can take a t3.nano ("
        "a-disabled: disabled; "
        "b-unreachable: unreachable; "
        "c-cpus: room for 3 vCPUs (2 times the overcommit ratio 1.5): 2 in use, 2 needed; "
        "d-memory: room for 1024 MiB of memory (1024 times the overcommit ratio 1): 768 in use, 512 needed; "
        "e-never-checked: room for 0 vCPUs (0 times the overcommit ratio 1.5): 0 in use, 2 needed; "
        "f-all-three: disabled)")
    # the refusals were the hosts', not the scheduler's: one that passes every filter is chosen
    add_host(db, "g-fits", 2, 512)
    assert place(db, cfg, NANO, image) == ["g-fits"]
    assert "g-fits: room for 3 vCPUs (2 times the overcommit ratio 1.5): 2 in use, 2 needed" in \
        refusal(db, cfg, NANO, image)


def test_terminated_instances_give_their_room_back_and_stopped_ones_keep_it(db, settings, image):
    cfg = settings(cpu_overcommit=4.0, memory_overcommit=1.0)
    add_host(db, "h", 8, 2048)
    add_instance(db, "h", 2, 1024, state="terminated")
    add_instance(db, "h", 2, 1024, state="terminated")
    add_instance(db, "h", 2, 512, state="stopped")
    add_instance(db, "h", 2, 512, state="shutting-down")  # not gone until terminated
    assert place(db, cfg, NANO, image) == ["h"]
    assert place(db, cfg, NANO, image) == ["h"]
    assert refusal(db, cfg, NANO, image).endswith("(h: room for 2048 MiB of memory (2048 times the overcommit "
                                                  "ratio 1): 2048 in use, 512 needed)")


@pytest.mark.parametrize("ratio, fits", [(1.0, 2), (1.25, 2), (1.5, 3), (2.0, 4), (4.0, 8)])
def test_vcpus_under_the_cpu_overcommit(db, settings, image, ratio, fits):
    """4 CPUs times the ratio, rounded down, in 2-vCPU instances (memory is plenty)."""
    cfg = settings(cpu_overcommit=ratio, memory_overcommit=1.0)
    add_host(db, "h", 4, 1 << 20)
    for _ in range(fits):
        assert place(db, cfg, NANO, image) == ["h"]
    room = int(4 * ratio)
    assert refusal(db, cfg, NANO, image) == (
        f"no host can take a t3.nano (h: room for {room} vCPUs (4 times the overcommit ratio {ratio:g}): "
        f"{2 * fits} in use, 2 needed)")


@pytest.mark.parametrize("ratio, fits", [(1.0, 2), (1.4, 2), (1.5, 3), (3.0, 6)])
def test_memory_under_the_memory_overcommit(db, settings, image, ratio, fits):
    """1024 MiB times the ratio in 512 MiB instances (vCPUs are plenty)."""
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=ratio)
    add_host(db, "h", 1000, 1024)
    for _ in range(fits):
        assert place(db, cfg, NANO, image) == ["h"]
    room = int(1024 * ratio)
    assert refusal(db, cfg, NANO, image) == (
        f"no host can take a t3.nano (h: room for {room} MiB of memory (1024 times the overcommit ratio "
        f"{ratio:g}): {512 * fits} in use, 512 needed)")


@pytest.mark.parametrize("setting", ["cpu_overcommit", "memory_overcommit"])
def test_the_room_is_the_capacity_times_the_ratio_as_written(db, settings, image, setting):
    """100 CPUs (or MiB) at a ratio of 1.15 are room for 115, though in binary floating
    point 100 * 1.15 is 114.99999999999999, which rounds down to 114."""
    cfg = settings(**{"cpu_overcommit": 1.0, "memory_overcommit": 1.0} | {setting: 1.15})
    unit = Size("unit", vcpus=1, memory_mib=1, disk_gib=1, price_per_hour=Decimal("0"))
    if setting == "cpu_overcommit":
        add_host(db, "h", 100, 1 << 20)
        add_instance(db, "h", 114, 1)
    else:
        add_host(db, "h", 1 << 20, 100)
        add_instance(db, "h", 1, 114)
    assert place(db, cfg, unit, image) == ["h"]
    what = "vCPUs" if setting == "cpu_overcommit" else "MiB of memory"
    assert refusal(db, cfg, unit, image) == (
        f"no host can take a unit (h: room for 115 {what} (100 times the overcommit ratio 1.15): "
        "115 in use, 1 needed)")


def test_an_image_not_at_its_shared_path_leaves_only_copy_mode_hosts(db, settings, image, tmp_path):
    cfg = settings()
    add_host(db, "a-shared", 64, 65536)
    add_host(db, "b-copy", 1, 512, image_mode="copy")
    # the shared host has far more room: spread chooses it while the image is there
    assert place(db, cfg, NANO, image) == ["a-shared"]
    shutil.rmtree(image.path)
    # a copy-mode host gets its own copy: the store's path does not matter to it
    assert place(db, cfg, NANO, image) == ["b-copy"]
    assert refusal(db, cfg, NANO, image) == (
        "no host can take a t3.nano (a-shared: the image img is not at its shared path; "
        "b-copy: room for 512 MiB of memory (512 times the overcommit ratio 1): 512 in use, 512 needed)")


def test_the_message_names_at_most_ten_hosts(db, settings, image):
    for n in range(MAX_REASONS + 2):
        add_host(db, f"h{n:02}", 64, 65536, enabled=False)
    message = refusal(db, settings(), NANO, image)
    named = [f"h{n:02}: disabled" for n in range(MAX_REASONS)]
    assert message == f"no host can take a t3.nano ({'; '.join(named)}; and 2 more hosts)"


# -- weighers ------------------------------------------------------------------------------

@pytest.fixture
def slots(db):
    """Three hosts of 2, 4 and 8 t3.nano "slots" (cpu_overcommit 2, memory_overcommit 1):
    their vCPUs and memory are in proportion, so both weighers agree on which host has
    the most room, and the answer is the host with the most slots left."""
    for name, cpus, memory in (("a", 2, 1024), ("b", 4, 2048), ("c", 8, 4096)):
        add_host(db, name, cpus, memory)
    return {"a": 2, "b": 4, "c": 8}


def test_spread_sends_each_instance_to_the_host_with_the_most_room(db, settings, image, slots):
    cfg = settings(cpu_overcommit=2.0, memory_overcommit=1.0, scheduler_strategy="spread")
    left = dict(slots)
    chosen = []
    for _ in range(sum(slots.values())):
        [host] = place(db, cfg, NANO, image)
        assert left[host] == max(left.values()), (chosen, left, host)
        left[host] -= 1
        chosen.append(host)
    # c until it is level with b; then, at equal room, the host with fewer instances first
    assert chosen == ["c", "c", "c", "c", "b", "c", "b", "c", "a", "b", "c", "a", "b", "c"]
    assert refusal(db, cfg, NANO, image).startswith("no host can take a t3.nano (a: room for 4 vCPUs")


def test_pack_fills_one_host_before_the_next(db, settings, image, slots):
    cfg = settings(cpu_overcommit=2.0, memory_overcommit=1.0, scheduler_strategy="pack")
    chosen = [place(db, cfg, NANO, image)[0] for _ in range(sum(slots.values()))]
    assert chosen == ["a"] * 2 + ["b"] * 4 + ["c"] * 8
    refusal(db, cfg, NANO, image)


def test_pack_prefers_the_fullest_host_that_still_fits(db, settings, image):
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0, scheduler_strategy="pack")
    add_host(db, "big", 16, 16384)
    add_host(db, "small", 16, 16384)
    add_instance(db, "small", 8, 8192)  # "small" has less room left now
    assert place(db, cfg, MICRO, image) == ["small"]
    add_instance(db, "small", 4, 6144)  # 2 vCPUs and 1024 MiB left: a micro still fits, just
    assert place(db, cfg, MICRO, image) == ["small"]
    # full: pack moves on to the next host, not refusing
    assert place(db, cfg, MICRO, image) == ["big"]


def test_spread_weighs_vcpus_and_memory_together(db, settings, image):
    """Room in vCPUs and in memory count alike, each scaled over the candidates."""
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0)
    add_host(db, "cpu-rich", 32, 4096)  # most vCPUs, least memory
    add_host(db, "mem-rich", 4, 16384)  # most memory, fewest vCPUs
    add_host(db, "middle", 24, 12288)  # close to the most of both
    assert place(db, cfg, NANO, image) == ["middle"]
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0, scheduler_strategy="pack")
    # the least room is cpu-rich's memory and mem-rich's vCPUs: a tie (each scores -1,
    # middle less), both without instances, so by name
    assert place(db, cfg, NANO, image) == ["cpu-rich"]


@pytest.mark.parametrize("strategy", ["spread", "pack"])
def test_equal_hosts_tie_by_name(db, settings, image, strategy):
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0, scheduler_strategy=strategy)
    for name in ("y", "x", "z"):
        add_host(db, name, 4, 2048)
    assert place(db, cfg, NANO, image) == ["x"]
    # then spread goes where the room is, pack stays
    assert place(db, cfg, NANO, image) == (["y"] if strategy == "spread" else ["x"])


def test_equal_room_goes_to_the_host_with_fewer_instances_before_the_name(db, settings, image):
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0)
    add_host(db, "p", 4, 2048)
    add_instance(db, "p", 2, 512)  # p: 2 vCPUs and 1536 MiB left, one instance
    add_host(db, "q", 2, 1536)  # q: 2 vCPUs and 1536 MiB left, none
    assert place(db, cfg, NANO, image) == ["q"]


@pytest.mark.parametrize("strategy", ["spread", "pack"])
def test_a_host_that_has_the_image_is_preferred_at_equal_room(db, settings, image, strategy):
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0, scheduler_strategy=strategy)
    add_host(db, "m", 4, 2048, image_mode="copy")
    add_host(db, "n", 4, 2048, image_mode="copy")
    with db.session() as s:  # n has a verified copy of this build; m would have to copy it
        s.add(HostImage(host="n", disk_sha256=image.manifest.artifacts["disk"]["sha256"], image=image.name,
                        image_version=image.manifest.version, verified_at=T0))
    assert place(db, cfg, NANO, image) == ["n"]


def test_the_image_preference_is_small_beside_room(db, settings, image):
    """Only a tie-breaker: a shared host with much more room wins over one with the copy."""
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0)
    add_host(db, "copied", 4, 2048, image_mode="copy")
    add_host(db, "roomy", 32, 32768, image_mode="copy")
    with db.session() as s:
        s.add(HostImage(host="copied", disk_sha256=image.manifest.artifacts["disk"]["sha256"], image=image.name,
                        image_version=image.manifest.version, verified_at=T0))
    assert place(db, cfg, NANO, image) == ["roomy"]


# -- the instances of one request ------------------------------------------------------------

def test_the_instances_of_one_request_spread_over_hosts(db, settings, image):
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0)
    for name in ("x", "y", "z"):
        add_host(db, name, 8, 4096)
    # each is placed counting those placed before it
    assert place(db, cfg, NANO, image, count=6) == ["x", "y", "z", "x", "y", "z"]


def test_the_instances_of_one_request_pack(db, settings, image):
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0, scheduler_strategy="pack")
    for name in ("x", "y"):
        add_host(db, name, 4, 4096)
    assert place(db, cfg, NANO, image, count=3) == ["x", "x", "y"]


def test_a_request_that_does_not_fit_whole_places_none(db, settings, image, slots):
    cfg = settings(cpu_overcommit=2.0, memory_overcommit=1.0)
    assert place(db, cfg, NANO, image, count=10) == ["c", "c", "c", "c", "b", "c", "b", "c", "a", "b"]
    # 4 slots are left (a: 1, b: 1, c: 2): the fifth of five finds none, and none is written
    message = refusal(db, cfg, NANO, image, count=5)
    assert message.startswith("no host can take a t3.nano for instance 5 of 5 (a: room for 4 vCPUs "
                              "(2 times the overcommit ratio 2): 4 in use, 2 needed; ")
    assert place(db, cfg, NANO, image, count=4) == ["c", "a", "b", "c"]


# -- capacity from libvirt ----------------------------------------------------------------

def node_xml(cpus: int, memory_mib: int) -> str:
    """A libvirt test driver's node with CPUS and MEMORY_MIB (the driver reads KiB)."""
    return (f"<node><cpu><mhz>2000</mhz><model>x86_64</model><active>{cpus}</active><nodes>1</nodes>"
            f"<sockets>1</sockets><cores>{cpus}</cores><threads>1</threads></cpu>"
            f"<memory>{memory_mib * 1024}</memory></node>")


def test_a_host_added_from_the_test_driver_schedules_on_its_nodes_capacity(db, settings, image, tmp_path):
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0)
    hosts = Hosts(cfg, db, FakeClock(T0))
    files = {}
    try:
        for name, cpus, memory in (("h1", 2, 1024), ("h2", 8, 1536)):
            files[name] = Path(tmp_path / f"{name}.xml")
            files[name].write_text(node_xml(cpus, memory))
            state = hosts.add(name, f"test://{files[name]}", address="127.0.1.10")
            assert (state.host.vcpus, state.host.memory_mib, state.host.reachable) == (cpus, memory, True)
        # h2 has more of both until the third, at a tie (more vCPUs, less memory); h1 fits one
        # t3.nano (2 CPUs), h2 three (1536 MiB)
        assert [place(db, cfg, NANO, image)[0] for _ in range(4)] == ["h2", "h2", "h1", "h2"]
        assert refusal(db, cfg, NANO, image) == (
            "no host can take a t3.nano (h1: room for 2 vCPUs (2 times the overcommit ratio 1): 2 in use, "
            "2 needed; h2: room for 1536 MiB of memory (1536 times the overcommit ratio 1): 1536 in use, "
            "512 needed)")
        # a host whose libvirt stops answering is recorded so, and the scheduler says so
        files["h1"].unlink()
        errors = hosts.check()
        assert errors["h2"] is None and "cannot be reached" in errors["h1"]
        assert hosts.get("h1").host.last_error == errors["h1"]
        assert hosts.get("h1").host.reachable is False
        assert refusal(db, cfg, NANO, image).startswith("no host can take a t3.nano (h1: unreachable; h2: ")
    finally:
        hosts.close()


# -- placements at once ----------------------------------------------------------------------

AT_ONCE = 40


def place_at_once(dbs: list[Database], cfg: Settings, size: Size, image: ImageBuild) -> list[str | None]:
    """AT_ONCE placements of one SIZE, released together from as many threads, each through
    one of DBS (each its own engine and connections, as separate API processes have), each
    written in the transaction that decided it: the host chosen, or None if refused."""
    barrier = threading.Barrier(AT_ONCE)

    def one(i: int) -> str | None:
        barrier.wait()
        try:
            with dbs[i % len(dbs)].session() as s:
                [host] = Scheduler(cfg).place(s, size, image, 1)
                s.add(new_instance(host.name, size.vcpus, size.memory_mib))
                return host.name
        except InsufficientInstanceCapacity:
            return None

    with ThreadPoolExecutor(AT_ONCE) as pool:
        return list(pool.map(one, range(AT_ONCE)))


def used(db: Database) -> dict[str, tuple[int, int]]:
    with db.reading() as s:
        return {host: (a.vcpus, a.memory_mib) for host, a in allocations(s).items()}


def test_placements_at_once_through_two_engines_never_overcommit(store_url, settings, image):
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0)
    dbs = [Database(store_url), Database(store_url)]
    try:
        # t3.nano fits 2 on a (its vCPUs), 3 on b (its memory)
        add_host(dbs[0], "a", 4, 4096)
        add_host(dbs[0], "b", 16, 1536)
        chosen = place_at_once(dbs, cfg, NANO, image)
        assert Counter(chosen) == {"a": 2, "b": 3, None: AT_ONCE - 5}
        assert used(dbs[1]) == {"a": (4, 1024), "b": (6, 1536)}
    finally:
        for db in dbs:
            db.dispose()


@pytest.mark.postgresql
@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
def test_placements_at_once_never_overcommit_whatever_the_servers_default_isolation(
        postgres_server, new_postgres_database, settings, image, level):
    """A PostgreSQL server (or database, or role) whose default_transaction_isolation is
    stricter than READ COMMITTED: the writers' one-at-a-time lock only helps if each
    writer reads what the one before it committed. Under REPEATABLE READ the snapshot is
    taken by the transaction's first statement, the advisory lock's own SELECT, before
    the lock is granted: every placement would read the hosts as empty. (SERIALIZABLE
    refuses them instead: a 500 to the launch.)"""
    url = new_postgres_database()
    with postgres_server.connect() as conn:
        conn.execute(f"ALTER DATABASE \"{url.rsplit('/', 1)[1]}\" SET default_transaction_isolation TO '{level}'")
    cfg = settings(cpu_overcommit=1.0, memory_overcommit=1.0)
    dbs = [Database(url), Database(url)]
    try:
        add_host(dbs[0], "a", 4, 4096)
        add_host(dbs[0], "b", 16, 1536)
        chosen = place_at_once(dbs, cfg, NANO, image)
        assert used(dbs[1]) == {"a": (4, 1024), "b": (6, 1536)}
        assert Counter(chosen) == {"a": 2, "b": 3, None: AT_ONCE - 5}
    finally:
        for db in dbs:
            db.dispose()
