"""Orbax checkpoints of a train state, keyed by epoch, with automatic resume."""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


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

    def restore(self, state_like: Any) -> tuple[Any, dict] | None:
        """Latest `(state, meta)` restored into the structure of `state_like`, or None."""
        epoch = self.manager.latest_step()
        if epoch is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
        out = self.manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
