"""The training loop: :class:`Trainer` runs a config and yields progress events.

``for event in Trainer(config).run(): ...`` trains for ``config.run.iterations`` optimiser steps.
Each step the learning rate is set from the schedule, the global batch (split over torchrun
processes) runs forward (autocast float16 on GPU when ``run.amp``), the loss is back-propagated
and the optimiser steps; the global-batch mean losses are reported as an
:class:`~training.events.IterationDone`. Every ``eval_every`` steps (and at the end) the main
process evaluates and keeps the best model; every ``checkpoint_every`` steps (and at the end) it
writes the resume state and the last model.

With ``config.deform.enabled`` the model is a deformed-downsampling segmenter
(:mod:`training.networks`). ``should_stop`` is polled after every step: when it returns True (on any process) the loop writes
the last checkpoint and ends with ``Finished(stopped=True)``. Given a ``resume`` state the run
continues from it; on CPU with fixed seeds the following losses equal an uninterrupted run's bit
for bit (data order and augmentation depend only on seed and iteration, see
:mod:`training.sampling`). ``model`` replaces the registry model (e.g. one already loaded in a
GUI); ``config.model.init_checkpoint`` starts from a trained model's weights (fine-tuning).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_m2mrf.classes import LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.models.training_scale import TrainingScale
from training import distributed, sources
from training.checkpointing import (
    BEST_MODEL,
    LAST_MODEL,
    LAST_STATE,
    export_model,
    load_training_state,
    model_metadata,
    save_training_state,
)
from training.config import TrainingConfig, save_config
from training.datasets import SampleRecord, TrainingDataset
from training.slide_samples import SlideRecord
from training.slide_scale import training_scale
from training.evaluation import evaluate
from training.event_log import EventLog
from training.events import CheckpointSaved, Evaluated, Event, Finished, IterationDone, Started
from training.losses import SegmentationLoss
from training.networks import build_network, forward_losses
from training.sampling import IterationBatchSampler
from training.schedules import build_optimizer, learning_rate, set_learning_rate
from training.transforms import training_transform

logger = logging.getLogger(__name__)


def _optimise(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Back-propagate ``loss`` and step (through the gradient scaler under float16 autocast)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


class Trainer:
    """One training run of ``config`` (see the module docstring)."""

    def __init__(
        self,
        config: TrainingConfig,
        *,
        model: nn.Module | None = None,
        resume: str | Path | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self.output_dir = Path(config.run.output_dir)
        self._model = model
        self._resume = Path(resume) if resume else None
        self._should_stop = should_stop
        self._scale: TrainingScale | None = None

    def run(self) -> Iterator[Event]:
        """Train; yields events on the main process (other processes yield nothing)."""
        processes = distributed.start(self.config.run.device)
        log = EventLog(self.output_dir, self.config.run.tensorboard) if processes.is_main else None
        try:
            for event in self._train(processes):
                if log is not None:
                    log.write(event)
                    yield event
        finally:
            if log is not None:
                log.close()
            distributed.stop(processes)

    def _train(self, processes: distributed.Processes) -> Iterator[Event]:
        config, run = self.config, self.config.run
        if run.threads:
            torch.set_num_threads(run.threads)
        torch.manual_seed(run.seed)
        classes = sources.run_classes(config.data)
        loss_fn = SegmentationLoss(config.loss)
        model = self._model if self._model is not None else build_network(config, classes, loss_fn.multilabel)
        deform = config.deform
        unused = deform.enabled and deform.sampler == "uniform" and config.loss.edge_weight == 0
        network = distributed.wrap_model(model, processes, config.model.sync_batchnorm, find_unused_parameters=unused)
        model = distributed.unwrap(network)
        optimizer = build_optimizer(model.parameters(), config.optim)
        use_amp = run.amp and processes.device.type == "cuda"
        if run.amp and not use_amp:
            logger.info("run.amp ignored on %s (mixed precision is for CUDA)", processes.device)
        scaler = torch.amp.GradScaler("cuda") if use_amp else None

        start, best_score, best_iteration = 0, -math.inf, 0
        if self._resume is not None:
            state = load_training_state(self._resume)
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as exc:
                raise UserError(
                    f"{self._resume}: does not fit the configured model ({str(exc).splitlines()[0]})"
                ) from None
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state["scaler"]:
                scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
            start, best_score, best_iteration = state["iteration"], state["best_score"], state["best_iteration"]
            logger.info("resuming %s at iteration %d of %d", self._resume, start, run.iterations)

        train_records = sources.records(config.data, classes, config.data.train_split, validation=False)
        evaluating = sources.has_validation(config.data) and processes.is_main
        val_records = sources.records(config.data, classes, config.data.val_split, validation=True) if evaluating else []
        dataset = TrainingDataset(
            train_records,
            classes,
            training_transform(config.augment),
            config.data.mean,
            config.data.std,
            multilabel=loss_fn.multilabel,
            fit_box=config.augment.resize,
            cache=config.data.cache_in_memory,
        )
        sampler = IterationBatchSampler(
            len(dataset), run.batch_size, run.seed, start, run.iterations, processes.rank, processes.world_size
        )
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=config.data.num_workers,
            pin_memory=processes.device.type == "cuda",
        )
        if processes.is_main:
            save_config(config, self.output_dir / "config.yaml")
            self._scale = training_scale(config)  # a slide model's µm per sample, for its checkpoints
        yield Started(
            start,
            run.iterations,
            processes.world_size,
            str(processes.device),
            str(self.output_dir),
            str(self._resume or ""),
            config.model.init_checkpoint,
        )

        done, stopped, metrics = start, False, None
        network.train()
        for step, (images, targets) in enumerate(loader, start=start):
            began = time.perf_counter()
            lr = learning_rate(step, run.iterations, config.optim)
            set_learning_rate(optimizer, lr)
            with torch.autocast(processes.device.type, dtype=torch.float16, enabled=use_amp):
                losses = forward_losses(
                    network,
                    model,
                    images.to(processes.device, non_blocking=True),
                    targets.to(processes.device, non_blocking=True),
                    loss_fn,
                    config.deform.edge_normalize,
                )
            _optimise(losses["loss"], optimizer, scaler)
            done = step + 1
            reported = distributed.mean_over_processes(losses, processes)
            yield IterationDone(done, lr, reported, time.perf_counter() - began)

            last = done == run.iterations
            if val_records and ((run.eval_every and done % run.eval_every == 0) or last):
                metrics = self._evaluate(model, val_records, classes, loss_fn.multilabel, processes)
                score = metrics["mean"].get(run.best_metric, math.nan)
                yield Evaluated(done, score, metrics["mean"], metrics["per_class"])
                if score > best_score:
                    best_score, best_iteration = score, done
                    meta = model_metadata(config, classes, loss_fn.multilabel, done, metrics["mean"], self._scale)
                    path = export_model(self.output_dir / BEST_MODEL, model, meta)
                    yield CheckpointSaved(done, "best", str(path), str(path))
            distributed.barrier(processes)

            stopped = distributed.any_process(self._should_stop(), processes)
            if last or stopped or (run.checkpoint_every and done % run.checkpoint_every == 0):
                if processes.is_main:
                    yield self._save_last(done, model, optimizer, scaler, best_score, best_iteration, metrics, classes)
                distributed.barrier(processes)
            if stopped:
                break

        best = str(self.output_dir / BEST_MODEL) if (self.output_dir / BEST_MODEL).exists() else ""
        yield Finished(done, stopped, str(self.output_dir / LAST_STATE), best)

    def _evaluate(
        self,
        model: nn.Module,
        records: list[SampleRecord] | list[SlideRecord],
        classes: tuple[LesionClass, ...],
        multilabel: bool,
        processes: distributed.Processes,
    ) -> dict[str, Any]:
        data = self.config.data
        return evaluate(
            model,
            records,
            classes,
            mean=data.mean,
            std=data.std,
            fit_box=self.config.augment.resize,
            multilabel=multilabel,
            device=processes.device,
        )

    def _save_last(
        self,
        done: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        best_score: float,
        best_iteration: int,
        metrics: dict[str, Any] | None,
        classes: tuple[LesionClass, ...],
    ) -> CheckpointSaved:
        state = save_training_state(
            self.output_dir / LAST_STATE,
            iteration=done,
            model=model,
            optimizer=optimizer,
            scaler=scaler,
            best_score=best_score,
            best_iteration=best_iteration,
            config=self.config,
        )
        multilabel = SegmentationLoss(self.config.loss).multilabel
        meta = model_metadata(self.config, classes, multilabel, done, metrics["mean"] if metrics else None,
                              self._scale)
        exported = export_model(self.output_dir / LAST_MODEL, model, meta)
        return CheckpointSaved(done, "last", str(state), str(exported))
