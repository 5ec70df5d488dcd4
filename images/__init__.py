"""Guest images: declarative recipes, the builder that turns them into bootable disks,
and the store that holds what was built."""

from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent
RECIPES_DIR = IMAGES_DIR / "recipes"
GUEST_DIR = IMAGES_DIR / "guest"
