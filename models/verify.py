"""``edgecam model verify DIR``: is a model folder what it claims to be, before it is shipped or loaded?

Checks, in order: the manifest parses; the model file's sha256 is the manifest's; the interpreter loads
it; the detected format, input size, dtype and quantisation are the manifest's; the label file has
``num_classes`` names that agree with the tensors and with the manifest's ``classes`` (when it lists them)
and its per-label thresholds. A folder without a manifest gets the checks that need none.
Each check yields a line; the first failure is raised as a one-line ``ModelError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ModelError
from agent.vision.detector import load_labels
from agent.vision.interpreter import ModelRuntime
from agent.vision.layout import ModelLayout, detect_layout
from agent.vision.manifest import ModelManifest, sha256_file
from models.inspect import check_label_count, resolve


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def _input_checks(man: ModelManifest, layout: ModelLayout) -> list[Check]:
    img = layout.image
    w, h = layout.input_size
    out = [Check("input size", (w, h) == (man.input.width, man.input.height),
                 f"tensor {w}x{h}, manifest {man.input.width}x{man.input.height}"),
           Check("input dtype", img.dtype.name == man.input.dtype,
                 f"tensor {img.dtype.name}, manifest {man.input.dtype}")]
    if img.quantised or man.input.scale:
        same = math.isclose(img.scale, man.input.scale, rel_tol=1e-5) and img.zero_point == man.input.zero_point
        out.append(Check("input quantisation", same, f"tensor ({img.scale:.6g}, {img.zero_point}), manifest "
                         f"({man.input.scale:.6g}, {man.input.zero_point})"))
    return out


def verify_folder(folder: Path, threads: int = 1) -> list[Check]:
    """Run every check; raise ``ModelError`` naming the first that fails (after collecting all)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: not a folder (verify takes a model folder)")
    files = resolve(folder)
    man = files.manifest
    checks: list[Check] = []
    origin = str(folder / "manifest.json") if man else str(files.model)
    if man:
        checks.append(Check("manifest", True, f"{man.name} {man.version}"))
        if not files.model.exists():
            raise ModelError(f"{origin}: field file: {man.file} does not exist in {folder}")
        digest = sha256_file(files.model)
        checks.append(Check("sha256", digest == man.sha256,
                            f"{files.model.name} is {digest[:16]}…, manifest says {man.sha256[:16]}…"))
    else:
        checks.append(Check("manifest", True, "none (checking the model and labels only)"))
    try:
        rt = ModelRuntime(files.model, threads)
        layout = detect_layout(rt.inputs, rt.outputs, None, "auto")
    except ModelError as exc:  # nothing below can be checked without the interpreter
        checks.append(Check("loads", False, str(exc)))
        return checks
    checks.append(Check("loads", True, f"{rt.runtime_name}, {len(rt.inputs)} input(s), {len(rt.outputs)} output(s)"))
    fmt_ok = man is None or layout.kind == man.format
    checks.append(Check("format", fmt_ok, layout.describe() + (f" (manifest: {man.format})" if man else "")))
    if man:
        checks += _input_checks(man, layout)
        stateful = bool(layout.state)
        checks.append(Check("stateful", stateful == man.stateful,
                            f"tensors {'have' if stateful else 'have no'} recurrent state, manifest says "
                            f"stateful={str(man.stateful).lower()}"))
    if files.labels is None:
        checks.append(Check("labels", False, f"{folder}: no labels.txt"))
    elif not files.labels.exists():
        checks.append(Check("labels", False, f"{files.labels}: label file not found"))
    else:
        labels = load_labels(files.labels)
        try:
            checks.append(Check("label count", True, check_label_count(labels, files.labels, layout)))
        except ModelError as exc:
            checks.append(Check("label count", False, str(exc)))
        if man:
            n = layout.num_classes
            checks.append(Check("num_classes", len(labels) == man.num_classes and n in (None, man.num_classes),
                                f"manifest {man.num_classes}, labels {len(labels)}"
                                + (f", head {n}" if n is not None else "")))
            if man.classes is not None:
                diff = [(i, a, b) for i, (a, b) in enumerate(zip(labels, man.classes, strict=False)) if a != b]
                if len(labels) != len(man.classes):
                    detail = f"{files.labels.name} has {len(labels)} names, manifest classes {len(man.classes)}"
                elif diff:
                    i, a, b = diff[0]
                    detail = f"{files.labels.name} class {i} is '{a}' but the manifest's classes say '{b}'"
                else:
                    detail = "label names are the manifest's classes"
                checks.append(Check("class names", len(labels) == len(man.classes) and not diff, detail))
            unknown = sorted(set(man.thresholds.per_label) - set(labels))
            checks.append(Check("per-label thresholds", not unknown,
                                f"unknown label(s) {unknown}" if unknown else
                                f"{len(man.thresholds.per_label)} per-label threshold(s)"))
    return checks


def first_failure(folder: Path, checks: list[Check]) -> ModelError | None:
    for c in checks:
        if not c.ok:
            return ModelError(f"{folder}: {c.name} check failed: {c.detail}")
    return None
