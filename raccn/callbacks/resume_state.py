"""What Lightning's checkpoint lacks for an exact resume: the random streams (one place for them).

Lightning's checkpoint restores the weights, optimisers, schedulers, loop counters and callback
states (EMA included), but not the random number generators, and ``seed_everything`` on resuming
starts them from the seed again: the run after a resume then draws other glimpse locations,
other canvases and another shuffle than the run that never stopped (issue 21: 1e-2 apart after
one epoch of RAM). :class:`ResumeState` puts the two streams of a training run in the checkpoint
(its callback state, Lightning's ``state_dict``/``load_state_dict`` of callbacks):

- the model's: the global generators of torch (CPU and CUDA), NumPy and Python, as they are
  when the checkpoint is written (RAM's REINFORCE sampling, RA-CNN's random and jittered boxes);
- the data's: the position of the training loader's own stream
  (:class:`raccn.datamodules.resumable_loader.ResumableDataLoader`): the stream's state at the
  start of the epoch and the batches already trained on, or, after the epoch's last batch, its
  state for the next epoch.

Both are put back at ``on_train_start``: after the sanity check, which re-seeds the generators
when it ends, and before the first batch is fetched. The phase of RA-CNN is a function of the
global step and needs nothing.

Validation within ``fit`` draws from the model's stream (RAM samples its glimpses there too) and
the stream is put back as it was when validation ends, so training's draws do not depend on
whether validation ran: resuming from a checkpoint written at an epoch's last batch, Lightning
skips the validation the uninterrupted run did after it (its metrics are not logged again).

Under DDP the checkpoint holds rank 0's streams and every rank resumes from them; Lightning seeds
every rank alike, so ranks that draw the same number of values keep equal streams and this is
exact; it is not when ranks draw differently (e.g. uneven last batches). The shuffle is then the
distributed sampler's, drawn from its seed and the epoch Lightning gives it (``set_epoch``); after
a resume from a checkpoint written at an epoch's end, Lightning (2.6) gives it the next epoch's
number, in every later epoch too, so the data read after such a resume were those of other
epochs. At the start of every training epoch the sampler is set to ``trainer.current_epoch``,
the number Lightning gives it in a run that never stopped.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_warn
from pytorch_lightning.callbacks import Callback

from raccn.datamodules.resumable_loader import ResumableDataLoader


class ResumeState(Callback):
    """Saves the random streams in every checkpoint and puts them back on resuming (module
    docstring). The CLI adds it to every run; with a ``Trainer`` built in Python, pass it in
    ``callbacks`` for exact resumes."""

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._loaded: dict[str, Any] | None = None
        self._training_rng: dict[str, Any] | None = None  # the model's stream while validating

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        # written during validation (SIGTERM there): the training stream it will return to
        state: dict[str, Any] = {"rng": self._training_rng or _rng_states(), "data": None}
        loader = _train_loader(trainer)
        if loader is not None and loader.position()["epoch_start"] is not None:
            pos = loader.position()
            if pos["fetched"] >= trainer.num_training_batches:  # the epoch's batches are done
                state["data"] = {"rng": pos["rng"], "skip": 0}
            else:
                state["data"] = {"rng": pos["epoch_start"], "skip": pos["fetched"]}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict or None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._training_rng = _rng_states()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._training_rng is not None:  # before the checkpoint callbacks' (Lightning runs them last)
            _set_rng_states(self._training_rng)
            self._training_rng = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        _set_rng_states(loaded["rng"])
        data = loaded.get("data")
        if data is None:
            return
        loader = _train_loader(trainer)
        if loader is None:
            rank_zero_warn(
                "ResumeState: the training loader is not a raccn ResumableDataLoader, so the batches "
                "after this resume differ from those of an uninterrupted run (the weights after it too)."
            )
            return
        loader.resume_from(data["rng"], data["skip"])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The (distributed) sampler's epoch: ``trainer.current_epoch`` (module docstring). Not
        called in the epoch a mid-epoch checkpoint resumes, where Lightning's number is right."""
        loader = trainer.train_dataloader
        batch_sampler = getattr(loader, "batch_sampler", None)
        for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(trainer.current_epoch)


def _rng_states() -> dict[str, Any]:
    """The global generators' states, in types ``torch.load(weights_only=True)`` reads back."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    cuda = states["torch.cuda"]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)  # else saved on other devices: CUDA's stay as seeded
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def _train_loader(trainer: pl.Trainer) -> ResumableDataLoader | None:
    loader = trainer.train_dataloader  # the module's or data module's (None before fit loads it)
    return loader if isinstance(loader, ResumableDataLoader) else None
