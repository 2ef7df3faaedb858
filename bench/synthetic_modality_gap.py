"""Does the synthetic data have a real modality gap? Train on RGB, score every modality.

The data issue asks that the synthetic modalities differ the way real sensors do: a segmenter
trained on labelled RGB should do clearly worse on depth, thermal and event frames of the same
scenes. This script generates a training and a held-out set with different seeds, trains a small
CNN (a stand-in for any RGB-trained source model; no adaptation) on RGB only, and reports the
held-out mIoU of that one model on each modality, read through the same ``FolderDataset`` /
``preprocess()`` path as everything else. As a ceiling it also trains the same CNN on each target
modality's own labels ("oracle") — the gap adaptation tries to close — and, as a floor, the
layout-only baseline (``madm_train.training.layout_baseline``): the training labels' most frequent
class at each pixel, predicted for every image (one number: the modalities share their labels).

    scripts/in-env python bench/synthetic_modality_gap.py            # prints a table, writes JSON
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.machine import LoadWatch, machine_info
from madm_ros.preprocessing import MODALITIES

REPO = Path(__file__).resolve().parents[1]


def make_net(num_classes: int):
    """A small fully convolutional encoder-decoder (~0.3 M parameters)."""
    from torch import nn

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(block(3, 24, 2), block(24, 24))
            self.mid = nn.Sequential(block(24, 48, 2), block(48, 48), block(48, 96, 2), block(96, 96, dilation=2),
                                     block(96, 96, dilation=4))
            self.fuse = block(96 + 24, 64)
            self.head = nn.Conv2d(64, num_classes, 1)

        def forward(self, x):
            import torch
            import torch.nn.functional as F

            low = self.stem(x)
            deep = F.interpolate(self.mid(low), size=low.shape[-2:], mode="bilinear", align_corners=False)
            out = self.head(self.fuse(torch.cat([deep, low], 1)))
            return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)

    return Net()


def load_arrays(folder: Path, modality: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    from madm_ros.preprocessing import InputSpec
    from madm_train.data.datasets import FolderDataset

    data = FolderDataset(folder, InputSpec(modality, height=height, width=width))
    samples = [data[i] for i in range(len(data))]
    return np.stack([s.image for s in samples]), np.stack([s.label for s in samples])


def train(images: np.ndarray, labels: np.ndarray, *, steps: int, seed: int, num_classes: int):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net = make_net(num_classes)
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    rng = np.random.default_rng(seed)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    net.train()
    for _ in range(steps):
        index = torch.from_numpy(rng.choice(len(images), size=8, replace=False))
        x, y = x_all[index], y_all[index]
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = F.cross_entropy(net(x), y, ignore_index=255)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return net.eval()


def score(net, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, object]:
    import torch

    from madm_ros.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(len(class_names))
    with torch.no_grad():
        for start in range(0, len(images), 16):
            prediction = net(torch.from_numpy(images[start : start + 16])).argmax(1).numpy().astype(np.uint8)
            matrix.update(prediction, labels[start : start + 16])
    return matrix.as_dict(class_names)


def score_ids(predictions: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, object]:
    """Dataset-level metrics of class-id predictions (255 = none) against labels of the same shape."""
    from madm_ros.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(len(class_names))
    matrix.update(predictions, labels)
    return matrix.as_dict(class_names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/madm_modality_gap"), help="data folder (regenerated if absent)")
    parser.add_argument("--train-frames", type=int, default=160)
    parser.add_argument("--test-frames", type=int, default=60)
    parser.add_argument("--size", default="128x256", help="HEIGHTxWIDTH of generated frames and network input")
    parser.add_argument("--steps", type=int, default=600, help="training steps per model (batch 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=REPO / "bench/results/synthetic_modality_gap.json")
    args = parser.parse_args(argv)

    import torch

    from madm_ros.palettes import DSEC_11
    from madm_ros.synthetic import SynthConfig, generate
    from madm_train.training.layout_baseline import LayoutBaseline

    torch.set_num_threads(2)
    watch = LoadWatch()
    height, width = (int(v) for v in args.size.split("x"))
    folders = {}
    started = time.perf_counter()
    for split, frames, seed in (("train", args.train_frames, args.seed + 1), ("test", args.test_frames, args.seed + 2)):
        folders[split] = args.work / f"{split}_{frames}_{height}x{width}_s{seed}"
        if not (folders[split] / "meta.json").exists():
            generate(SynthConfig(frames=frames, height=height, width=width, seed=seed), folders[split], workers=2,
                     progress=True)
    generation_s = time.perf_counter() - started

    data = {split: {m: load_arrays(folder, m, height, width) for m in MODALITIES} for split, folder in folders.items()}
    results: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    rgb_model = train(*data["train"]["rgb"], steps=args.steps, seed=args.seed, num_classes=DSEC_11.num_classes)
    for modality in MODALITIES:
        source = score(rgb_model, *data["test"][modality], DSEC_11.class_names)
        oracle_model = rgb_model if modality == "rgb" else train(
            *data["train"][modality], steps=args.steps, seed=args.seed, num_classes=DSEC_11.num_classes)
        oracle = score(oracle_model, *data["test"][modality], DSEC_11.class_names)
        results[modality] = {"rgb_trained_miou": source["miou"], "oracle_miou": oracle["miou"],
                             "rgb_trained_per_class": source["per_class_iou"]}
        print(f"{modality:8s} RGB-trained mIoU {100 * source['miou']:5.1f}   trained on {modality} {100 * oracle['miou']:5.1f}",
              flush=True)
    training_s = time.perf_counter() - started
    layout = LayoutBaseline.fit(data["train"]["rgb"][1], (height, width), DSEC_11.num_classes)
    test_labels = data["test"]["rgb"][1]
    layout_only = score_ids(np.broadcast_to(layout.class_map, test_labels.shape), test_labels, DSEC_11.class_names)

    print("\n| test modality | RGB-trained model mIoU (%) | same model trained on the modality (%) |")
    print("| --- | ---: | ---: |")
    for modality, row in results.items():
        print(f"| {modality} | {100 * row['rgb_trained_miou']:.1f} | {100 * row['oracle_miou']:.1f} |")
    print(f"\nLayout only (no image; every modality): {100 * layout_only['miou']:.1f} % mIoU")
    report = {
        "command": "scripts/in-env python bench/synthetic_modality_gap.py",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results,
        "layout_only_miou": layout_only["miou"],
        "layout_only_per_class": layout_only["per_class_iou"],
        "generation_s": round(generation_s, 1),
        "training_s": round(training_s, 1),
        "machine": machine_info(("torch",), watch, torch_threads=torch.get_num_threads()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
