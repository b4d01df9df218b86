"""Every pod with scaled containers, one :class:`~.podlife.PodLife` each.

The registry knows containers; this groups the managed ones by pod. A pod's life is made
when its first scaled container registers (or is reloaded) and dropped when its last one is
forgotten, under the pod's lock (:meth:`Pods.forget`). Single-threaded: the event loop's.
"""

from __future__ import annotations

from zeropod.daemon.lifecycle.podlife import LifeFactory, PodLife
from zeropod.daemon.model.pod import PodKey
from zeropod.daemon.model.registry import Container, Registry


class Pods:
    """The pods of the registry's managed containers."""

    def __init__(self, registry: Registry, make_life: LifeFactory) -> None:
        self.registry = registry
        self._make_life = make_life
        self._lives: dict[PodKey, PodLife] = {}

    def life_of(self, container: Container) -> PodLife:
        """The life of ``container``'s pod, made on first use."""
        key = PodKey.of(container)
        life = self._lives.get(key)
        if life is None:
            life = self._lives[key] = self._make_life(key, container.identity.netns)
        return life

    def find(self, key: PodKey) -> PodLife | None:
        """The pod's life, if it has scaled containers."""
        return self._lives.get(key)

    def lives(self) -> list[PodLife]:
        """Every pod's life, sorted by pod."""
        return [self._lives[key] for key in sorted(self._lives)]

    async def forget(self, container: Container) -> None:
        """A scaled container left: its pod's life cleans up, and goes once it is empty."""
        life = self._lives.get(PodKey.of(container))
        if life is not None and await life.forget(container) and self._lives.get(life.key) is life:
            del self._lives[life.key]
