"""Seconds per training iteration and peak memory, by method, fine-tuning mode or stage, precision, checkpointing and crop.

Times the trainer's own iteration (``madm_train.training.trainer.Trainer.iteration``: batch draws,
the method's step — for MADM the student source and mixed passes, the DPLG teacher pass and the
LPLR encodes; for DIFF the trajectory of the unconditional and conditional source branches, the
teacher's and the mixed target pass; for ICCLD stage 1 the source pass of E and D, the target's
pseudo-label pass and the ClassMix pass; for ICCLD stage 2 one pass of source and target through
E, ε_θ (one step at a random t) and D, the frozen stage-1 pseudo-label pass D(E(target)), the
discriminator's own Adam step and the adversarial pass — backward, clipping, AdamW, the EMA update)
on synthetic street scenes, with models of random weights built from the package's bundled SD
configs (``--preset sd``: MADM and ICCLD on SD v1.4's architecture, UNet 859.5 M, VAE 83.7 M;
DIFF on SD 2.1's, UNet 865.9 M, as released; nothing is downloaded) or the tiny preset. DIFF's
class-prompt embeddings come from a prompt cache written into the run folder (random, for the
random model), which is the path a real run takes after its first start, so no text encoder is
needed. ICCLD stage 2 starts, as a real run does, from a saved stage-1 model
(``method.model.init_weights``): the row builds one from the same random SD's VAE (E, D with its
inter-coder projections and class layer; not trained: the step's cost does not depend on the
weights) and saves it into its run folder before the trainer starts.

Every row runs in its own process, so its peak memory is its own: ``ru_maxrss`` of that process on
the CPU, ``torch.cuda.max_memory_allocated`` on a GPU. A row that cannot run says why (fp16 on a
CPU, out of memory, killed). Finished rows are kept in the output JSON and skipped when the script
runs again (``--force`` re-measures), so a long CPU benchmark can span several sittings.

    scripts/in-env python bench/madm_step.py --preset sd --device cpu           # the issue's CPU rows, bf16
    scripts/in-env python bench/madm_step.py --preset sd --device cuda --rows madm:full:fp32:off:512 madm:lora:bf16:on:512
    scripts/in-env python bench/madm_step.py --preset tiny --device cpu --rows madm:full:fp32:off:128 --iterations 3
    scripts/in-env python bench/madm_step.py --preset sd --device cpu --rows diff:frozen:bf16:off:256:5
    scripts/in-env python bench/madm_step.py --preset tiny --device cpu --rows iccld:1:fp32:off:128 iccld:2:fp32:off:128

A row is one of (amp ``fp32``, ``bf16`` or ``fp16``; checkpointing ``on``/``off``; CROP a multiple of 64):

- MADM ``madm:full|lora:amp:checkpointing:crop``;
- DIFF ``diff:frozen|lora:amp:off:crop:steps`` (the trajectory preset: 1, 5 or 37);
- ICCLD ``iccld:stage:amp:checkpointing:crop`` with stage ``1`` (E and D trained; checkpointing
  ``off``) or ``2`` (ε_θ trained, E and D frozen; checkpointing is ``method.model.gradient_checkpointing``,
  the UNet's). ``trainable_params`` counts the parameters of the main optimiser; stage 2's
  discriminator, with its own Adam, is counted apart as ``adversary_params``.

Goals (issue 15): full fine-tuning < 40 GB and LoRA < 24 GB on one GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import LoadWatch, cpu_model, machine_info

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROWS = {
    "cpu": ["madm:lora:bf16:on:256", "madm:lora:bf16:on:512", "madm:full:bf16:off:256",
            "diff:frozen:bf16:off:256:1", "diff:frozen:bf16:off:256:5", "iccld:1:bf16:off:256", "iccld:2:bf16:off:256"],
    "cuda": [f"madm:{f}:{a}:{c}:512" for f in ("full", "lora") for a in ("fp32", "bf16", "fp16") for c in ("off", "on")]
    + [f"diff:{f}:bf16:off:512:{s}" for f in ("frozen", "lora") for s in (5, 37)]
    + [f"iccld:1:{a}:off:512" for a in ("fp32", "bf16")]
    + [f"iccld:2:{a}:{c}:512" for a in ("fp32", "bf16") for c in ("off", "on")],
}
FIELDS = ("method", "finetune", "stage", "amp", "checkpointing", "crop", "steps")
"""What identifies a row in the output JSON (a row lacks the ones its method does not have)."""
SD_VERSION = {"madm": "v1", "diff": "v2", "iccld": "v1"}
"""The SD architecture each method is measured on: the released one (MADM: SD 1.4, DIFF: SD 2.1); ICCLD's paper does
not name its SD, so the package's default, SD 1.x (ε-prediction, as MADM)."""
SECOND_FIELD = {"madm": ("full", "lora"), "diff": ("frozen", "lora"), "iccld": ("1", "2")}
"""Each method's second row field: the fine-tuning mode, ICCLD's stage."""
ROW_SYNTAX = ("madm:full|lora:fp32|bf16|fp16:on|off:CROP, diff:frozen|lora:fp32|bf16|fp16:off:CROP:1|5|37 or "
              "iccld:1|2:fp32|bf16|fp16:on|off:CROP (stage 1: off); CROP a multiple of 64")


def parse_row(text: str) -> dict[str, object]:
    parts = text.split(":")
    method = parts[0]
    valid = method in SECOND_FIELD and len(parts) == (6 if method == "diff" else 5) and \
        parts[1] in SECOND_FIELD[method] and parts[2] in ("fp32", "bf16", "fp16") and parts[3] in ("on", "off") and \
        parts[4].isdigit() and int(parts[4]) > 0 and int(parts[4]) % 64 == 0
    if valid and method == "diff":
        valid = parts[3] == "off" and parts[5] in ("1", "5", "37")
    if valid and method == "iccld":
        valid = parts[1] == "2" or parts[3] == "off"  # stage 1 trains the VAE's E and D: no checkpointing there
    if not valid:
        raise SystemExit(f"bad row {text!r}: expected {ROW_SYNTAX}")
    second = {"stage": int(parts[1])} if method == "iccld" else {"finetune": parts[1]}
    return {"method": method, **second, "amp": parts[2], "checkpointing": parts[3] == "on", "crop": int(parts[4]),
            **({"steps": int(parts[5])} if method == "diff" else {})}


def row_spec(row: dict[str, object]) -> str:
    """The command-line form of ``row`` (inverse of :func:`parse_row`)."""
    second = row["stage"] if row["method"] == "iccld" else row["finetune"]
    spec = f"{row['method']}:{second}:{row['amp']}:{'on' if row['checkpointing'] else 'off'}:{row['crop']}"
    return spec + (f":{row['steps']}" if "steps" in row else "")


def write_random_sd(path: Path, version: str) -> Path:
    """An SD folder of the bundled ``version`` configs with random weights, as ``load_stable_diffusion`` reads it."""
    import torch

    from madm_train.models.sd_backbone import SDBackbone
    from madm_train.models.stable_diffusion import build_sd_modules, bundled_config_dir

    torch.manual_seed(0)
    modules = build_sd_modules(bundled_config_dir(version))
    width = modules.unet.config.cross_attention_dim
    SDBackbone(modules.unet, modules.vae, modules.scheduler, torch.randn(1, 77, width) * 0.1).save_pretrained(path)
    return path


def write_prompt_cache(run_dir: Path, sd_folder: Path, label_set: str) -> None:
    """Random class-prompt embeddings for the released prompt set, cached where a DIFF run looks first."""
    import torch

    from madm_train.methods.diff.network import PROMPT_CACHE
    from madm_train.methods.diff.prompts import PromptEmbeddings, class_prompts
    from madm_train.models.stable_diffusion import load_stable_diffusion

    prompts = class_prompts(label_set)
    empty = load_stable_diffusion(sd_folder).empty_prompt
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn((len(prompts), *empty.shape[1:]), generator=generator) * 0.1
    PromptEmbeddings(tuple(prompts), tuple(prompts.values()), embeddings, empty).save(run_dir / PROMPT_CACHE)


def write_iccld_stage1(path: Path, sd_folder: Path, config: Any) -> Path:
    """A stage-1 ICCLD model of ``sd_folder``'s VAE, saved where stage 2's ``method.model.init_weights`` reads it.

    E, D (with the inter-coder projections and the class layer of ``config``'s label set) as stage 1
    saves its ``model/``, built rather than trained: a stage-2 step costs the same whatever E and D
    learned. Only the VAE is read, so building it adds little to the row's peak memory.
    """
    import torch
    from diffusers import AutoencoderKL

    from madm_ros.palettes import get_label_set
    from madm_train.methods.iccld.model import IccldModel

    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(sd_folder, subfolder="vae", local_files_only=True)
    model = IccldModel(vae, get_label_set(config.data.label_set).num_classes, inter_coder=config.method.model.inter_coder)
    return model.save(path)


def peak_memory_gb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB; this process = this row only


def measure(row: dict[str, object], args: argparse.Namespace, data: Path, sd_folder: Path | None) -> dict[str, object]:
    """One row in this process: build the trainer, run warm-up iterations, time the next ones."""
    import torch

    from madm_train.config import load_config
    from madm_train.training.trainer import Trainer

    crop, amp = row["crop"], row["amp"]
    run_dir = Path(tempfile.mkdtemp(prefix="madm_step_"))
    overrides = [
        f"data.source_root={data}", f"data.target_root={data}", f"data.crop_hw=[{crop}, {crop}]",
        f"data.source_resize_hw=[{crop}, {2 * crop}]", f"data.target_resize_hw=[{crop}, {2 * crop}]",
        "data.batch_size=1", "data.synthetic_frames=0", "data.rare_class_min_pixels=100",
        f"method.model.preset={args.preset}", "method.model.input_size=null",
        f"run.device={args.device}", f"run.amp={'false' if amp == 'fp32' else 'true'}",
        f"run.amp_dtype={'bfloat16' if amp == 'bf16' else 'float16'}",
        f"optim.max_iter={args.iterations + args.warmup}", f"run.out_dir={run_dir}",
    ]
    if row["method"] != "iccld":
        overrides.append(f"method.model.finetune={row['finetune']}")
    if row["method"] == "diff":
        overrides.append(f"method.model.steps={row['steps']}")
    else:  # MADM's UNet; ICCLD: ε_θ's in stage 2 (stage 1 rows are always off)
        overrides.append(f"method.model.gradient_checkpointing={str(row['checkpointing']).lower()}")
    stage1 = run_dir / "stage1_model"
    if row["method"] == "iccld":
        overrides.append(f"method.stage={row['stage']}")
        if row["stage"] == 2:
            overrides.append(f"method.model.init_weights={stage1}")
    if sd_folder is not None:
        overrides.append(f"method.model.pretrained={sd_folder}")
    name = "synthetic_event_tiny.yaml" if row["method"] == "madm" else f"synthetic_event_{row['method']}_tiny.yaml"
    config = load_config(REPO / "config/train" / name, overrides)  # the method's own tiny YAML, resized here
    if row["method"] == "diff" and sd_folder is not None:
        write_prompt_cache(run_dir, sd_folder, config.data.label_set)
    if row["method"] == "iccld" and row["stage"] == 2:
        if sd_folder is None:  # tiny preset: the random tiny SD the trainer itself writes (and then reuses) here
            from madm_train.models.tiny_sd import build_tiny_sd

            sd_folder = build_tiny_sd(run_dir / "tiny_sd", seed=config.run.seed)
        write_iccld_stage1(stage1, sd_folder, config)
    trainer = Trainer(config, progress=False)
    shutil.rmtree(stage1, ignore_errors=True)  # read in full by now; at SD size it is 0.3 GB of a temporary folder
    trainable = sum(p.numel() for p in trainer.trainable)
    adversary = {} if trainer.adversary is None else \
        {"adversary_params": sum(p.numel() for p in trainer.adversary.parameters() if p.requires_grad)}
    for i in range(args.warmup):
        trainer.iteration(i)
    if args.device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.iterations):
        trainer.iteration(i)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.iterations
    return {**row, "seconds_per_iteration": round(seconds, 3), f"peak_{'gpu' if args.device == 'cuda' else 'rss'}_gb":
            round(peak_memory_gb(args.device), 2), "trainable_params": trainable, **adversary}


def run_row(row: dict[str, object], args: argparse.Namespace) -> dict[str, object]:
    """Measure ``row`` in a child process; a row that cannot run gets ``reason`` instead of figures."""
    if row["amp"] == "fp16" and args.device == "cpu":
        return {**row, "seconds_per_iteration": None, "reason": "fp16 autocast with loss scaling needs CUDA"}
    command = [sys.executable, __file__, "--child", row_spec(row), "--preset", args.preset, "--device", args.device,
               "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--work", str(args.work)]
    result = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode == 0 and lines:
        return json.loads(lines[-1])
    reason = "killed by a signal (out of memory?)" if result.returncode < 0 else result.stderr.strip().splitlines()[-1:]
    return {**row, "seconds_per_iteration": None, "reason": reason if isinstance(reason, str) else " ".join(reason)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("sd", "tiny"), default="sd")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--rows", nargs="+", default=None,
                        help=f"rows: {ROW_SYNTAX} (default, per device: {' '.join(DEFAULT_ROWS['cpu'])} on the CPU; "
                             "on CUDA, at 512: MADM full|lora × fp32|bf16|fp16 × on|off, DIFF frozen|lora bf16 at 5 and "
                             "37 steps, ICCLD stage 1 fp32|bf16, stage 2 fp32|bf16 × on|off)")
    parser.add_argument("--iterations", type=int, default=1, help="timed iterations per row (default 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default 1)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "madm_step",
                        help="folder for the synthetic data and the random SD folder (reused)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default bench/results/madm_step_<preset>_<device>.json)")
    parser.add_argument("--force", action="store_true", help="re-measure rows the output file already holds")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from madm_ros.synthetic import SynthConfig, generate

    rows = [parse_row(r) for r in ([args.child] if args.child else args.rows or DEFAULT_ROWS[args.device])]
    folders = {"v1": args.work / "random_sd14", "v2": args.work / "random_sd21"}
    if args.child:
        data = args.work / f"synth_{rows[0]['crop']}"
        sd_folder = folders[SD_VERSION[str(rows[0]["method"])]] if args.preset == "sd" else None
        print(json.dumps(measure(rows[0], args, data, sd_folder)))
        return 0
    for crop in sorted({int(r["crop"]) for r in rows}):
        data = args.work / f"synth_{crop}"
        if not (data / "meta.json").exists():  # 3 sequences of 2 frames: source, target and test scenes
            generate(SynthConfig(frames=6, frames_per_sequence=2, height=crop, width=2 * crop, seed=0,
                                 modalities=("rgb", "events")), data, workers=1, progress=False)
    for version in sorted({SD_VERSION[str(r["method"])] for r in rows} if args.preset == "sd" else ()):
        if not (folders[version] / "unet").exists():
            write_random_sd(folders[version], version)
    output = args.output or REPO / f"bench/results/madm_step_{args.preset}_{args.device}.json"
    report = json.loads(output.read_text()) if output.exists() and not args.force else {"rows": []}
    report["rows"] = [r for r in report.get("rows", []) if "method" in r]  # rows of older layouts are dropped
    done = {tuple(r.get(k) for k in FIELDS): r for r in report["rows"] if r.get("seconds_per_iteration") is not None}
    watch = LoadWatch()  # the machine record describes this sitting (rows kept from an earlier one keep their figures)
    for row in rows:
        key = tuple(row.get(k) for k in FIELDS)
        if key in done:
            print(f"{key}: kept from {output.name}", flush=True)
            continue
        measured = run_row(row, args)
        import torch

        device = torch.cuda.get_device_name() if args.device == "cuda" else cpu_model()
        machine = machine_info(("torch", "diffusers"), watch)
        # Rows kept from other sittings may come from another CPU model or a busier machine: each row says its own.
        measured.update({"device": device, "contended": machine["load"]["contended"]})
        report["rows"] = [r for r in report["rows"] if tuple(r.get(k) for k in FIELDS) != key] + [measured]
        print(json.dumps(measured), flush=True)
        for moved in ("cpus", "torch"):  # older layouts kept these beside the rows; they are under machine now
            report.pop(moved, None)
        report.update({"preset": args.preset, "device": device, "machine": machine,
                       "batch": "1 source + 1 target", "iterations": args.iterations, "warmup": args.warmup,
                       "note": "each row in its own process; peak_rss_gb: that process's peak resident set (CPU), "
                               "peak_gpu_gb: torch.cuda.max_memory_allocated (CUDA); random weights; machine: the "
                               "latest sitting; a row's device and contended: the sitting that measured it"})
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1) + "\n")  # after every row: a stopped run keeps what it measured
    print(f"{'method':8s} {'finetune':8s} {'amp':5s} {'ckpt':4s} {'crop':5s} {'steps':5s} {'s/it':>9s} {'peak GB':>8s}  "
          "trainable")
    for r in report["rows"]:
        peak = r.get("peak_rss_gb", r.get("peak_gpu_gb"))
        second = f"stage {r['stage']}" if "stage" in r else r["finetune"]  # ICCLD's rows name their stage
        trainable = r.get("trainable_params") or r.get("reason")
        if r.get("adversary_params"):
            trainable = f"{trainable} (+ {r['adversary_params']} discriminator, own Adam)"
        print(f"{r['method']:8s} {second:8s} {r['amp']:5s} {'on' if r['checkpointing'] else 'off':4s} "
              f"{r['crop']:<5d} {r.get('steps', ''):<5} {r['seconds_per_iteration'] or '-':>9} {peak or '-':>8}  "
              f"{trainable}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
