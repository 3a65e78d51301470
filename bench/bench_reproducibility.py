"""What changes the bits of a trained model (issue 21, item 12): thread count, CPU kernels, BLAS code path.

Run: python bench/bench_reproducibility.py [--images N]

Each recipe (the study's MLP, the residual MLP, LeNet) is trained for one epoch on the first N MNIST
training images, and its weights are hashed (SHA-256 of every state tensor's bytes). Inside one process,
``settings.threads`` is 1 or 2, and the caller's own thread count is set to 2 before the threads=1 run, to
show it does not matter. Each process runs under one environment that selects other CPU kernels, as another
machine would use: ``ATEN_CPU_CAPABILITY`` (torch's vectorised kernels: avx512, avx2, default) and
``MKL_CBWR`` (MKL's code path, which otherwise depends on the CPU vendor and instruction set). The table
marks which runs give the same bits as the reference (no variable set, threads=1).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

ENVS = {
    "this machine's defaults": {},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "MKL_CBWR=AVX2,STRICT": {"MKL_CBWR": "AVX2,STRICT"},
}


def _child(images: int) -> None:
    """Train every (recipe, threads) here; print one JSON line per run."""
    import torch

    from hookedmlp import LeNetConfig, MLPConfig, ResidualConfig
    from hookedmlp.data import load_mnist
    from hookedmlp.train import TrainSettings, train_model

    x, y = load_mnist("train")
    tx, ty = load_mnist("test")
    data = (x[:images], y[:images], tx[:1000], ty[:1000])
    for name, recipe in (("mlp", MLPConfig()), ("residual", ResidualConfig()), ("lenet", LeNetConfig())):
        for threads in (1, 2):
            torch.set_num_threads(2)  # the caller's setting: train_model runs with settings.threads whatever it is
            result = train_model(recipe, TrainSettings(epochs=1, threads=threads), data=data, progress=False)
            digest = hashlib.sha256()
            for t in result.model.state_dict().values():
                digest.update(t.detach().contiguous().numpy().tobytes())
            print(
                json.dumps(
                    {
                        "recipe": name,
                        "threads": threads,
                        "sha": digest.hexdigest()[:12],
                        "loss": result.test_loss,
                        "cpu": torch.backends.cpu.get_cpu_capability(),
                    }
                ),
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.images)
        return
    runs = {}
    for label, extra in ENVS.items():
        env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--images", str(args.images)],
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        runs[label] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    reference = {(r["recipe"]): r["sha"] for r in runs["this machine's defaults"] if r["threads"] == 1}
    print(f"one epoch on {args.images} MNIST images; '=' marks the weights of the reference (defaults, threads=1)\n")
    print(f"| environment | kernels | {' | '.join(f'{r} t={t}' for r in reference for t in (1, 2))} |")
    print(f"|---|---|{'---|' * 2 * len(reference)}")
    for label, rows in runs.items():
        cells = [("= " if r["sha"] == reference[r["recipe"]] else "") + r["sha"] for r in rows]
        print(f"| {label} | {rows[0]['cpu']} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
