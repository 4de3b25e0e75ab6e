"""The sweep's report: trials ranked by the validation objective with the test metric each reached (reported,
never ranked on), seeds pooled into arms, and the markdown summary."""

from __future__ import annotations

import json
import statistics
from typing import Any

from segpipe.params import SweepParams

SEED_KEY = "base.seed"  # trials that differ only in it are one arm of an experiment



STATE_ORDER = {"complete": 0, "pruned": 1, "failed": 2}  # a pruned trial never ranks above a complete one


def summary_table(results: list[dict[str, Any]], sweep: SweepParams) -> list[dict[str, Any]]:
    """Trials best first: complete ones by the objective, then pruned ones, then failed ones."""
    sign = -1 if sweep.direction == "maximize" else 1
    return sorted(results, key=lambda r: (STATE_ORDER[r.get("state", "complete")],
                                          sign * r["metrics"].get(sweep.objective, -sign * float("inf"))))


def compute_used(table: list[dict[str, Any]], full_epochs: int) -> dict[str, Any]:
    """Epochs the complete and pruned trials ran against what they would have run unpruned (``train.epochs``
    each, or the trial's own value when the space sets it), and the share saved."""
    ended = [row for row in table if row.get("state", "complete") != "failed"]
    run = sum(row["metrics"].get("epochs_run", 0) for row in ended)
    full = sum(row["overrides"].get("train.epochs", full_epochs) for row in ended)
    return {"trial_epochs": run, "unpruned_trial_epochs": full,
            "saved_share": round(1 - run / full, 4) if full else 0.0,
            "pruned_trials": sum(row.get("state") == "pruned" for row in table)}


def arm_table(results: list[dict[str, Any]], sweep: SweepParams) -> list[dict[str, Any]]:
    """With ``base.seed`` in the space, the trials that differ only in it pooled into arms, in the order the trials
    ran: the objective's values, mean and sample standard deviation (0 for one seed), and the mean pretraining
    seconds if any. No arms otherwise."""
    if SEED_KEY not in sweep.space:
        return []
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in results:
        arm = {k: v for k, v in row["overrides"].items() if k != SEED_KEY}
        groups.setdefault(json.dumps(arm, sort_keys=True), []).append(row)
    table = []
    for rows in groups.values():
        values = [row["metrics"].get(sweep.objective, float("nan")) for row in rows]
        seconds = [row["metrics"]["pretrain_seconds"] for row in rows if "pretrain_seconds" in row["metrics"]]
        table.append({"arm": {k: v for k, v in rows[0]["overrides"].items() if k != SEED_KEY},
                      "seeds": [row["overrides"][SEED_KEY] for row in rows], "values": values,
                      "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                      "pretrain_seconds": statistics.fmean(seconds) if seconds else None})
    return table


def paired_differences(arms: list[dict[str, Any]], sweep: SweepParams) -> list[dict[str, Any]]:
    """Seed by seed, each arm minus its reference: the first arm with the same values of every swept key but the
    last one (``model.weights`` in ``[label_fraction, weights, seed]``). Only the seeds both arms ran are paired;
    pairing takes out the spread between seeds that both arms share (the labels kept, the augmentation, the
    initialisation), which is often larger than the difference itself."""
    keys = [k for k in sweep.space if k != SEED_KEY]
    if not keys:
        return []
    references: dict[str, dict[str, Any]] = {}
    pairs = []
    for arm in arms:
        group = json.dumps({k: v for k, v in arm["arm"].items() if k != keys[-1]}, sort_keys=True)
        reference = references.setdefault(group, arm)
        if reference is arm:
            continue
        base = dict(zip(reference["seeds"], reference["values"], strict=True))
        paired = [(seed, value - base[seed]) for seed, value in zip(arm["seeds"], arm["values"], strict=True)
                  if seed in base]
        if not paired:
            continue
        seeds, differences = [seed for seed, _ in paired], [difference for _, difference in paired]
        pairs.append({"arm": arm["arm"], "reference": reference["arm"], "seeds": seeds, "differences": differences,
                      "mean": statistics.fmean(differences),
                      "std": statistics.stdev(differences) if len(differences) > 1 else 0.0})
    return pairs


def differences_text(pair: dict[str, Any]) -> str:
    """A paired difference's values, signed: ``+0.0408, -0.0036``."""
    return ", ".join(f"{d:+.4f}" for d in pair["differences"])


def reported_test_metric(objective: str) -> str:
    """The test metric reported beside a validation objective (``val_miou`` -> ``test_miou``)."""
    return "test_" + objective.removeprefix("val_").removeprefix("test_")


def summary_markdown(table: list[dict[str, Any]], sweep: SweepParams, best_command: str | None,
                     arms: list[dict[str, Any]], compute: dict[str, Any] | None = None,
                     pairs: list[dict[str, Any]] | None = None) -> str:
    """The trials ranked by the objective, with their state, the epochs each ran and the test metric each reached
    (reported, never used to rank), the compute pruning saved, then (when base.seed is swept) each arm's mean and
    std over seeds and the paired differences. An experiment on a test metric chooses no trial."""
    keys, test = list(sweep.space), reported_test_metric(sweep.objective)
    shown = [sweep.objective] if test == sweep.objective else [sweep.objective, test]
    head = "| rank | trial | state | " + " | ".join(keys + shown) + " | epochs | seconds |"
    lines = [head, "|" + "---|" * (len(keys) + len(shown) + 5)]
    for rank, row in enumerate(table, 1):
        values = " | ".join(str(row["overrides"].get(k)) for k in keys)
        scores = " | ".join(f"{row['metrics'].get(key, float('nan')):.4f}" for key in shown)
        lines.append(f"| {rank} | {row['name']} | {row.get('state', 'complete')} | {values} | {scores} | "
                     f"{row['metrics'].get('epochs_run', '')} | {row['seconds']} |")
    best = table[0]["metrics"]
    chosen = ", ".join(f"{key} {best.get(key, float('nan')):.4f}" for key in shown)
    if sweep.compares_arms:
        title = f"compared on {sweep.objective}"
        verdict = "Nothing is chosen: an experiment on a test metric compares its arms (below)."
    else:
        title = f"selected on {sweep.objective}"
        verdict = f"Chosen: {table[0]['name']} ({chosen}): `{best_command}`"
    text = (f"# sweep ({sweep.method}, pruner {sweep.pruner}, study {sweep.study}: {len(table)} trials, {title})"
            f"\n\n" + "\n".join(lines) + f"\n\n{verdict}\n")
    if compute:
        text += (f"\nCompute: {compute['trial_epochs']} trial-epochs run of {compute['unpruned_trial_epochs']} "
                 f"without pruning ({compute['pruned_trials']} trials pruned, {compute['saved_share']:.0%} saved)\n")
    if arms:
        arm_keys = [k for k in keys if k != SEED_KEY]
        lines = ["| " + " | ".join(arm_keys) + f" | seeds | {sweep.objective} mean ± std |",
                 "|" + "---|" * (len(arm_keys) + 2)]
        lines += ["| " + " | ".join(str(a["arm"][k]) for k in arm_keys)
                  + f" | {len(a['seeds'])} | {a['mean']:.4f} ± {a['std']:.4f} |" for a in arms]
        text += "\n## arms (mean over seeds)\n\n" + "\n".join(lines) + "\n"
    if pairs:
        lines = ["| arm | reference | seeds | differences | mean ± std |", "|---|---|---|---|---|"]
        lines += [f"| {json.dumps(p['arm'])} | {json.dumps(p['reference'])} | {p['seeds']} | "
                  f"{differences_text(p)} | {p['mean']:+.4f} ± {p['std']:.4f} |"
                  for p in pairs]
        text += "\n## paired differences (same seed)\n\n" + "\n".join(lines) + "\n"
    return text
