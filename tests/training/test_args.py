"""open_clip argv per scale, as DataComp's train.py builds it (reference §4.3), parsed by open_clip 3.3.0."""

from __future__ import annotations

import pytest
from open_clip_train.params import parse_args

from curate.errors import CurateError
from curate.training.args import TrainSettings, build_argv
from curate.training.scales import get_scale


def _argv(scale: str, **kw: object) -> list[str]:
    settings = TrainSettings(get_scale(scale), **kw)  # type: ignore[arg-type]
    return build_argv(settings, "/d/{00000000..00000009}.tar", "/out", f"{scale}_scale")


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_small_on_one_gpu_is_datacomps_exact_list() -> None:
    assert _argv("small") == [
        "--save-frequency", "0",
        "--ddp-static-graph",
        "--local-loss",
        "--gather-with-grad",
        "--grad-checkpointing",
        "--train-data", "/d/{00000000..00000009}.tar",
        "--train-num-samples", "2560000",
        "--warmup", "500",
        "--dataset-type", "webdataset",
        "--precision", "amp",
        "--workers", "4",
        "--model", "ViT-B-32",
        "--batch-size", "4096",
        "--epochs", "5",
        "--lr", "0.0005",
        "--logs", "/out",
        "--name", "small_scale",
        "--seed", "0",
        "--accum-freq", "1",
        "--log-every-n-steps", "100",
        "--save-most-recent",
        "--resume", "latest",
        "--dataset-resampled",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("scale", "gpus", "accum", "batch"),
    [
        ("small", 1, 1, "4096"),
        ("small", 2, 1, "2048"),
        ("small", 2, 2, "1024"),
        ("small", 8, 1, "512"),
        ("debug", 1, 1, "1024"),
        ("medium", 4, 1, "1024"),
        ("large", 1, 1, "8192"),
        ("large", 8, 2, "512"),
        ("xlarge", 8, 1, "11264"),
        ("xlarge", 128, 1, "704"),
        ("xlarge", 3, 1, "30037"),  # 90112 // 3: integer division, as DataComp
    ],
)
def test_per_gpu_batch(scale: str, gpus: int, accum: int, batch: str) -> None:
    argv = _argv(scale, gpus=gpus, accum_freq=accum)
    assert _flag(argv, "--batch-size") == batch
    assert _flag(argv, "--accum-freq") == str(accum)


@pytest.mark.parametrize(
    ("scale", "checkpoints", "per_epoch"),
    [
        ("debug", 5, "25600"),
        ("small", 5, "2560000"),
        ("small", 8, "1600000"),
        ("medium", 5, "25600000"),
        ("large", 8, "160000000"),
        ("xlarge", 3, "4266666666"),
    ],
)
def test_samples_per_epoch_and_epochs(scale: str, checkpoints: int, per_epoch: str) -> None:
    argv = _argv(scale, num_checkpoints=checkpoints)
    assert _flag(argv, "--train-num-samples") == per_epoch
    assert _flag(argv, "--epochs") == str(checkpoints)


def test_xlarge_beta2_lr_warmup_and_bf16_default() -> None:
    argv = _argv("xlarge", gpus=8)
    assert argv[-2:] == ["--beta2", "0.95"]
    lr, warmup, model = (_flag(argv, f) for f in ("--lr", "--warmup", "--model"))
    assert (lr, warmup, model) == ("0.001", "10000", "ViT-L-14")
    assert _flag(argv, "--precision") == "amp_bfloat16"  # DataComp's slurm_train.sh advice
    assert _flag(_argv("xlarge", gpus=8, precision="amp"), "--precision") == "amp"  # chosen: passed as is
    for scale in ("debug", "small", "medium", "large"):
        assert "--beta2" not in _argv(scale)
    assert (_flag(_argv("debug"), "--lr"), _flag(_argv("large"), "--model")) == ("0.0001", "ViT-B-16")


def test_cpu_and_optional_flags() -> None:
    cpu = _argv("small", gpus=0)
    assert cpu[-2:] == ["--device", "cpu"] and _flag(cpu, "--precision") == "fp32"
    assert _flag(_argv("small", gpus=0, precision="amp_bf16"), "--precision") == "amp_bf16"
    argv = build_argv(
        TrainSettings(get_scale("small"), grad_clip_norm=1.0, imagenet_val="/in/val", log_every_n_steps=7),
        "/a/{0..1}.tar::/b/{0..3}.tar",
        "/out",
        "x",
        data_weights="1::2",
    )
    assert _flag(argv, "--train-data-upsampling-factors") == "1::2"
    assert _flag(argv, "--grad-clip-norm") == "1.0"
    assert _flag(argv, "--imagenet-val") == "/in/val"
    assert _flag(argv, "--log-every-n-steps") == "7"


@pytest.mark.parametrize("scale", ["debug", "small", "medium", "large", "xlarge", "tiny"])
def test_open_clip_3_3_accepts_every_flag_with_the_intended_values(scale: str) -> None:
    s = TrainSettings(get_scale(scale), gpus=2, accum_freq=2, seed=3, workers=6)
    args = parse_args(build_argv(s, "/d/{0..9}.tar", "/out", "n", data_weights="1"))
    spec = get_scale(scale)
    assert args.model == spec.model and args.lr == spec.learning_rate and args.warmup == spec.warmup
    assert args.batch_size * 2 * 2 == spec.batch_size - spec.batch_size % 4
    assert args.train_num_samples == spec.train_num_samples // 5 and args.epochs == 5
    assert args.beta2 == (spec.beta2 or 0.98)  # open_clip's ViT default when DataComp passes none
    assert args.wd == 0.2 and args.lr_scheduler == "cosine" and args.save_frequency == 0
    assert args.dataset_resampled and args.local_loss and args.gather_with_grad and args.grad_checkpointing
    assert args.ddp_static_graph and args.save_most_recent and args.resume == "latest"
    assert (args.seed, args.workers, args.accum_freq) == (3, 6, 2)
    assert args.train_data_upsampling_factors == "1" and args.dataset_type == "webdataset"


def test_schedule_follows_open_clips_rounding() -> None:
    # small, 1 GPU, 4 workers: ceil(2,560,000 / 4096) = 625 batches -> 628 (a multiple of 4)
    sched = TrainSettings(get_scale("small")).schedule()
    assert sched == {
        "epochs": 5,
        "batches_per_epoch": 628,
        "samples_per_epoch": 628 * 4096,
        "samples_seen": 5 * 628 * 4096,
        "optimizer_steps": 5 * 628,
    }
    # 2 GPUs, accum 2: micro-batches of 1024 per GPU -> 2048 per step of the loader; 1250 -> 1252
    sched = TrainSettings(get_scale("small"), gpus=2, accum_freq=2).schedule()
    assert (sched["batches_per_epoch"], sched["optimizer_steps"]) == (1252, 5 * 626)
    assert sched["samples_seen"] == 5 * 1252 * 2048


def test_settings_problems() -> None:
    with pytest.raises(CurateError) as exc:
        TrainSettings(get_scale("debug"), precision="fp8", gpus=2048, accum_freq=1).check()
    assert any("precision must be one of amp" in p for p in exc.value.problems)
    assert any("smaller than world size" in p for p in exc.value.problems)
