"""``metacompress encode|decode|train-base``: neural codecs for single datapoints (COIN, COIN++)."""

import math
import time
from pathlib import Path

from metacompress.cli.common import (Command, add_device, add_json, check_finite, check_positive, load_base_argument,
                                     parse_ints, parse_region, print_table, progress)
from metacompress.errors import UserError


def add_encode_arguments(p):
    p.add_argument("input", help="the datapoint: an 8-bit image; with --base for other data, a WAV/FLAC, NIfTI/TIFF "
                                 "volume or netCDF/.npy globe")
    p.add_argument("-o", "--output", help="the .mcz file to write (default: INPUT with suffix .mcz)")
    p.add_argument("--codec", choices=("coinpp", "coin"), default="coinpp",
                   help="coinpp: fit latents of a meta-learned base network (fast); coin: overfit a SIREN (slow)")
    p.add_argument("--base", help="coinpp: base network (BASE.safetensors + BASE.json; default: the bundled photo base)")
    p.add_argument("--bits", type=int, help="coinpp: latent bits (3–8, default 5); coin: 16 = fp16 weights, 2–15 uniform")
    p.add_argument("--steps", type=int, default=10, help="coinpp: inner-loop steps fitting the latents (thesis: 3–10)")
    p.add_argument("--effort", type=int,
                   help="coinpp: Adam steps refining the latents for the quantizer after the inner-loop steps "
                        "(more: slower encoding, higher PSNR at the same size; 0: none)")
    p.add_argument("--no-entropy", action="store_true", help="coinpp: store fixed-width symbols, no entropy coding")
    p.add_argument("--time", type=int, help="coinpp, globes: the time step of a multi-step netCDF file")
    p.add_argument("--resample", action="store_true",
                   help="coinpp, audio: resample a file of another rate to the base network's (else it is refused; "
                        "the decoded file has the network's rate)")
    p.add_argument("--downmix", action="store_true",
                   help="coinpp, audio: mix several channels down to mono (else they are refused; the decoded file "
                        "is mono)")
    p.add_argument("--bpp", type=float, help="target bits per pixel (per sample), header included: coin picks the "
                   "network (default 0.3); coinpp picks the most latent bits that fit (instead of --bits)")
    p.add_argument("--iters", type=int, default=50_000, help="coin: Adam iterations (thesis: 50k)")
    p.add_argument("--lr", type=float, default=2e-4, help="coin: Adam learning rate")
    p.add_argument("--patience", type=int, help="coin: stop early after this many iterations without a new best PSNR")
    p.add_argument("--depth", type=int, help="coin: sine layers (with --width: overrides the architecture --bpp picks)")
    p.add_argument("--width", type=int, help="coin: units per sine layer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    add_json(p)


def add_decode_arguments(p):
    p.add_argument("input", help="the .mcz file")
    p.add_argument("-o", "--output", required=True,
                   help="file to write: .png/.tif (images), .wav/.flac (audio), .nii/.nii.gz (volumes), .npy/.nc (globes)")
    p.add_argument("--base", help="COIN++ files: the base network they were encoded with (default: the bundled one)")
    p.add_argument("--scale", type=float, default=1.0, help="COIN images: decode at this multiple of the stored resolution")
    p.add_argument("--region", help="COIN images: x0,y0,x1,y1: decode only this rectangle of the (scaled) output")
    p.add_argument("--max-samples", type=int,
                   help="refuse outputs of more pixels/samples than this (default 2^26, a decompression-bomb guard; "
                        "0: no cap)")
    p.add_argument("--max-work", type=float,
                   help="COIN files: refuse decodes of more multiply-accumulates than this (default 2^24 per byte "
                        "of the file, a decompression-bomb guard; 0: no cap)")
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    p.add_argument("--device", default="cpu",
                   help="where to render: cpu (default: the decode that matches the encoder's reconstruction "
                        "exactly), cuda or cuda:N")
    add_json(p)


def add_train_base_arguments(p):
    p.add_argument("--modality", required=True, choices=("image", "audio", "volume", "sphere"))
    p.add_argument("--data", required=True, help="training data: a folder (searched recursively) or one file")
    p.add_argument("--out", required=True, help="base network stem: writes OUT.safetensors + OUT.json")
    p.add_argument("--patch", help="patch shape, comma-separated (defaults: image 32,32; audio 800; volume 16,16,16; "
                                   "sphere: the whole globe)")
    p.add_argument("--width", type=int, default=512, help="units per sine layer (thesis C.3: 512)")
    p.add_argument("--depth", type=int, default=10, help="sine layers (thesis C.3: 10)")
    p.add_argument("--latent-dim", type=int, default=128, help="latent size per patch: sets the rate")
    p.add_argument("--w0", type=float, default=50.0, help="SIREN frequency ω₀ (thesis C.3: 50)")
    p.add_argument("--iters", type=int, default=1000, help="outer-loop iterations")
    p.add_argument("--batch-size", type=int, default=64, help="patches per outer step (split over torchrun processes)")
    p.add_argument("--inner-steps", type=int, default=3)
    p.add_argument("--inner-lr", type=float, default=1e-2)
    p.add_argument("--outer-lr", type=float, default=3e-6, help="Adam learning rate (thesis: 3e-6 CIFAR-10, 1e-6 others)")
    p.add_argument("--first-order", action="store_true", help="first-order meta-gradients (thesis C.7: worse)")
    p.add_argument("--meta-sgd", action="store_true",
                   help="learn one inner learning rate per latent dimension (Meta-SGD, as Functa)")
    p.add_argument("--checkpoint-steps", action="store_true", help="recompute inner steps on backward: less memory")
    p.add_argument("--variables", help="sphere: comma-separated netCDF variables (default: all on the main grid)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of datapoints held out for validation PSNR")
    p.add_argument("--validate-every", type=int, default=0,
                   help="record validation PSNR (3 and 10 inner steps) every N outer steps: the learning curve")
    p.add_argument("--resume", action="store_true", help="continue from OUT.run/meta_checkpoint (same result as "
                   "one uninterrupted run; --iters may grow, and --iters ≤ the steps done finishes the base now)")
    p.add_argument("--force", action="store_true", help="overwrite an existing base network at OUT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_device(p)
    add_json(p)


def command_encode(args) -> dict:
    from metacompress.checkpoint import atomic_write_bytes
    from metacompress.distributed import resolve_device
    from metacompress.output_paths import check_output_file

    encode = encode_coin if args.codec == "coin" else encode_coinpp
    device = resolve_device(args.device)
    output = check_output_file(args.output or Path(args.input).with_suffix(".mcz"), [args.input], args.force)
    started = time.perf_counter()
    encoded, summary = encode(args, device)
    summary["encode_time_s"] = round(time.perf_counter() - started, 3)
    atomic_write_bytes(output, encoded.data)
    summary = {"command": "encode", "codec": args.codec, "input": str(args.input), "output": str(output),
               "device": str(device)} | summary
    print_table(summary)
    return summary


def encode_coinpp(args, device):
    import numpy as np

    from metacompress.codecs.coinpp import DEFAULT_BITS, DEFAULT_EFFORT, CoinPP
    from metacompress.modalities.files import read_datapoint_converting
    from metacompress.modalities.patches import tile_grid

    base, base_name = load_base_argument(args.base, device)
    point, converted = read_datapoint_converting(args.input, base.config.data, args.time, resample=args.resample,
                                                 downmix=args.downmix)
    if args.bpp is not None and args.bits is not None:
        raise UserError("--bpp picks the latent bits for a COIN++ file: give --bpp or --bits, not both")
    bits = DEFAULT_BITS if args.bits is None else args.bits
    effort = DEFAULT_EFFORT if args.effort is None else args.effort
    tiles = math.prod(tile_grid(point.values.shape, base.config.patch))
    with progress(args, tiles * (2 if effort and args.bpp is None else 1), "encoding", "patch") as shown:
        codec = CoinPP(base, bits=bits, steps=args.steps, entropy=not args.no_entropy, effort=effort,
                       progress=lambda done, total: shown.update(done - shown.done), bits_per_sample=args.bpp)
        encoded = codec.compress(point)
    bits = encoded.stats["bits"]
    samples = math.prod(point.values.shape[:-1])
    return encoded, {
        "base": base_name, "modality": base.config.modality, "shape": list(point.values.shape),
        "bytes": len(encoded.data), "header_bytes": len(encoded.data) - encoded.stats["payload_bytes"],
        "bits_per_sample": 8 * len(encoded.data) / samples,
        "compression_ratio": point.values.size * np.dtype(point.dtype).itemsize / len(encoded.data),
        "psnr": encoded.stats["psnr"], "bits": bits, "steps": args.steps, "effort": effort, "entropy_coding": not args.no_entropy,
        "patches": encoded.stats["tiles"]} | ({"converted": converted} if converted else {})


def encode_coin(args, device):
    from metacompress.codecs.coin import Coin, CoinConfig, architecture_for, check_bits
    from metacompress.data.images import load_image

    if (args.depth is None) != (args.width is None):
        raise UserError("--depth and --width go together")
    check_positive(args.iters, "--iters")
    if args.patience is not None:
        check_positive(args.patience, "--patience")
    check_finite(args.lr, "--lr", positive=True)
    image = load_image(args.input, keep_alpha=True)
    bits = 16 if args.bits is None else args.bits
    check_bits(bits)
    bpp = 0.3 if args.bpp is None else args.bpp
    depth, width = (args.depth, args.width) if args.depth else architecture_for(bpp, *image.shape, bits)
    config = CoinConfig(bpp=bpp, bits=bits, iterations=args.iters, lr=args.lr, patience=args.patience,
                        depth=depth, width=width, seed=args.seed)
    with progress(args, args.iters, "encoding", "iteration") as shown:
        def report(iteration, psnr, best):
            shown.update(1, psnr=round(psnr, 2), best=round(best, 2))
        encoded = Coin(config, progress=report, device=device).compress(image)
    stats, pixels = encoded.stats, image.shape[0] * image.shape[1]
    return encoded, {
        "shape": list(image.shape), "bytes": len(encoded.data), "bpp": 8 * len(encoded.data) / pixels,
        "psnr": stats["psnr"], "depth": stats["depth"], "width": stats["width"], "bits": bits,
        "iterations": stats["iterations_run"], "best_iteration": stats["best_iteration"],
        "iterations_per_s": round(stats["iterations_run"] / stats["encode_seconds"], 2)}


def command_decode(args) -> dict:
    from metacompress.codecs.codec import codec_class, decode_mcz
    from metacompress.distributed import resolve_device
    from metacompress.modalities.registry import modality
    from metacompress.output_paths import check_output_file

    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if args.max_samples is not None and args.max_samples < 0:
        raise UserError(f"--max-samples must be ≥ 0 (0: no cap), got {args.max_samples}")
    if args.max_work is not None and not (math.isfinite(args.max_work) and args.max_work >= 0):
        raise UserError(f"--max-work must be a finite number ≥ 0 (0: no cap), got {args.max_work}")
    device = resolve_device(args.device)
    check_output_file(args.output, [path], args.force)
    data = path.read_bytes()
    loaded = {}

    def base():  # loaded only for a COIN++ file: without --base, the bundled one that made it
        from metacompress.codecs.coinpp import made_with

        loaded["base"], _ = load_base_argument(args.base, device, lambda digest: made_with(data, digest))
        return loaded["base"]
    started = time.perf_counter()
    codec, point = decode_mcz(data, str(path), base=base, scale=args.scale,
                              region=parse_region(args.region) if args.region else None,
                              max_samples=args.max_samples,
                              max_macs=None if args.max_work is None else int(args.max_work), device=device)
    seconds = time.perf_counter() - started
    spec = loaded["base"].config.data if "base" in loaded else None  # COIN files need none
    modality(spec.modality if spec else codec_class(codec).modality).write(args.output, point, spec)
    summary = {"command": "decode", "codec": codec, "input": str(path), "output": str(args.output),
               "device": str(device), "shape": list(point.values.shape), "decode_time_s": round(seconds, 3)}
    print_table(summary)
    return summary


def command_train_base(args) -> dict:
    from metacompress.distributed import init_distributed
    from metacompress.inr.base_network import save_base
    from metacompress.codecs.coinpp_training import prepare_training, train_base
    from metacompress.inr.metalearning import MetaConfig
    from metacompress.metrics import psnr_from_mse

    if not (args.resume or args.force):
        for suffix in (".safetensors", ".json"):
            if Path(args.out + suffix).exists():
                raise UserError(f"--out {args.out}: {args.out + suffix} already exists; pass --force to replace "
                                "it or --resume to continue its run")
    meta = MetaConfig(iterations=args.iters, batch_size=args.batch_size, inner_steps=args.inner_steps,
                      inner_lr=args.inner_lr, outer_lr=args.outer_lr, first_order=args.first_order,
                      checkpoint_steps=args.checkpoint_steps, validate_every=args.validate_every,
                      seed=args.seed)  # validated before any data is read
    ctx = init_distributed(args.device)
    patch = parse_ints(args.patch, "--patch") if args.patch else None
    variables = args.variables.split(",") if args.variables else None
    settings, train_points, val_points = prepare_training(
        args.modality, args.data, patch=patch, width=args.width, depth=args.depth, latent_dim=args.latent_dim,
        w0=args.w0, variables=variables, val_fraction=args.val_fraction, seed=args.seed, meta_sgd=args.meta_sgd)
    run_dir = Path(f"{args.out}.run")
    started = time.perf_counter()
    with progress(args, args.iters - (meta_checkpoint_iteration(run_dir) if args.resume else 0), "meta-training",
                  "step", enabled=ctx.is_main) as shown:
        def report(iteration, loss):
            shown.update(1, psnr=round(psnr_from_mse(loss), 2))
        base = train_base(settings, train_points, val_points, meta, run_dir, args.resume, report, ctx)
    seconds = time.perf_counter() - started
    digest = save_base(args.out, base) if ctx.is_main else None
    training = base.config.training
    summary = {"command": "train-base", "modality": args.modality, "out": args.out, "hash": digest,
               "parameters": sum(p.numel() for p in base.model.parameters()),
               "train_datapoints": len(train_points), "val_datapoints": len(val_points),
               "processes": ctx.world_size, "device": str(ctx.device), "time_s": round(seconds, 1),
               "val_psnr_3_steps": training["val_psnr"]["3_steps"], "val_psnr_10_steps": training["val_psnr"]["10_steps"],
               "val_psnr_5bit_10_steps": training["val_psnr_5bit_10_steps"]}
    print_table(summary)
    return summary


def meta_checkpoint_iteration(run_dir: Path) -> int:
    """Outer steps an interrupted run finished (0 when there is nothing to resume)."""
    import json

    try:
        return len(json.loads((run_dir / "meta_checkpoint.json").read_text()).get("history", []))
    except (OSError, ValueError, AttributeError):
        return 0


COMMANDS = (
    Command("encode", "compress a datapoint into a .mcz file (COIN++ with a base network, or COIN)",
            add_encode_arguments, command_encode),
    Command("decode", "reconstruct a datapoint from a .mcz file", add_decode_arguments, command_decode),
    Command("train-base", "meta-learn a COIN++ base network on a modality's training data", add_train_base_arguments,
            command_train_base),
)
