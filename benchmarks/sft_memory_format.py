"""StableSR's 22 SFT layers at SD 2.1 size (128→512: latent 64×64) with the time-aware encoder's features
in channels-last strides (as diffusers' attention hands them over) against the same features in the
convs' weights' format (what ``SFTUNet.attached`` now passes). Process CPU time per pass of all 22
layers (steadier than wall time on a shared machine), and the max output difference.

    .venv/bin/python benchmarks/sft_memory_format.py --threads 1 --repeats 5

Random weights: the time is the real layer sizes', the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # methods when run from anywhere

from methods.stablesr.sft import SFTLayer

#: (channels, latent side) of SD 2.1's 22 ResBlocks in execution order (down 2×4, mid 2, up 3×4)
LEVELS = [(320, 64)] * 2 + [(640, 32)] * 2 + [(1280, 16)] * 2 + [(1280, 8)] * 2 + [(1280, 8)] * 2
LEVELS += [(1280, 8)] * 3 + [(1280, 16)] * 3 + [(640, 32)] * 3 + [(320, 64)] * 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = [SFTLayer(c).eval() for c, _ in LEVELS]
    hs = [torch.randn(1, c, s, s) for c, s in LEVELS]
    feats = {s: torch.randn(1, 256, s, s).contiguous(memory_format=torch.channels_last) for _, s in LEVELS}
    cases = {
        "channels-last features (before)": feats,
        "features in the weights' format (after)": {s: f.contiguous() for s, f in feats.items()},
    }
    outs = {}
    with torch.no_grad():
        for name, fs in cases.items():
            outs[name] = [layer(h, fs[h.shape[-1]]) for layer, h in zip(layers, hs, strict=True)]  # warm-up
            cpu = []
            for _ in range(args.repeats):
                t = time.process_time()
                for layer, h in zip(layers, hs, strict=True):
                    layer(h, fs[h.shape[-1]])
                cpu.append(time.process_time() - t)
            print(f"{name:42s} CPU {statistics.median(cpu):.3f} s median of {args.repeats}", flush=True)
    a, b = outs.values()
    diff = max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))
    print(f"max |Δ| {diff:.2e}; {args.threads} thread(s), load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
