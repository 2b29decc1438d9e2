"""The commit protocol for plain Zarr stores, which have no transactions.

Readers open plain stores through their consolidated metadata, so that is the commit point:
chunks are written first (beyond the arrays' committed shape, or in the one partial column), then
the arrays' own metadata, and last the root document carrying the group attributes (the ledger)
together with the consolidated metadata. In Zarr format 3 that root document is one object,
``zarr.json``, written once; in format 2 ``.zattrs`` is written and then ``.zmetadata``.

Before each operation, array metadata that differs from the consolidated view (left by a writer
that died before committing) is rolled back, so every operation starts from the committed state.
"""

from __future__ import annotations

import json
import warnings

from zarr.storage import WrapperStore

ROOT_DOCUMENTS = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata")


class DeferredRootStore(WrapperStore):
    """Holds writes of the root group's documents in memory until :meth:`publish`."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.pending: dict = {}

    def _with_store(self, store):
        wrapped = type(self)(store)
        wrapped.pending = self.pending
        return wrapped

    @property
    def _supports_sync_io(self) -> bool:
        return False

    async def get(self, key, prototype, byte_range=None):
        if key in self.pending:
            value = self.pending[key]
            return value if byte_range is None else await super().get(key, prototype, byte_range)
        return await self._store.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return key in self.pending or await self._store.exists(key)

    async def set(self, key, value) -> None:
        if key in ROOT_DOCUMENTS:
            self.pending[key] = value
            return
        await self._store.set(key, value)

    async def set_if_not_exists(self, key, value) -> None:
        if key in ROOT_DOCUMENTS:
            self.pending.setdefault(key, value)
            return
        await self._store.set_if_not_exists(key, value)

    async def publish(self) -> None:
        """Write the held root documents, the consolidated metadata last."""
        order = sorted(self.pending, key=lambda k: k == ".zmetadata")
        for key in order:
            await self._store.set(key, self.pending[key])
        self.pending.clear()


def consolidate(store: DeferredRootStore) -> None:
    import zarr
    from zarr.core.sync import sync

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(store)
    sync(store.publish())


def roll_back_uncommitted(zstore) -> int:
    """Rewrite array metadata that differs from the consolidated (committed) view; returns how many."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    committed = zarr.open_group(zstore, mode="r", use_consolidated=True)
    proto = default_buffer_prototype()
    fixed = 0
    for name, array in committed.arrays():
        docs = array.metadata.to_buffer_dict(proto)
        for key, buf in docs.items():
            path = f"{name}/{key}"
            current = sync(zstore.get(path, prototype=proto))
            if current is None or _json(current) != _json(buf):
                sync(zstore.set(path, buf))
                fixed += 1
    return fixed


def _json(buf):
    try:
        return json.loads(buf.to_bytes())
    except ValueError:
        return None
