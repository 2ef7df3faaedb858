"""Seconds per MADM iteration and peak memory of the reference recipe, by training mode.

Runs the real iteration (``madm_train.training.trainer._Recipe.step``: student source and mixed
passes, DPLG teacher pass, LPLR encodes, backward, clip, AdamW) on synthetic street scenes, with
a Stable Diffusion v1.4-sized model of random weights (``--preset sd``: UNet 320/640/1280/1280 with
768-wide cross-attention, the SD VAE; nothing is downloaded) or the tiny preset. Each row is one
setting of full fine-tuning vs LoRA, fp32 vs bf16 autocast, gradient checkpointing on/off; the
reference recipe is full fine-tuning with batch 1 + 1 and 512² crops.

Goals (issue 5): the reference recipe on one GPU under 40 GB (the released code needs two
> 40 GB GPUs), LoRA under 24 GB. Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and
the process's peak resident set on the CPU.

    scripts/in-env python bench/madm_step.py                       # SD size on CUDA
    scripts/in-env python bench/madm_step.py --preset tiny --device cpu --crop 128 --iterations 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_random_sd(path: Path) -> Path:
    """An SD-1.4-architecture folder with random weights, in the format SDBackbone.from_pretrained reads."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from madm_train.models.sd_backbone import SDBackbone

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    SDBackbone(unet, vae, scheduler, torch.randn(1, 77, 768) * 0.1).save_pretrained(path)
    return path


def peak_memory_gb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB


def measure(args: argparse.Namespace, data: Path, sd_folder: Path | None, finetune: str, amp: str,
            checkpointing: bool) -> dict[str, object]:
    import torch

    from madm_train.config import load_config
    from madm_train.training.trainer import _Recipe

    overrides = [
        f"data.source_root={data}", f"data.target_root={data}", f"data.crop_hw=[{args.crop}, {args.crop}]",
        f"data.source_resize_hw=[{args.crop}, {2 * args.crop}]", f"data.target_resize_hw=[{args.crop}, {2 * args.crop}]",
        "data.batch_size=1", "data.synthetic_frames=0", "data.rare_class_min_pixels=100",
        f"model.preset={args.preset}", f"model.finetune={finetune}", f"model.gradient_checkpointing={str(checkpointing).lower()}",
        f"run.device={args.device}", f"run.amp={'false' if amp == 'fp32' else 'true'}",
        f"run.amp_dtype={'bfloat16' if amp == 'bf16' else 'float16'}", f"optim.max_iter={args.iterations + args.warmup}",
        f"run.out_dir={tempfile.mkdtemp(prefix='madm_step_')}",
    ]
    if sd_folder is not None:
        overrides.append(f"model.pretrained={sd_folder}")
    config = load_config(REPO / "config/train/synthetic_event_tiny.yaml", overrides)
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    recipe = _Recipe(config, Path(config.run.out_dir))
    trainable = sum(p.numel() for g in recipe.optimizer.param_groups for p in g["params"])
    for i in range(args.warmup):
        recipe.step(i)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.iterations):
        recipe.step(i)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.iterations
    row = {"finetune": finetune, "amp": amp, "checkpointing": checkpointing, "s_per_iter": round(seconds, 3),
           "peak_gb": round(peak_memory_gb(args.device), 2), "trainable_params_m": round(trainable / 1e6, 2)}
    del recipe
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("sd", "tiny"), default="sd")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--crop", type=int, default=512, help="square training crop (the reference: 512)")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per row")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--amp", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--finetune", nargs="+", default=["full", "lora"], choices=("full", "lora"))
    parser.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=("off", "on"))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "madm_step")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/madm_step_<preset>_<device>.json)")
    args = parser.parse_args(argv)

    import torch

    from madm_ros.synthetic import SynthConfig, generate

    data = args.work / f"synth_{args.crop}"
    if not (data / "meta.json").exists():
        generate(SynthConfig(frames=30, height=args.crop, width=2 * args.crop, seed=0, modalities=("rgb", "events")),
                 data, workers=2, progress=True)
    sd_folder = None
    if args.preset == "sd":
        sd_folder = args.work / "random_sd14"
        if not (sd_folder / "unet").exists():
            write_random_sd(sd_folder)
    rows = []
    for finetune, amp, checkpointing in itertools.product(args.finetune, args.amp, args.checkpointing):
        try:
            row = measure(args, data, sd_folder, finetune, amp, checkpointing == "on")
        except torch.OutOfMemoryError:
            row = {"finetune": finetune, "amp": amp, "checkpointing": checkpointing == "on", "s_per_iter": None,
                   "peak_gb": "out of memory", "trainable_params_m": None}
        rows.append(row)
        print(f"{finetune:5s} {amp:5s} ckpt={'on ' if row['checkpointing'] else 'off'} "
              f"{row['s_per_iter']} s/it  peak {row['peak_gb']} GB  trainable {row['trainable_params_m']} M", flush=True)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    report = {"preset": args.preset, "device": device_name, "crop": args.crop, "batch": "1 source + 1 target",
              "rows": rows, "torch": torch.__version__, "note": "peak_gb: CUDA max allocated, or CPU peak RSS of the process"}
    output = args.output or REPO / f"bench/results/madm_step_{args.preset}_{args.device.split(':')[0]}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
