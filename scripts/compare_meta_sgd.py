"""Meta-SGD and first-order meta-gradients against the plain meta-learner (issue 17, levers 2 and 3).

    nice -n 10 python scripts/compare_meta_sgd.py --data-root ../shared/data --iters 300 --threads 1 \
        [--variants plain,meta_sgd,first_order]

Both runs train the photo recipe of ``train_long_base.py`` (6×128 SIREN, latent 64, batch 32, outer
lr 3e-4, 3 inner steps) from the same initial weights on the same batches — iteration i draws the
same patches in both — and record validation PSNR (3 and 10 inner steps) on the same held-out
training-photo tiles every ``--validate-every`` steps.  The only difference: with Meta-SGD every
latent dimension's inner learning rate is a weight the outer loop learns (starting at the plain
run's 1e-2); with first-order meta-gradients the latents are treated as constants in the outer
step (cheaper steps — their cost is timed side by side with second-order ones; thesis C.7 reports
worse results).
Writes ``benchmarks/results/coinpp-meta-sgd/results.json`` (variants run now replace their entries,
others are kept) and ``curve.png``.  Each run is resumable (``--iters`` may grow), so a longer
comparison continues the committed one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from metacompress.bench.coinpp_tasks import training_photos
from metacompress.codecs.coinpp_training import CURVE_STEPS, patch_sampler, prepare_training, train_base
from metacompress.inr.base_network import build_model
from metacompress.inr.metalearning import MetaConfig, meta_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_long_base import RECIPES, steps_done  # noqa: E402  (a sibling script, not a package)

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "coinpp-meta-sgd"
VARIANTS = {"plain": {}, "meta_sgd": {"meta_sgd": True}, "first_order": {"first_order": True}}


def run_variant(name: str, photos: list, args) -> dict:
    meta_sgd, first_order = VARIANTS[name].get("meta_sgd", False), VARIANTS[name].get("first_order", False)
    recipe = RECIPES["photos"]
    settings, train, val = prepare_training("image", photos, patch=(32, 32), width=recipe.width, depth=recipe.depth,
                                            latent_dim=recipe.latent_dim, w0=recipe.w0, seed=0, meta_sgd=meta_sgd)
    run_dir = args.out / f"{name}.run"
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = MetaConfig(iterations=args.iters, batch_size=recipe.batch_size, outer_lr=recipe.outer_lr,
                      checkpoint_every=args.validate_every, validate_every=args.validate_every,
                      first_order=first_order)
    started = time.perf_counter()
    base = train_base(settings, train, val, meta, run_dir, resume=steps_done(run_dir) > 0, device=args.device)
    rates = base.model.inner_learning_rates(meta.inner_lr)
    rates = rates.detach().tolist() if isinstance(rates, torch.Tensor) else [rates]
    return {"meta_sgd": meta_sgd, "first_order": first_order, "learning_curve": base.config.training["learning_curve"],
            "val_psnr_256_tiles": base.config.training["val_psnr"],
            "val_psnr_5bit_10_steps": base.config.training["val_psnr_5bit_10_steps"],
            "inner_lrs": {"min": min(rates), "median": sorted(rates)[len(rates) // 2], "max": max(rates)},
            "seconds_this_call": round(time.perf_counter() - started, 1)}


def time_outer_steps(photos: list, repeats: int = 5) -> dict:
    """Seconds per outer step (forward, inner loop, meta-gradient), second and first order, timed side
    by side on the same batch — so the ratio holds even on a busy machine."""
    recipe = RECIPES["photos"]
    settings, train, _ = prepare_training("image", photos, patch=(32, 32), width=recipe.width, depth=recipe.depth,
                                          latent_dim=recipe.latent_dim, w0=recipe.w0, seed=0)
    coords, features = patch_sampler(train, settings.data)(recipe.batch_size, torch.Generator().manual_seed(0))
    model = build_model(settings.config())
    seconds = {"second_order": [], "first_order": []}
    for _ in range(repeats):
        for mode in seconds:
            started = time.perf_counter()
            meta_loss(model, coords, features, 3, 1e-2, first_order=mode == "first_order").backward()
            seconds[mode].append(time.perf_counter() - started)
    return {mode: round(sorted(values)[len(values) // 2], 3) for mode, values in seconds.items()}


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (name, result), colour in zip(results["variants"].items(), ("tab:blue", "tab:orange", "tab:green")):
        curve = result["learning_curve"]
        for steps, style in zip(CURVE_STEPS, ("--", "-")):
            ax.plot([c["iteration"] for c in curve], [c[f"{steps}_steps"] for c in curve], style, color=colour,
                    marker="o", label=f"{name}, {steps} inner steps")
    ax.set_xlabel("outer steps")
    ax.set_ylabel("validation PSNR (dB), held-out training photos")
    ax.set_title("COIN++ photo base, 6×128, latent 64: meta-learner variants")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("METACOMPRESS_DATA"))
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--validate-every", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--variants", default="plain,meta_sgd", help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    chosen = args.variants.split(",")
    if not set(chosen) <= set(VARIANTS):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    if not args.data_root:
        parser.error("--data-root (or METACOMPRESS_DATA) is required")
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = training_photos(Path(args.data_root))
    path = args.out / "results.json"
    kept = json.loads(path.read_text())["variants"] if path.exists() else {}
    results = {"command": f"python scripts/compare_meta_sgd.py --data-root DATA --iters {args.iters} "
                          f"--validate-every {args.validate_every} --variants VARIANTS",
               "recipe": vars(RECIPES["photos"]), "device": args.device, "threads": torch.get_num_threads(),
               "outer_step_s": time_outer_steps(photos),
               "variants": kept | {name: run_variant(name, photos, args) for name in chosen}}
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "curve.png")
    print(json.dumps({name: v["learning_curve"][-1] for name, v in results["variants"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
