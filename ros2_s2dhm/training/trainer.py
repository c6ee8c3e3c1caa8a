"""Fine-tuning of the VGG-16 encoder on pixel correspondences (Siamese, shared weights).

Per pair and per hypercolumn tap (native stride), with features L2-normalised per pixel:
``num_positives`` true matches drawn at random, one hard negative mined per anchor
(:mod:`ros2_s2dhm.training.mining`), the double-margin contrastive loss on both and the
Gauss-Newton loss from a start within ``gn_start_radius`` feature pixels of the true match:

    total = sum_taps L_dmc + gn_weight * sum_taps L_gn

AdamW + step LR schedule; training checkpoints hold {step, epoch, model, optimizer,
scheduler, rng, config} so that a resumed run reproduces an uninterrupted one (the random
draws of step k depend only on (seed, k, rank)). Multi-GPU through DistributedDataParallel
when launched by ``torchrun`` (``init_distributed``); the same code runs on one device.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ros2_s2dhm.errors import CheckpointError
from ros2_s2dhm.features.backbone import HYPERCOLUMN_LAYERS, TAP_STRIDES, S2DHMNetwork
from ros2_s2dhm.features.checkpoints import save_network
from ros2_s2dhm.geometry.pixels import image_to_feature
from ros2_s2dhm.options import check_config, option
from ros2_s2dhm.training.data import PairSample
from ros2_s2dhm.training.losses import dmc_loss, gauss_newton_loss, sample_features
from ros2_s2dhm.training.mining import mine_negatives, mining_pool_size, sample_positive_indices

__all__ = ["TrainConfig", "TrainResult", "DistributedContext", "init_distributed", "pair_loss",
           "train", "TRAIN_CHECKPOINT_FORMAT", "LOG_COLUMNS"]

logger = logging.getLogger(__name__)

TRAIN_CHECKPOINT_FORMAT = "ros2_s2dhm-train"
#: losses are means over the pairs of a step (summed over taps); num_pos / num_neg / num_gn are counts
#: summed over pairs (num_neg, num_gn also over taps); pool_size is the mining pool M of the step.
LOG_COLUMNS = ("step", "epoch", "lr", "loss", "dmc", "dmc_pos", "dmc_neg", "gn", "gn_e1", "gn_e2",
               "pool_size", "num_pos", "num_neg", "num_gn")
_COUNT_KEYS = ("pool_size", "num_pos", "num_neg", "num_gn")  # per step: summed over pairs (pool: as is)


@dataclass
class TrainConfig:
    """Every hyperparameter of a fine-tuning run (defaults: the paper's where it gives one);
    ``finetune``'s flags (``--steps``, ``--margin-neg``, ...) come from these declarations."""

    steps: int = option(10000, "total optimizer steps (global iteration k = 0..steps-1)", low=1)
    pairs_per_step: int = option(1, "image pairs per step and process", low=1)
    image_size: int = option(512, "longer image side fed to the network", low=32)
    lr: float = option(1e-7, "AdamW learning rate", low=1e-15)
    weight_decay: float = option(0.05, "AdamW weight decay", low=0.0)
    beta1: float = option(0.9, "AdamW beta1", low=0.0, high=1.0)
    beta2: float = option(0.999, "AdamW beta2", low=0.0, high=1.0)
    lr_step: int = option(10000, "StepLR period in steps", low=1)
    lr_gamma: float = option(0.5, "StepLR factor", low=0.0)
    grad_clip: float = option(0.0, "gradient norm clip (0: off)", low=0.0)
    num_positives: int = option(1024, "positive correspondences drawn per pair", low=1)
    num_negatives: int = option(1024, "negatives mined per pair (one per positive anchor)", low=0)
    margin_pos: float = option(0.1, "DMC positive margin M+", low=0.0)
    margin_neg: float = option(1.0, "DMC negative margin M-", low=0.0)
    negative_alpha_px: float = option(16.0, "negative candidates lie farther than this from the "
                                            "true match (image pixels)", low=0.0)
    mining_initial: float = option(300.0, "mining pool M at k=0", low=1.0)
    mining_minimum: int = option(5, "smallest mining pool M", low=1)
    mining_decay: float = option(0.6, "M = max(min, initial * exp(-decay * k / period))",
                                 low=0.0)
    mining_period: float = option(10000.0, "mining decay period in steps", low=1.0)
    gn_weight: float = option(0.5, "lambda, weight of the Gauss-Newton loss", low=0.0)
    gn_e1_weight: float = option(1.0, "weight of the GN error term e1", low=0.0)
    gn_e2_weight: float = option(2.0 / 7.0, "weight of the GN log-det term e2", low=0.0)
    gn_start_radius: float = option(1.0, "GN start offset, uniform in [-r, r]^2 feature pixels "
                                         "of each tap", low=0.0)
    gn_damping: float = option(1e-6, "damping added to the GN Hessian", low=0.0)
    taps: tuple[int, ...] = option((0, 1, 2, 3, 4), "hypercolumn taps the loss uses (0..4: "
                                                    "relu3_2 pool3 relu4_2 pool4 relu5_2)")
    trainable_from: int = option(0, "encoder layers before this index are frozen", low=0)
    checkpoint_every: int = option(1000, "steps between training checkpoints", low=1)
    keep_checkpoints: int = option(2, "periodic checkpoints kept on disk (the last is always "
                                      "kept)", low=1)
    seed: int = option(0, "seed of data order, sampling, mining and random init", low=0)

    def validate(self) -> None:
        """Rules beyond each field's bounds (those are its option's: options.check_config)."""
        if not self.taps or len(set(self.taps)) != len(self.taps) or not all(
                0 <= t < len(TAP_STRIDES) for t in self.taps):
            raise ValueError(f"taps={self.taps}: expected distinct indices in "
                             f"0..{len(TAP_STRIDES) - 1}")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.taps = tuple(config.taps)
        return config


@dataclass
class TrainResult:
    """steps: completed steps; weights: the final network (``save_network`` format);
    checkpoint: the last training checkpoint; log_csv / plot: loss log and curves;
    history: the rows logged by this run."""

    steps: int
    weights: Path | None
    checkpoint: Path | None
    log_csv: Path | None
    plot: Path | None
    history: list[dict]


@dataclass
class DistributedContext:
    """rank / world_size of this process and its device (world_size 1 = no DDP)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device, environ: dict | None = None) -> DistributedContext:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1), else no-op.

    With CUDA each process uses ``cuda:LOCAL_RANK`` and NCCL, otherwise gloo on ``device``.
    """
    environ = os.environ if environ is None else environ
    device = torch.device(device)
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), device)


class _SiameseTaps(nn.Module):
    """Shared-weight two-branch encoder: (image_i, image_j) -> (taps_i, taps_j).

    Registers only ``network.encoder`` (the part the loss trains), so DDP sees no unused
    NetVLAD parameters; one forward call per pair keeps DDP's one-forward-one-backward rule.
    """

    def __init__(self, network: S2DHMNetwork):
        super().__init__()
        self.encoder = network.encoder
        object.__setattr__(self, "_network", network)

    def forward(self, image_i: torch.Tensor, image_j: torch.Tensor):
        return self._network.taps(image_i), self._network.taps(image_j)


def _step_generator(seed: int, step: int, rank: int, pair: int) -> torch.Generator:
    """CPU generator of the random draws of one pair of one step (resume-safe)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + rank * 97 + pair)


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 distance with a finite gradient at zero: (N, C), (N, C) -> (N,)."""
    return ((a - b).pow(2).sum(dim=1) + 1e-12).sqrt()


def pair_loss(taps_i: list[torch.Tensor], taps_j: list[torch.Tensor], pt_i: torch.Tensor,
              pt_j: torch.Tensor, config: TrainConfig, iteration: int,
              generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Loss of one pair summed over taps.

    taps_*: the 5 taps of each image, [1, C_l, H_l, W_l]; pt_i, pt_j: (N, 2) image pixels of
    the correspondences (on the taps' device). Returns (total scalar, float statistics).
    """
    selected = sample_positive_indices(pt_i.shape[0], config.num_positives, generator).to(pt_i.device)
    pt_i, pt_j = pt_i[selected], pt_j[selected]
    pool = mining_pool_size(iteration, config.mining_initial, config.mining_minimum,
                            config.mining_decay, config.mining_period)
    total = pt_i.new_zeros(())
    stats = {key: 0.0 for key in ("dmc", "dmc_pos", "dmc_neg", "gn", "gn_e1", "gn_e2")}
    stats.update(num_neg=0, num_gn=0)
    for index in config.taps:
        stride = float(TAP_STRIDES[index])
        features_i = F.normalize(taps_i[index][0].float(), dim=0)
        features_j = F.normalize(taps_j[index][0].float(), dim=0)
        xy_i = image_to_feature(pt_i, stride)
        xy_j = image_to_feature(pt_j, stride)
        desc_i = sample_features(features_i, xy_i)
        d_pos = _distance(desc_i, sample_features(features_j, xy_j))
        num_neg = min(config.num_negatives, desc_i.shape[0])
        cells, anchors = mine_negatives(desc_i[:num_neg].detach(), features_j.detach(), xy_j[:num_neg],
                                        config.negative_alpha_px / stride, pool, generator)
        negatives = features_j[:, cells[:, 1].long(), cells[:, 0].long()].transpose(0, 1)
        d_neg = _distance(desc_i[anchors], negatives)
        dmc = dmc_loss(d_pos, d_neg, config.margin_pos, config.margin_neg)

        height, width = features_j.shape[1:]
        offset = (torch.rand(xy_j.shape, generator=generator, dtype=xy_j.dtype) * 2 - 1).to(xy_j.device)
        start = xy_j + config.gn_start_radius * offset
        inside = ((start[:, 0] >= 0) & (start[:, 0] <= width - 1)
                  & (start[:, 1] >= 0) & (start[:, 1] <= height - 1))
        gn = gauss_newton_loss(desc_i[inside], features_j, xy_j[inside], start[inside],
                               config.gn_e1_weight, config.gn_e2_weight, config.gn_damping)
        total = total + dmc.loss + config.gn_weight * gn.loss
        for key, value in (("dmc", dmc.loss), ("dmc_pos", dmc.positive), ("dmc_neg", dmc.negative),
                           ("gn", gn.loss), ("gn_e1", gn.e1), ("gn_e2", gn.e2)):
            stats[key] += float(value.detach())
        stats["num_neg"] += int(anchors.numel())
        stats["num_gn"] += gn.num_points
    stats.update(pool_size=pool, num_pos=int(pt_i.shape[0]))
    return total, stats


# ----------------------------------------------------------------------------- state

def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
             "numpy_pos": int(numpy_state[2]), "numpy_has_gauss": int(numpy_state[3]),
             "numpy_gauss": float(numpy_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_training_checkpoint(path: Path) -> dict:
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: training checkpoint not found (resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != TRAIN_CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: field 'format' is not '{TRAIN_CHECKPOINT_FORMAT}'; pass a checkpoint "
                              f"written by the fine-tuning tool (network weights go to --init)")
    return state


def _read_log(path: Path, up_to_step: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["step"]) <= up_to_step]


def _write_plot(rows: list[dict], path: Path) -> Path | None:
    if not rows:
        return None
    from matplotlib.figure import Figure  # Agg canvas, no global pyplot state

    steps = [int(r["step"]) for r in rows]
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot(1, 1, 1)
    for key in ("loss", "dmc", "gn"):
        axes.plot(steps, [float(r[key]) for r in rows], label=key)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (sum over taps)")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _set_trainable(network: S2DHMNetwork, config: TrainConfig) -> list[nn.Parameter]:
    last = HYPERCOLUMN_LAYERS[max(config.taps)]  # layers from the deepest used tap on get no gradient
    params = []
    for index, module in enumerate(network.encoder):
        for param in module.parameters():
            param.requires_grad_(config.trainable_from <= index < last)
            if param.requires_grad:
                params.append(param)
    for param in network.netvlad.parameters():
        param.requires_grad_(False)
    if not params:
        raise ValueError(f"trainable_from={config.trainable_from}: no encoder layer left to train before "
                         f"layer {last}")
    return params


def _sample_index(step: int, pair: int, config: TrainConfig, ctx: DistributedContext,
                  num_samples: int) -> tuple[int, int]:
    """(epoch, dataset index) of a pair: a fresh seeded permutation per epoch, ranks interleaved."""
    position = (step * config.pairs_per_step + pair) * ctx.world_size + ctx.rank
    epoch, offset = divmod(position, num_samples)
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(config.seed + 7919 * epoch))
    return epoch, int(order[offset])


def train(network: S2DHMNetwork, dataset, config: TrainConfig, out_dir: str | Path,
          ctx: DistributedContext | None = None, resume: str | Path | None = None, progress: bool = True,
          tensorboard: bool = False, weights_meta: dict | None = None, half_weights: bool = False) -> TrainResult:
    """Fine-tune ``network`` (in place) on ``dataset`` (items: :class:`PairSample`).

    out_dir receives ``checkpoints/step_XXXXXXXX.pth`` every ``checkpoint_every`` steps,
    ``last.pth`` (training state, for ``resume``), ``losses.csv``, ``loss_curves.png`` and the
    final ``weights.pth`` (:func:`save_network` format, loadable by ``load_network``).
    resume: a training checkpoint; the run continues at its step up to ``config.steps``.
    half_weights: store ``weights.pth`` in float16 (training checkpoints stay float32).
    Only rank 0 writes files.
    """
    check_config(config)
    ctx = ctx or DistributedContext(device=next(network.parameters()).device)
    out_dir = Path(out_dir)
    if len(dataset) == 0:
        raise ValueError("dataset: no image pair to train on")
    network.to(ctx.device).train()
    params = _set_trainable(network, config)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(config.beta1, config.beta2))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, config.lr_step), gamma=config.lr_gamma)
    start_step = 0 if resume is None else _resume(Path(resume), network, optimizer, scheduler,
                                                  config)
    model: nn.Module = _SiameseTaps(network)
    if ctx.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    log_path = out_dir / "losses.csv"
    log = _LossLog(log_path, start_step, tensorboard) if ctx.is_main else None
    history: list[dict] = []
    last_checkpoint = out_dir / "last.pth" if resume is None else Path(resume)
    bar = tqdm(total=config.steps, initial=start_step, disable=not (progress and ctx.is_main),
               desc="fine-tune", unit="step")
    epoch = 0
    for step in range(start_step, config.steps):
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        epoch, sums = _train_step(model, dataset, config, ctx, step)
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        if ctx.world_size > 1:
            sums = _average_over_processes(sums, ctx)
        row = {"step": step + 1, "epoch": epoch, "lr": lr, **{k: sums[k] for k in LOG_COLUMNS[3:]}}
        history.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}", M=row["pool_size"])
        if log is not None:
            log.write(row)
        done = step + 1
        if ctx.is_main and (done % max(1, config.checkpoint_every) == 0 or done == config.steps):
            last_checkpoint = _write_checkpoint(network, optimizer, scheduler, config, done, epoch, out_dir)
    bar.close()
    if log is not None:
        log.close()
    weights = plot = None
    if ctx.is_main:
        if start_step >= config.steps:
            logger.warning("Nothing to do: the checkpoint is at step %d >= steps %d", start_step, config.steps)
        meta = {**(weights_meta or {}), "training": _plain_config(config), "steps": max(start_step, config.steps)}
        weights = out_dir / "weights.pth"
        save_network(network, weights, extra=meta, half=half_weights)
        plot = _write_plot(_read_log(log_path, config.steps), out_dir / "loss_curves.png")
    if ctx.world_size > 1:
        dist.barrier()
    return TrainResult(max(start_step, config.steps), weights, last_checkpoint if ctx.is_main else None,
                       log_path if ctx.is_main else None, plot, history)


def _resume(path: Path, network, optimizer, scheduler, config: TrainConfig) -> int:
    """Load a training checkpoint into network, optimizer, scheduler and the RNGs; its step."""
    state = _load_training_checkpoint(path)
    try:
        network.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: field 'model' does not fit the network ({exc})") from exc
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    step = int(state["step"])
    differing = {k: (v, getattr(config, k, None)) for k, v in state["config"].items()
                 if k != "steps" and getattr(config, k, None) != (tuple(v) if isinstance(v, list) else v)}
    if differing:
        logger.warning("Resuming %s with a different configuration: %s", path, differing)
    logger.info("Resuming from %s at step %d", path, step)
    return step


def _train_step(model, dataset, config: TrainConfig, ctx: DistributedContext, step: int
                ) -> tuple[int, dict[str, float]]:
    """Gradients of one step (``pairs_per_step`` pairs accumulated, synchronised across
    processes on the last); returns the epoch and the step's loss statistics."""
    sums: dict[str, float] = {}
    epoch = 0
    for pair in range(config.pairs_per_step):
        epoch, index = _sample_index(step, pair, config, ctx, len(dataset))
        sample: PairSample = dataset[index]
        generator = _step_generator(config.seed, step, ctx.rank, pair)
        image_i = sample.image_i[None].to(ctx.device)
        image_j = sample.image_j[None].to(ctx.device)
        sync_now = pair == config.pairs_per_step - 1 or ctx.world_size == 1
        with (model.no_sync() if not sync_now else contextlib.nullcontext()):
            taps_i, taps_j = model(image_i, image_j)
            loss, stats = pair_loss(taps_i, taps_j, sample.pt_i.to(ctx.device),
                                    sample.pt_j.to(ctx.device), config, step, generator)
            (loss / config.pairs_per_step).backward()
        stats["loss"] = float(loss.detach())
        for key, value in stats.items():
            if key == "pool_size":
                sums[key] = value
            elif key in _COUNT_KEYS:
                sums[key] = sums.get(key, 0) + value
            else:
                sums[key] = sums.get(key, 0.0) + value / config.pairs_per_step
    return epoch, sums


def _average_over_processes(sums: dict[str, float], ctx: DistributedContext) -> dict[str, float]:
    keys = sorted(sums)
    packed = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(packed)
    out = {k: float(v) / ctx.world_size for k, v in zip(keys, packed.tolist())}
    out.update({k: int(round(out[k])) for k in _COUNT_KEYS})
    return out


class _LossLog:
    """``losses.csv`` (the rows before ``start_step`` kept when resuming) and, optionally,
    TensorBoard scalars."""

    def __init__(self, path: Path, start_step: int, tensorboard: bool):
        self.path = path
        rows = _read_log(path, start_step)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as handle:
            csv.DictWriter(handle, LOG_COLUMNS).writeheader()
            csv.DictWriter(handle, LOG_COLUMNS).writerows(rows)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
                self.writer = SummaryWriter(str(path.parent / "tensorboard"),
                                            purge_step=start_step + 1)
            except ImportError:
                logger.warning("TensorBoard is not installed; losses go to %s only", path)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, LOG_COLUMNS).writerow(row)
        if self.writer is not None:
            for key in LOG_COLUMNS[2:]:
                self.writer.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _plain_config(config: TrainConfig) -> dict:
    values = asdict(config)
    values["taps"] = list(config.taps)
    return values


def _write_checkpoint(network, optimizer, scheduler, config: TrainConfig, step: int, epoch: int,
                      out_dir: Path) -> Path:
    payload = {"format": TRAIN_CHECKPOINT_FORMAT, "step": step, "epoch": epoch, "model": network.state_dict(),
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
               "config": _plain_config(config)}
    periodic = out_dir / "checkpoints" / f"step_{step:08d}.pth"
    _save_atomic(payload, periodic)
    last = out_dir / "last.pth"
    tmp = last.with_name(last.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(periodic, tmp)  # same bytes, no second copy on disk
    except OSError:
        shutil.copyfile(periodic, tmp)
    os.replace(tmp, last)
    kept = sorted((out_dir / "checkpoints").glob("step_*.pth"))
    for old in kept[:-max(1, config.keep_checkpoints)]:
        old.unlink()
    return last
