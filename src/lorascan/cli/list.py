"""``lorascan list``: what the registries and the package hold."""

from __future__ import annotations

import click


@click.command("list")
def command() -> None:
    """List the registered detectors (with their scan cost), probe batteries, shipped probe sets,
    shipped profile sets and known base models."""
    from lorascan.detect import DETECTORS, register_builtin_detectors
    from lorascan.detect.clean_reference import shipped as clean_references
    from lorascan.detect.profiles import load_set, shipped
    from lorascan.models.loading import known_bases
    from lorascan.probe.batteries import builtin_batteries, load_battery
    from lorascan.probe.inputs import SHIPPED as PROBE_SETS, load_probe_inputs

    registry = register_builtin_detectors(DETECTORS.copy())
    click.echo("detectors:")
    for name in registry.names():
        det = registry.create(name)
        click.echo(f"  {name:<14} cost {det.cost:<4} {det.summary}")
    click.echo("batteries:")
    for name in builtin_batteries():
        b = load_battery(name)
        click.echo(f"  {name:<20} {len(b.probes)} probes in {len(b.categories)} categories")
    click.echo("probe sets:")
    for name in PROBE_SETS:
        p = load_probe_inputs(name)
        click.echo(f"  {name:<20} {len(p.injections)} injections, {len(p.benign)} benign (sha256 {p.sha256[:12]})")
    click.echo("shipped profiles:")
    sets = shipped()
    for base, path in sets.items():
        _, profiles, cohort = load_set(path)
        click.echo(f"  {base:<14} {', '.join(sorted(profiles))}  (cohort: {cohort.get('name', '?')}, "
                   f"{cohort.get('n_clean', '?')} clean / {cohort.get('n_poisoned', '?')} poisoned)")
    if not sets:
        click.echo("  none")
    click.echo("clean reference adapters (the phrase search): " + (", ".join(clean_references()) or "none"))
    click.echo("bases: " + ", ".join(known_bases()) + " (or a local folder, a .gguf file, a hub id)")
