"""The trainer every adaptation method plugs into: ``train(config) -> run folder``, top to bottom.

config → accelerator → data → method (``config.method.build``) → optimiser and schedule →
``accelerator.prepare`` → EMA teacher → resume → loop → final evaluation → model.

The trainer owns devices, mixed precision, distribution (HF accelerate: one process or several under
``accelerate launch``/``torchrun``, DDP or FSDP, one or several nodes), gradient accumulation, the
EMA teacher, checkpoints, evaluation and logging; the method owns its modules and its step
(:mod:`madm_train.methods.base`). One iteration:

1. EMA update of the teacher (from iteration 1 on, if the method averages anything);
2. per accumulated batch: draw B source (rare-class sampling) and B target images, the method's
   step returns the loss, ``accelerator.backward``;
3. on the last accumulated batch: gradient-norm clip (after fp16 unscaling), AdamW step, schedule
   step; the logged ``lr`` is the one this step used.

The run folder receives the resolved config, ``log.jsonl`` and ``tensorboard/`` (scalars, and
image grids at every evaluation), periodic evaluations (``eval-<step>/``), numbered checkpoints
from which ``run.resume`` continues (:mod:`madm_train.training.checkpoints`), the final ``model/``
(with a format tag, see :mod:`madm_train.models.saved`) and ``metrics.json`` of the target test split.
Only the main process writes; with several processes each draws its own batches (seed + rank).
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError
from madm_ros.palettes import LabelSet, get_label_set

if TYPE_CHECKING:
    from collections.abc import Sequence

    from accelerate import Accelerator

    from madm_train.config import TrainConfig

__all__ = ["CHECKPOINTS", "Trainer", "make_accelerator", "train"]

CHECKPOINTS = "checkpoints"
"""Folder of the numbered checkpoints inside a run folder."""


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The accelerator of a run: device, mixed precision, accumulation, DDP/FSDP when launched on several processes.

    accelerate keeps its state per process and refuses a second, different mixed-precision
    setting; one process may run several trainings (the benchmark, tests), so each starts afresh
    (the process group itself is kept).
    """
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, FullyShardedDataParallelPlugin

    run = config.run
    if run.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device is 'cuda' but no CUDA device is available; train on the CPU with "
                          "--set run.device=cpu --set run.amp=false")
    AcceleratorState._reset_state(reset_partial_state=False)
    precision = "no" if not run.amp else ("fp16" if run.amp_dtype == "float16" else "bf16")
    fsdp = None
    if run.distributed == "fsdp":
        # FSDP2: every diffusers transformer and ResNet block becomes one shard unit of the UNet and VAE.
        fsdp = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                              transformer_cls_names_to_wrap=["BasicTransformerBlock", "ResnetBlock2D"],
                                              reshard_after_forward=True, state_dict_type="FULL_STATE_DICT")
    return Accelerator(
        cpu=run.device == "cpu", mixed_precision=precision,
        gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,  # the schedule counts optimiser steps, whatever the process count
        kwargs_handlers=[DistributedDataParallelKwargs(
            find_unused_parameters=config.method.find_unused_parameters)],
        fsdp_plugin=fsdp)


def _image_grid(images: dict[str, Any], label_set: LabelSet) -> np.ndarray:
    """A step's panels side by side as one H×nW×3 uint8 image (class-id panels coloured)."""
    import torch.nn.functional as F

    from madm_ros.palettes import colorize

    size = next(iter(images.values())).shape[-2:]
    panels = []
    for tensor in images.values():
        tensor = tensor.detach().cpu()
        if tensor.ndim == 3:  # an image in [0, 1]
            tensor = F.interpolate(tensor[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            panels.append(np.rint(tensor.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        else:  # class ids
            tensor = F.interpolate(tensor[None, None].float(), size=size, mode="nearest")[0, 0]
            panels.append(colorize(tensor.numpy().astype(np.uint8), label_set))
    return np.concatenate(panels, axis=1)


def _refuse_earlier_run(run_dir: Path, resume: str | None) -> None:
    """Refuse to start fresh in a folder that holds a run (checkpoints or a model), before anything is loaded.

    Why: a fresh run there would overwrite the model and log of the earlier one and leave its
    checkpoints beside the new ones, and keeping only the newest checkpoints would then delete
    the new run's own.
    """
    from madm_train.training.checkpoints import list_checkpoints

    if resume:
        return
    earlier = [p.name for p in list_checkpoints(run_dir / CHECKPOINTS)] + (["model"] if (run_dir / "model").is_dir() else [])
    if earlier:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(earlier)}); continue it with --resume latest, or "
                          "start fresh in another folder (--set run.out_dir=DIR) or after deleting this one")


def _evaluate(predictor: Any, test: Any, label_set: LabelSet, out_dir: Path, device: Any, batch_size: int,
              eval_classes: str | Sequence[str]) -> dict[str, Any]:
    """The predictor (MADM: the student) on the target test split, in fp32."""
    import torch

    from madm_train.training.evaluate import evaluate

    if not test.label_paths():  # e.g. a bag without a label topic: nothing to score against
        return {"miou": None, "images": 0, "note": "the target evaluation split has no labels: not evaluated"}
    predictor.eval()
    try:
        return evaluate(lambda x: predictor.logits(x.to(device)), test, label_set, out_dir, batch_size=batch_size,
                        eval_classes=eval_classes)
    finally:
        torch.set_grad_enabled(True)
        predictor.train()


def _keep_log_until(log_file: Path, step: int) -> None:
    """Drop the log lines of iterations after ``step`` (written by a run that stopped before its next checkpoint)."""
    if not log_file.is_file():
        return
    kept = [line for line in log_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("iteration", 0) <= step]
    atomic_write_bytes(log_file, "".join(f"{line}\n" for line in kept).encode())


def _check_replicas(accelerator: Accelerator, network: Any, distributed: str) -> None:
    """Raise if the processes' weights differ (DDP keeps replicas identical; this proves it for the run)."""
    import torch

    if accelerator.num_processes == 1 or distributed == "fsdp":  # FSDP shards hold different slices by design
        return
    total = torch.stack([p.detach().double().sum() for p in network.parameters()]).sum().reshape(1)
    gathered = accelerator.gather(total.to(accelerator.device))
    if not torch.equal(gathered.min(), gathered.max()):
        raise RuntimeError(f"model replicas diverged across processes (weight checksums {gathered.tolist()})")


def _summary(config: TrainConfig, accelerator: Accelerator, trainable: int, start: int) -> str:
    c, run = config, config.run
    batch = c.data.batch_size * c.optim.gradient_accumulation_steps * accelerator.num_processes
    where = f"resuming at iteration {start}" if start else "starting fresh"
    return (f"adapt: method {c.method.name}, task {c.task}, {accelerator.num_processes} process(es) on {accelerator.device.type} "
            f"({run.distributed if accelerator.num_processes > 1 else 'single process'}), precision "
            f"{accelerator.mixed_precision}; batch {c.data.batch_size} source + {c.data.batch_size} target × "
            f"{c.optim.gradient_accumulation_steps} accumulated × {accelerator.num_processes} process(es) = {batch} + {batch} "
            f"per step; {c.optim.max_iter} iterations; {trainable / 1e6:.2f} M trainable parameters; {where}; "
            f"run folder {run.out_dir}")


class Trainer:
    """One run, phase by phase: ``Trainer(config)`` sets up (and resumes), :meth:`run` loops, :meth:`finish` saves.

    :meth:`iteration` is public so that ``bench/madm_step.py`` times exactly the trainer's iteration.

    Args:
        config: The resolved training config.
        progress: Show a progress bar (main process only).
    """

    def __init__(self, config: TrainConfig, *, progress: bool = True) -> None:
        import torch
        from accelerate.utils import set_seed

        from madm_train.config import save_config
        from madm_train.data.build import build_datasets
        from madm_train.methods.base import BuildContext
        from madm_train.training.batches import BatchDrawer
        from madm_train.training.checkpoints import load_checkpoint, resolve_resume, validate_checkpoint
        from madm_train.training.ema import EmaTeacher
        from madm_train.training.schedule import build_lr_scheduler, build_optimizer, parameter_groups

        self.config, self.progress = config, progress
        self.run_dir = Path(config.run.out_dir)
        _refuse_earlier_run(self.run_dir, config.run.resume)
        # -- accelerator, data, method ---------------------------------------------------------
        self.accelerator = accelerator = make_accelerator(config)
        rank, self.is_main = accelerator.process_index, accelerator.is_main_process
        set_seed(config.run.seed)  # identical initial weights in every process
        self.label_set = get_label_set(config.data.label_set)
        source, target, self.test = build_datasets(config, rank=rank, is_main=self.is_main,
                                                   barrier=accelerator.wait_for_everyone)
        self.method = config.method.build(BuildContext(config, self.label_set, self.run_dir, rank, self.is_main,
                                                       accelerator.wait_for_everyone))
        if config.run.distributed == "fsdp" and accelerator.num_processes > 1 and self.method.averaged:
            raise ConfigError(f"run.distributed=fsdp does not work with {config.method.name}'s EMA teacher yet (the "
                              "teacher swaps parameters in place, which sharded parameters do not allow): use "
                              "--set run.distributed=ddp")
        self.drawer = BatchDrawer(source, target, config, rank=rank, device=accelerator.device)

        # -- optimiser, schedule, accelerate ----------------------------------------------------
        groups = parameter_groups([self.method.network], lr=config.optim.lr, weight_decay=config.optim.weight_decay,
                                  head_lr_multiplier=config.optim.head_lr_multiplier)
        optimizer = build_optimizer(groups, config.optim)
        scheduler = build_lr_scheduler(optimizer, config.optim)
        self.network, self.optimizer, self.scheduler = accelerator.prepare(self.method.network, optimizer, scheduler)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.adversary = self.adversary_optimizer = None
        if self.method.adversary is not None:  # prepared after the network, so checkpoints name it model_1/optimizer_1
            adversary = self.method.adversary
            self.adversary, self.adversary_optimizer = accelerator.prepare(
                adversary.module, torch.optim.Adam(adversary.module.parameters(), lr=adversary.lr, betas=adversary.betas))
        self.teacher = EmaTeacher(self.method.averaged, alpha_max=self.method.ema_alpha) if self.method.averaged else None
        self.generators = {**self.drawer.generators(),
                           **{f"method.{k}": v for k, v in self.method.generators().items()}}

        # -- resume: every file checked and restored before anything in the run folder changes --
        self.start = 0
        checkpoint = resolve_resume(self.run_dir / CHECKPOINTS, config.run.resume)
        if checkpoint is not None:
            info = validate_checkpoint(checkpoint, processes=accelerator.num_processes)
            self.start = load_checkpoint(accelerator, info, ema=self.teacher, generators=self.generators)
            if self.start > config.optim.max_iter:
                raise ConfigError(f"{checkpoint.name} is at iteration {self.start}, past optim.max_iter "
                                  f"{config.optim.max_iter}: resuming would only write its weights again; raise "
                                  "optim.max_iter to train on, or start in another run.out_dir")
        if self.is_main:
            save_config(config, self.run_dir)
            print(_summary(config, accelerator, sum(p.numel() for p in self.trainable), self.start), file=sys.stderr)
        self.images: dict[str, Any] = {}
        self.board: Any = None  # the TensorBoard writer of the main process, opened by run()

    def iteration(self, iteration: int, *, want_images: bool = False) -> dict[str, float]:
        """One optimiser step (module docstring, steps 1–3); returns the scalars to log, images in :attr:`images`."""
        from madm_train.methods.base import StepContext

        accelerator, optim = self.accelerator, self.config.optim
        alpha = self.teacher.update(iteration) if self.teacher is not None and iteration > 0 else 0.0
        scalars: dict[str, float] = {}
        self.images = {}
        for micro in range(optim.gradient_accumulation_steps):
            with accelerator.accumulate(self.network):
                source = self.drawer.source_batch()
                target = self.drawer.target_batch() if self.method.needs_target else None
                context = StepContext(iteration, self.network, self.teacher, accelerator.autocast,
                                      want_images=want_images and micro == 0, adversary=self.adversary,
                                      update_adversary=self._update_adversary if self.adversary is not None else None)
                result = self.method.step(context, source, target)
                accelerator.backward(result.loss)
                for key, value in {**result.scalars, "loss": result.loss.item()}.items():
                    scalars[key] = scalars.get(key, 0.0) + value / optim.gradient_accumulation_steps
                self.images = self.images or result.images
                if accelerator.sync_gradients:
                    scalars["grad_norm"] = float(accelerator.clip_grad_norm_(self.trainable, optim.grad_clip_norm))
                    scalars["lr"] = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
                    self.optimizer.step()
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        if self.teacher is not None:
            scalars["ema_alpha"] = alpha
        return scalars

    def _update_adversary(self, loss: Any) -> float:
        """One optimiser step of the method's adversary on ``loss`` (``StepContext.update_adversary``)."""
        assert self.adversary_optimizer is not None  # only handed to methods with an adversary
        self.accelerator.backward(loss)
        self.adversary_optimizer.step()  # accelerate skips it (and zero_grad) while gradients accumulate
        self.adversary_optimizer.zero_grad(set_to_none=True)
        return float(loss.item())

    def kept_weights(self) -> AbstractContextManager[Any]:
        """Inside: the network holds the weights that are evaluated and saved (the EMA average if the method keeps it)."""
        if self.method.keeps_average and self.teacher is not None:
            return self.teacher.swapped()
        return nullcontext()

    def evaluate(self, out_dir: Path) -> dict[str, Any]:
        """The method's predictor (MADM: the student) on the target test split, in fp32 (main process)."""
        with self.kept_weights():
            return _evaluate(self.method.predictor(), self.test, self.label_set, out_dir, self.accelerator.device,
                             self.config.data.batch_size, self.config.data.eval_classes)

    def run(self) -> None:
        """Iterations ``start`` … ``optim.max_iter``, with logging, periodic evaluation and checkpoints."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        from madm_train.training.checkpoints import save_checkpoint

        run, max_iter, accelerator = self.config.run, self.config.optim.max_iter, self.accelerator
        image_every = run.eval_every or max_iter
        log = None
        if self.is_main:
            _keep_log_until(self.run_dir / "log.jsonl", self.start)
            log = (self.run_dir / "log.jsonl").open("a", encoding="utf-8")
            self.board = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.start or None)
        bar = tqdm(range(self.start, max_iter), initial=self.start, total=max_iter, desc="adapt", unit="it",
                   disable=not (self.progress and self.is_main))
        try:
            for iteration in bar:
                done = iteration + 1
                started = time.perf_counter()
                scalars = self.iteration(iteration, want_images=self.is_main and (done % image_every == 0 or
                                                                                   done == max_iter))
                scalars["seconds"] = time.perf_counter() - started
                if log is not None and (done % run.log_every == 0 or done == max_iter):
                    log.write(json.dumps({"iteration": done, **scalars}) + "\n")
                    log.flush()
                    for key, value in scalars.items():
                        self.board.add_scalar(f"train/{key}", value, done)
                    bar.set_postfix(loss=f"{scalars['loss']:.3f}", q=f"{scalars.get('pseudo_label_weight', 0.0):.2f}")
                if self.is_main and self.images:
                    self.board.add_image("train/" + "|".join(self.images), _image_grid(self.images, self.label_set),
                                         done, dataformats="HWC")
                if run.eval_every and done % run.eval_every == 0 and done != max_iter:
                    if log is not None:
                        metrics = self.evaluate(self.run_dir / f"eval-{done}")
                        log.write(json.dumps({"iteration": done, "eval_miou": metrics["miou"]}) + "\n")
                        if metrics["miou"] is not None:
                            self.board.add_scalar("eval/miou", metrics["miou"], done)
                    accelerator.wait_for_everyone()
                if (run.checkpoint_every and done % run.checkpoint_every == 0) or done == max_iter:
                    save_checkpoint(accelerator, self.run_dir / CHECKPOINTS, done, ema=self.teacher,
                                    generators=self.generators, config=self.config.to_dict(),
                                    total_limit=run.checkpoints_total_limit)
        finally:
            if log is not None:
                log.close()

    def finish(self) -> Path:
        """Final evaluation, ``model/`` and ``metrics.json`` (main process); returns the run folder."""
        accelerator = self.accelerator
        _check_replicas(accelerator, self.network, self.config.run.distributed)
        if self.is_main:
            metrics = self.evaluate(self.run_dir / "eval-final")
            if self.board is not None:
                if metrics["miou"] is not None:
                    self.board.add_scalar("eval/miou", metrics["miou"], self.config.optim.max_iter)
                self.board.close()
            with self.kept_weights():
                self.method.predictor().save(self.run_dir / "model", state_dict=accelerator.get_state_dict(self.network))
            atomic_write_bytes(self.run_dir / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return self.run_dir


def train(config: TrainConfig, *, progress: bool = True) -> Path:
    """Train ``config.method`` as configured; returns the run folder (see the module docstring)."""
    trainer = Trainer(config, progress=progress)
    trainer.run()
    return trainer.finish()
