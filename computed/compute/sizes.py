"""Instance sizes: a catalog of EC2-like names with vCPUs, memory, root disk and an hourly
price. An operator replaces the built-in catalog with a TOML file (setting ``sizes_file``)::

    currency = "EUR"
    [[size]]
    name = "small"
    vcpus = 1
    memory_mib = 1024
    disk_gib = 10
    price_per_hour = "0.01"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from computed.errors import InvalidInstanceType

NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")


@dataclass(frozen=True)
class Size:
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    price_per_hour: Decimal
    currency: str = "USD"

    def to_dict(self) -> dict:
        return asdict(self) | {"price_per_hour": str(self.price_per_hour)}


# EC2's t3 family on-demand Linux prices (us-east-1), as a familiar starting point.
DEFAULT_SIZES = (
    Size("t3.nano", 2, 512, 8, Decimal("0.0052")),
    Size("t3.micro", 2, 1024, 8, Decimal("0.0104")),
    Size("t3.small", 2, 2048, 8, Decimal("0.0208")),
    Size("t3.medium", 2, 4096, 16, Decimal("0.0416")),
    Size("t3.large", 2, 8192, 16, Decimal("0.0832")),
)


class SizeCatalogError(ValueError):
    pass


class SizeCatalog:
    def __init__(self, sizes: tuple[Size, ...] | list[Size] = DEFAULT_SIZES):
        self._sizes = {s.name: s for s in sizes}

    @classmethod
    def load(cls, path: Path | None) -> SizeCatalog:
        return cls() if path is None else cls(_read(path))

    def all(self) -> list[Size]:
        return list(self._sizes.values())

    def get(self, name: str) -> Size:
        try:
            return self._sizes[name]
        except KeyError:
            known = ", ".join(self._sizes)
            shown = repr(name) if len(name) <= 64 else repr(name[:64]) + "..."
            raise InvalidInstanceType(f"the size {shown} does not exist (sizes: {known})") from None


def _read(path: Path) -> list[Size]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SizeCatalogError(f"{path}: {e}") from None
    currency = data.get("currency", "USD")
    entries = data.get("size")
    if not isinstance(entries, list) or not entries:
        raise SizeCatalogError(f"{path}: needs at least one [[size]] table")
    sizes, seen = [], set()
    for i, entry in enumerate(entries):
        where = f"{path}: size[{i}]"
        if not isinstance(entry, dict):
            raise SizeCatalogError(f"{where}: must be a [[size]] table")
        try:
            name = entry["name"]
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise SizeCatalogError(f"{where}: name must be lower-case letters, digits, '.' and '-'")
            if name in seen:
                raise SizeCatalogError(f"{where}: {name!r} appears twice")
            seen.add(name)
            numbers = {k: entry[k] for k in ("vcpus", "memory_mib", "disk_gib")}
            for k, v in numbers.items():
                if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                    raise SizeCatalogError(f"{where}: {k} must be a positive whole number")
            price = Decimal(str(entry["price_per_hour"]))
            if price < 0 or not price.is_finite():
                raise SizeCatalogError(f"{where}: price_per_hour must not be negative")
        except KeyError as e:
            raise SizeCatalogError(f"{where}: missing {e.args[0]}") from None
        except InvalidOperation:
            raise SizeCatalogError(f"{where}: price_per_hour must be a decimal number") from None
        sizes.append(Size(name, price_per_hour=price, currency=entry.get("currency", currency), **numbers))
    return sizes
