"""``lorascan weights ADAPTER_DIR``: the weight-level scan (paper §8) with a verdict."""

from __future__ import annotations

from typing import Any

import click

from lorascan.detect.blas import prefer_single_thread

prefer_single_thread()  # before numpy is imported (see lorascan.detect.blas)

from lorascan.detect.weights import SCALINGS, config_for, error_record, load_weight_profile, scan_record  # noqa: E402
from lorascan.errors import LorascanError  # noqa: E402
from lorascan.report import write_json_output  # noqa: E402


@click.command("weights")
@click.argument("adapter_dir")
@click.option("--profile", "profile_path", default=None, metavar="P",
              help="Calibrated profile for this base model (from 'lorascan weights-calibrate').")
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the JSON record here ('-' for stdout).")
@click.option("--modules", is_flag=True, help="Include per-module features (name, layer, rank, frobN, spectrum).")
@click.option("--scaling", type=click.Choice(SCALINGS), default=None,
              help="none: B·A as in the paper (default); alpha: PEFT's alpha/r (alpha/sqrt(r) with rsLoRA). "
                   "Defaults to the profile's.")
def command(adapter_dir: str, profile_path: str | None, json_out: str | None, modules: bool,
            scaling: str | None) -> None:
    """Scan ADAPTER_DIR's adapter_model.safetensors without running a model: exact per-module
    ‖B·A‖ and spectrum features, adapter-level features (global_frobN_std, ...) and a verdict
    (suspicious / clean / uncalibrated without a profile)."""
    config = None
    try:
        profile = load_weight_profile(profile_path) if profile_path else None
        config = config_for(scaling, profile)
        rec = scan_record(adapter_dir, config, profile, profile_path, include_modules=modules)
    except LorascanError as err:
        if json_out:
            try:
                write_json_output(json_out, error_record(adapter_dir, config, err))
            except LorascanError:
                pass  # the scan's error is the one to report
        raise
    if json_out:
        write_json_output(json_out, rec)
    if json_out != "-":
        _print_summary(rec, modules)


def _g(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _print_summary(rec: dict[str, Any], modules: bool) -> None:
    from lorascan.cli.common import console, safe

    out, a, f, v = console(), rec["adapter"], rec["features"], rec["verdict"]
    out.print(f"adapter {safe(a['path'], 200)}: base model {safe(a['base_model'])}, r={a['r']}, "
              f"alpha {a['lora_alpha']:g}{' (rsLoRA)' if a['use_rslora'] else ''}, {a['n_modules']} modules "
              f"({safe(', '.join(a['dtypes']))}), {a['n_tensors']} tensors; scaling {rec['detector_args']['scaling']}")
    out.print(f"global_frobN_std {_g(f['global_frobN_std'])}; frobN mean {_g(f['frobN_mean'])}, "
              f"min {_g(f['frobN_min'])}, max {_g(f['frobN_max'])}; attention/MLP mean "
              f"{_g(f['attn_frobN_mean'])}/{_g(f['mlp_frobN_mean'])} (ratio {_g(f['attn_mlp_frobN_ratio'])})")
    gaps = rec["unanalysed"]
    out.print(f"unanalysed: {len(gaps) or 'none'}" + "".join(
        f"\n  {safe(u['tensor'], 100)}: {safe(u['reason'], 160)}" for u in gaps[:10])
        + (f"\n  ... {len(gaps) - 10} more (see --json)" if len(gaps) > 10 else ""))
    if modules:
        for m in rec.get("modules", []):
            out.print(f"  {safe(m['name'], 90)}  r={m['rank']} frobN {_g(m['frobN'])} entropy "
                      f"{_g(m['spectral_entropy'])} pr {_g(m['participation_ratio'])} sv max/mean {_g(m['sv_max_mean'])}")
    style = {"suspicious": "bold red", "clean": "green"}.get(v["label"], "yellow")
    out.print(f"verdict: [{style}]{v['label'].upper()}[/{style}]" + "".join(f"\n  {safe(r, 300)}" for r in v["reasons"]))
