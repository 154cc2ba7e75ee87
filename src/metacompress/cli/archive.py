"""``metacompress archive create|append|extract|list|verify``: dataset archives from the command line."""

from __future__ import annotations

import logging
import time
from pathlib import Path, PurePosixPath

from metacompress.cli.common import (Command, add_device, add_json, is_main_process, load_base_argument, print_table,
                                     progress)
from metacompress.errors import FormatError, UserError

log = logging.getLogger(__name__)


def add_archive_arguments(archive) -> None:
    sub = archive.add_subparsers(dest="archive_command", required=True, parser_class=type(archive))

    def encoding_options(p):
        p.add_argument("--base", help="base network (BASE.safetensors + BASE.json; default: the bundled photo base)")
        p.add_argument("--steps", type=int, default=10, help="inner-loop steps fitting each item's latents")
        p.add_argument("--effort", type=int, help="Adam steps refining each item's latents for the quantizer "
                       "(default: encode's)")
        p.add_argument("--key", help=".npz input: the array holding the items (when it has several)")
        p.add_argument("--workers", type=int, default=1, help="encoding processes on this machine")
        p.add_argument("--shard-size", type=int, default=64,
                       help="items encoded as one batch; the unit of parallel work and of resuming")
        p.add_argument("--no-progress", action="store_true")
        add_device(p)
        add_json(p)

    p = sub.add_parser("create", help="encode a folder of datapoints, an .npz of stacked ones, or a netCDF file "
                                      "of globes; under torchrun the ranks share the work")
    p.add_argument("input", help="DATA_DIR (searched recursively), FILE.npz, or (globes) FILE.nc")
    p.add_argument("-o", "--output", required=True, help="the .mcza archive to write")
    p.add_argument("--bits", type=int, default=5, help="latent bits (3–8)")
    p.add_argument("--no-entropy", action="store_true", help="store fixed-width symbols, no entropy coding")
    encoding_options(p)

    p = sub.add_parser("append", help="encode more items and add them after an archive's items")
    p.add_argument("archive", help="the .mcza archive (its bits and base network are used)")
    p.add_argument("input", help="DATA_DIR, FILE.npz or FILE.nc, as for create")
    encoding_options(p)

    p = sub.add_parser("extract", help="decode items to files (a folder, or one .npz)")
    p.add_argument("archive")
    p.add_argument("-o", "--output", required=True, help="OUT_DIR, or OUT.npz for one stacked array")
    p.add_argument("--items", help="which items: 7, 0:100, -5:, 1,4,10:20 (default all)")
    p.add_argument("--base", help="the base network the archive was made with (default: the bundled one)")
    p.add_argument("--force", action="store_true", help="overwrite files that already exist")
    p.add_argument("--max-samples", type=int, help="decoding cap per item (default 2^26; 0: no cap)")
    p.add_argument("--no-progress", action="store_true")
    add_json(p)

    p = sub.add_parser("list", help="the archive's settings and items")
    p.add_argument("archive")
    add_json(p)

    p = sub.add_parser("verify", help="check every item's CRC, the header's and the whole archive's")
    p.add_argument("archive")
    add_json(p)


def command_archive(args) -> dict:
    return {"create": archive_create, "append": archive_create, "extract": archive_extract, "list": archive_list,
            "verify": archive_verify}[args.archive_command](args)


def archive_create(args) -> dict:
    from metacompress.codecs.archive import Archive
    from metacompress.modalities.item_sources import item_source
    from metacompress.dataset_archive import ArchiveSettings, create_archive
    from metacompress.codecs.coinpp import on_device
    from metacompress.distributed import init_distributed
    from metacompress.modalities.registry import modality

    appending = args.archive_command == "append"
    output = Path(args.archive if appending else args.output)
    base, base_name = load_base_argument(args.base)
    if appending:
        with Archive(output) as existing:
            existing.header.check_base(base, str(output))
            bits, entropy = existing.header.bits, existing.header.entropy
    else:
        bits, entropy = args.bits, not args.no_entropy
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    ctx = init_distributed(args.device)
    if ctx.device.type != "cpu" and args.workers > 1:
        raise UserError(f"--workers {args.workers} starts CPU processes; with --device {args.device} use one "
                        "worker per GPU (torchrun --nproc_per_node=GPUS)")
    base = on_device(base, ctx.device)
    source = item_source(args.input, base.config.data, args.key)
    settings = ArchiveSettings(bits, args.steps, entropy, args.shard_size,
                               **({} if args.effort is None else {"effort": args.effort}))
    unit = modality(base.config.modality).rate_unit
    with progress(args, len(source), "encoding", "item", enabled=ctx.is_main) as bar:
        totals = {"bytes": 0, "samples": 0, "psnr": 0.0, "items": 0}

        def on_shard(stats):
            totals.update(bytes=totals["bytes"] + stats.record_bytes, samples=totals["samples"] + stats.samples,
                          psnr=totals["psnr"] + stats.psnr_sum, items=totals["items"] + stats.items)
            bar.update(stats.items, **{unit: round(8 * totals["bytes"] / totals["samples"], 3),
                                       "psnr": round(totals["psnr"] / totals["items"], 2)})
        result = create_archive(source, base, output, settings, args.workers, ctx if ctx.is_distributed else None,
                                appending, on_shard)
    if result is None:
        return {}
    summary = {"command": f"archive {args.archive_command}", "input": str(args.input), "output": str(output),
               "base": base_name, "modality": base.config.modality, "items": result.items, "added": result.added,
               "archive_bytes": result.archive_bytes, "bits_per_sample": result.bits_per_sample,
               "file_bits_per_sample": 8 * result.file_bytes / result.added_samples,
               "psnr": result.mean_psnr, "bits": bits, "steps": args.steps, "effort": settings.effort,
               "entropy_coding": entropy,
               "processes": ctx.world_size * args.workers, "encoded_now": result.encoded_items,
               "encode_time_s": round(result.encode_seconds, 2),
               "items_per_s": round(result.encoded_items / result.encode_seconds, 2) if result.encoded_items else None}
    if is_main_process():
        print_table(summary)
    return summary


def archive_extract(args) -> dict:
    import io

    import numpy as np

    from metacompress.checkpoint import atomic_write_bytes
    from metacompress.codecs.archive import Archive, parse_item_range
    from metacompress.modalities.files import write_datapoint
    from metacompress.output_paths import check_output_file, check_output_tree, undone_on_error

    output = Path(args.output)
    to_npz = output.suffix.lower() == ".npz"
    started = time.perf_counter()
    with Archive(args.archive) as archive:
        base, _ = load_base_argument(args.base, made_with=lambda digest: digest == archive.header.base_hash)
        archive.header.check_base(base, archive.source)
        chosen = parse_item_range(args.items, archive.count)
        modality = base.config.modality
        # every name and path is checked before the first item is written
        if to_npz:
            check_output_file(output, [args.archive], args.force)
        else:
            if Path(args.archive).resolve() == output.resolve():
                raise UserError(f"-o {output}: is the archive itself; extract to a folder")
            targets = dict(zip(chosen, check_output_tree(
                output, [item_file_name(archive.names[i], i, archive.count, modality) for i in chosen], args.force)))
        damaged, points = {}, {}
        with undone_on_error(output.parent if to_npz else output, [] if to_npz else list(targets.values())):
            shown = progress(args, len(chosen), "decoding", "item")
            for i in chosen:
                shown.update()
                try:
                    point = archive.datapoint(i, base, args.max_samples)
                except FormatError as e:
                    damaged[i] = str(e).removeprefix(f"{archive.source}: ")
                    continue
                if to_npz:
                    points[i] = point
                else:
                    write_datapoint(targets[i], point, base.config.data)
            shown.close()
        if to_npz and points:
            shapes = {p.values.shape for p in points.values()}
            if len(shapes) != 1:
                raise UserError(f"{output}: the items have different shapes; extract them to a folder")
            buffer = io.BytesIO()
            np.savez(buffer, items=np.stack([p.values for p in points.values()]), index=np.array(list(points)))
            atomic_write_bytes(output, buffer.getvalue())
    seconds = time.perf_counter() - started
    summary = {"command": "archive extract", "archive": str(args.archive), "output": str(output),
               "extracted": len(chosen) - len(damaged), "damaged": sorted(damaged), "decode_time_s": round(seconds, 2)}
    print_table(summary)
    if damaged:
        first = next(iter(damaged.values()))
        raise FormatError(f"{args.archive}: {len(damaged)} damaged item(s) not extracted "
                          f"({', '.join(map(str, sorted(damaged)[:10]))}{'…' if len(damaged) > 10 else ''}; "
                          f"first: {first}); the other {len(chosen) - len(damaged)} were written")
    return summary


def item_file_name(name: str, index: int, count: int, modality: str) -> PurePosixPath:
    """Where item ``index`` is written: its stored relative name (checked safe, with a suffix the
    modality can be written as) or, unnamed, its zero-padded index."""
    from metacompress.modalities.registry import modality as registered_modality
    from metacompress.output_paths import safe_relative_path

    kind = registered_modality(modality)
    if not name:
        return PurePosixPath(f"{index:0{len(str(count - 1))}d}{kind.default_suffix}")
    label, _, step = name.partition("#")  # globes: file#time-step
    what = f"item {index}"
    path = safe_relative_path(label, what)
    if step:
        if not step.isdigit():
            raise FormatError(f"{what} has a name that cannot be written safely: {name!r}")
        return path.with_name(f"{path.name.split('.')[0] or 'item'}-{step}{kind.default_suffix}")
    return kind.output_path(path)


def archive_list(args) -> dict:
    from metacompress.codecs.archive import Archive

    with Archive(args.archive) as archive:
        header = archive.header
        items = [{"index": i, "name": archive.names[i], "shape": listed_shape(archive, i),
                  "bytes": archive.lengths[i]} for i in range(archive.count)]
        damaged = [item["index"] for item in items if item["shape"] is None]
        samples = None if damaged else archive.samples()
        summary = {"command": "archive list", "archive": str(args.archive), "modality": header.modality,
                   "dtype": header.dtype, "base": header.base_hash, "bits": header.bits,
                   "entropy_coding": header.entropy, "common_shape": list(header.shape) if header.shape else None,
                   "items": archive.count, "archive_bytes": archive.size,
                   "bits_per_sample": 8 * archive.size / samples if samples else None}
    for key, value in summary.items():
        print(f"{key:>16}: {value}")
    print(f"{'item':>8}  {'bytes':>8}  {'shape':<18} name")
    for item in items:
        shape = "×".join(map(str, item["shape"])) if item["shape"] else "? (damaged)"
        print(f"{item['index']:>8}  {item['bytes']:>8}  {shape:<18} {item['name']}")
    if damaged:
        log.warning("%s: %d damaged item(s) (%s); run `metacompress archive verify` for details", args.archive,
                    len(damaged), ", ".join(map(str, damaged[:10])) + (", …" if len(damaged) > 10 else ""))
    return summary | {"item_list": items, "damaged_items": damaged}


def listed_shape(archive, i: int) -> list[int] | None:
    """Item ``i``'s shape for a listing, or None when its record is damaged."""
    try:
        return list(archive.item_shape(i))
    except FormatError:
        return None


def archive_verify(args) -> dict:
    from metacompress.codecs.archive import Archive, describe_damage

    with Archive(args.archive, check_header=False) as archive:
        report = archive.verify()
    summary = {"command": "archive verify", "archive": str(args.archive), "items": report.items,
               "header_ok": report.header_ok, "archive_crc_ok": report.whole_ok,
               "damaged": {str(i): why for i, why in report.damaged.items()}}
    print(f"{args.archive}: {report.items} items, "
          + ("all intact" if report.ok else describe_damage(report)))
    if not report.ok:
        raise FormatError(f"{args.archive}: {describe_damage(report)}; "
                          f"{report.items - len(report.damaged)} of {report.items} items are intact")
    return summary


COMMANDS = (Command("archive", "compress a dataset into one .mcza archive with random access", add_archive_arguments,
                    command_archive),)
