"""Orbax checkpoints of a train state, keyed by epoch, with automatic resume.

Multi-process jobs: every process constructs the `Checkpointer` and calls `maybe_save` /
`restore` / `close` at the same points (orbax coordinates them; each process writes the shards
it owns, the primary one the metadata). The folder must be visible to all processes (a shared
filesystem on a cluster). `restore` reads straight into the layout of the state it is given (its
shardings), or onto `sharding`, so a checkpoint written by N processes restores in M processes or
on another device count.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def abstract_state(state_like: Any, sharding: Any = None) -> Any:
    """`ShapeDtypeStruct`s of `state_like`'s array leaves, carrying their own shardings or
    `sharding` (one sharding for every leaf, e.g. `NamedSharding(mesh, P())`)."""
    if sharding is None:
        return jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    return jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
                        if hasattr(v, "shape") and hasattr(v, "dtype") else v, state_like)


class Checkpointer:
    """Saves `(state, meta)` every `every` epochs under `directory`; `restore` picks the latest."""

    def __init__(self, directory: str, every: int = 1, max_to_keep: int = 2):
        self.every = every
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))

    def latest_epoch(self) -> int | None:
        return self.manager.latest_step()

    def maybe_save(self, epoch: int, state: Any, meta: dict, final: bool = False) -> None:
        if self.every <= 0 and not final:
            return
        if final or epoch % self.every == 0:
            self.manager.save(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

    def restore(self, state_like: Any, sharding: Any = None) -> tuple[Any, dict] | None:
        """Latest `(state, meta)` restored into the structure and shardings of `state_like` (or
        every leaf onto `sharding`), or None when there is no checkpoint."""
        epoch = self.manager.latest_step()
        if epoch is None:
            return None
        out = self.manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state(state_like, sharding)), meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
