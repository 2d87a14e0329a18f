"""The argument list for open_clip's training `main()`, mapped from a scale exactly as DataComp's
`train.py` maps it (reference §4.3), checked against open_clip_train 3.3.0's `params.py`.

Differences from DataComp's list, all forced by open_clip 3.3.0 or by running without a GPU:
- every flag DataComp passes still exists in open_clip_train 3.3.0 under the same name, so none is
  renamed; `--blur-field` never existed in any open_clip release and is not offered;
- `--device cpu` is added when training on CPU (open_clip defaults to cuda and would only fall back
  with a warning); GPU runs pass nothing, as DataComp;
- precision: DataComp's default is `amp`. On CPU, open_clip's `amp` means fp16 autocast plus a
  GradScaler, which runs but is slower than fp32 there (measured on 2 cores with the tiny model), so
  an unset precision becomes `fp32` on CPU. For xlarge an unset precision becomes `amp_bfloat16`, as
  DataComp's slurm_train.sh does ("amp results in a significant performance drop at xlarge scale").
  An explicitly chosen precision is always passed as given.

Workers: open_clip decodes and augments on the CPU with PIL (RandomResizedCrop bicubic, ToTensor,
Normalize): ~150 samples/s per loader worker (measured on the H200 host and on this 2-core machine).
ViT-B/32 at DataComp small's batch takes ~3,900 samples/s on one H200, so a GPU needs ~26 busy cores
to stay fed; with fewer, training is data-bound (bench/train.py: 16 workers -> 54% of the GPU-only rate,
24 workers -> 66%, on a 32-core host). Each worker builds whole per-GPU batches (2.5 GB at 4096), so
memory grows with workers x batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from curate.errors import CurateError
from curate.training.scales import Scale

IMAGE_DECODERS = ("workers", "nvjpeg")  # who decodes JPEGs for gpu_decode (curate.training.gpu_loader)
PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32")  # DataComp train.py's choices


@dataclass(frozen=True)
class TrainSettings:
    """What a user may set (DataComp's train.py options); the scale's recipe is not among them."""

    scale: Scale
    num_checkpoints: int = 5
    precision: str | None = None  # None: amp on GPU (amp_bfloat16 for xlarge), fp32 on CPU
    seed: int = 0
    workers: int = 4
    accum_freq: int = 1
    gpus: int = 1  # processes per node, one GPU each; 0: one process on CPU
    nodes: int = 1
    log_every_n_steps: int | None = None  # None: the scale's (100 for DataComp's scales)
    grad_clip_norm: float | None = None
    imagenet_val: str | None = None
    report_to_wandb: bool = False
    wandb_project_name: str = "datanet"
    gpu_decode: bool = True  # on GPUs: augment images there (curate.training.gpu_loader)
    image_decoder: str = "workers"  # with gpu_decode: who decodes the JPEGs (gpu_loader.DECODERS)

    def problems(self) -> list[str]:
        out = []
        if self.num_checkpoints < 1:
            out.append(f"num_checkpoints must be >= 1 (got {self.num_checkpoints})")
        if self.precision is not None and self.precision not in PRECISIONS:
            out.append(f"precision must be one of {', '.join(PRECISIONS)} (got '{self.precision}')")
        if self.workers < 0:
            out.append(f"workers must be >= 0 (got {self.workers})")
        if self.image_decoder not in IMAGE_DECODERS:
            valid = ", ".join(IMAGE_DECODERS)
            out.append(f"image_decoder must be one of {valid} (got '{self.image_decoder}')")
        if self.accum_freq < 1:
            out.append(f"accum_freq must be >= 1 (got {self.accum_freq})")
        if self.gpus < 0 or self.nodes < 1:
            out.append(f"gpus must be >= 0 and nodes >= 1 (got gpus={self.gpus}, nodes={self.nodes})")
        if self.gpus == 0 and self.nodes > 1:
            out.append("multi-node training needs GPUs (gpus >= 1)")
        if self.per_gpu_batch < 1:
            out.append(
                f"the global batch {self.scale.batch_size} is smaller than world size x accum_freq "
                f"({self.world_size} x {self.accum_freq})"
            )
        if self.scale.train_num_samples // self.num_checkpoints < 1:
            out.append(f"num_checkpoints {self.num_checkpoints} exceeds the samples seen")
        return out

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise CurateError("invalid training settings", problems)

    @property
    def effective_gpu_decode(self) -> bool:
        """GPU decoding applies only where training runs on GPUs."""
        return self.gpu_decode and self.device == "cuda"

    @property
    def device(self) -> str:
        return "cuda" if self.gpus > 0 else "cpu"

    @property
    def world_size(self) -> int:
        return max(1, self.gpus) * self.nodes

    @property
    def per_gpu_batch(self) -> int:
        """DataComp: global // (world_size * accum_freq), integer division as in its train.py."""
        return self.scale.batch_size // (self.world_size * self.accum_freq)

    @property
    def effective_global_batch(self) -> int:
        return self.per_gpu_batch * self.world_size * self.accum_freq

    @property
    def effective_precision(self) -> str:
        if self.precision is not None:
            return self.precision
        if self.device == "cpu":
            return "fp32"
        return "amp_bfloat16" if self.scale.name == "xlarge" else "amp"

    @property
    def samples_per_epoch_nominal(self) -> int:
        return self.scale.train_num_samples // self.num_checkpoints

    def schedule(self) -> dict[str, int]:
        """Samples and steps as open_clip 3.3.0 rounds them (open_clip_train/data.py get_wds_dataset):
        per epoch, batches = ceil(ceil(n / (per_gpu_batch * world)) / max(1, workers)) * max(1, workers)
        with n = train_num_samples // num_checkpoints; samples = batches * per_gpu_batch * world;
        optimiser steps = (batches // accum_freq) * epochs (main.py's scheduler total)."""
        global_micro = self.per_gpu_batch * self.world_size
        workers = max(1, self.workers)
        batches = math.ceil(math.ceil(self.samples_per_epoch_nominal / global_micro) / workers) * workers
        per_epoch = batches * global_micro
        return {
            "epochs": self.num_checkpoints,
            "batches_per_epoch": batches,
            "samples_per_epoch": per_epoch,
            "samples_seen": per_epoch * self.num_checkpoints,
            "optimizer_steps": (batches // self.accum_freq) * self.num_checkpoints,
        }

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scale"] = self.scale.name
        out.update(
            device=self.device,
            world_size=self.world_size,
            per_gpu_batch=self.per_gpu_batch,
            effective_global_batch=self.effective_global_batch,
            effective_precision=self.effective_precision,
            effective_gpu_decode=self.effective_gpu_decode,
        )
        return out


def build_argv(
    settings: TrainSettings,
    train_data: str,
    logs: str,
    name: str,
    data_weights: str | None = None,
    resume: str = "latest",
) -> list[str]:
    """open_clip_train.main.main's argv, in DataComp's order, for one training."""
    s, scale = settings, settings.scale
    argv = [
        "--save-frequency", "0",
        "--ddp-static-graph",
        "--local-loss",
        "--gather-with-grad",
        "--grad-checkpointing",
        "--train-data", train_data,
        "--train-num-samples", str(s.samples_per_epoch_nominal),
        "--warmup", str(scale.warmup),
        "--dataset-type", "webdataset",
        "--precision", s.effective_precision,
        "--workers", str(s.workers),
        "--model", scale.model,
        "--batch-size", str(s.per_gpu_batch),
        "--epochs", str(s.num_checkpoints),
        "--lr", str(scale.learning_rate),
        "--logs", logs,
        "--name", name,
        "--seed", str(s.seed),
        "--accum-freq", str(s.accum_freq),
        "--log-every-n-steps", str(s.log_every_n_steps or scale.log_every_n_steps),
        "--save-most-recent",
        "--resume", resume,
        "--dataset-resampled",
    ]  # fmt: skip
    if s.report_to_wandb:
        argv += ["--report-to", "wandb", "--wandb-project-name", s.wandb_project_name]
    if s.imagenet_val is not None:
        argv += ["--imagenet-val", s.imagenet_val]
    if scale.beta2 is not None:
        argv += ["--beta2", str(scale.beta2)]
    if data_weights is not None:
        argv += ["--train-data-upsampling-factors", data_weights]
    if s.grad_clip_norm is not None:
        argv += ["--grad-clip-norm", str(s.grad_clip_norm)]
    if s.device == "cpu":
        argv += ["--device", "cpu"]
    return argv
