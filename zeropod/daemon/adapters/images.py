"""Checkpoint images: one directory per container under ``/var/lib/zeropod/images``."""

from __future__ import annotations

import os
import shutil

IMAGE_ROOT = "/var/lib/zeropod/images"


class ImageStore:
    """Checkpoint images, one directory per container id."""

    def __init__(self, root: str = IMAGE_ROOT) -> None:
        self.root = root

    def _dir(self, container_id: str) -> str:
        return os.path.join(self.root, container_id)

    def prepare(self, container_id: str) -> str:
        path = self._dir(container_id)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, mode=0o700)
        return path

    def path(self, container_id: str) -> str | None:
        path = self._dir(container_id)
        try:
            return path if os.listdir(path) else None
        except FileNotFoundError:
            return None

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self._dir(container_id), ignore_errors=True)

    def container_ids(self) -> list[str]:
        """The containers that have an image directory (empty or not), sorted."""
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []
