"""``edgecam model inspect``: what a model is (tensors, quantisation, ops, detected format, label count).

A path is a ``.tflite`` (labels from ``labels.txt`` beside it, when there) or a model folder (with a
``manifest.json``, or just one ``.tflite`` and ``labels.txt``). The format guess and the interpreter are
the agent's own (``agent.vision.layout`` / ``agent.vision.interpreter``), so inspect sees what a node sees.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ModelError
from agent.vision.detector import load_labels
from agent.vision.interpreter import ModelRuntime, TensorInfo
from agent.vision.layout import ModelLayout, detect_layout
from agent.vision.manifest import MANIFEST_NAME, ModelManifest, load_manifest, sha256_file


@dataclass(slots=True)
class ModelFiles:
    """The files a model path points at."""

    model: Path
    labels: Path | None
    manifest: ModelManifest | None
    folder: Path | None


def resolve(path: Path) -> ModelFiles:
    """A ``.tflite`` or a folder → model file, label file (if any) and manifest (if any)."""
    path = Path(path)
    if path.is_dir():
        if (path / MANIFEST_NAME).exists():
            man = load_manifest(path)
            return ModelFiles(path / man.file, path / man.labels, man, path)
        tflites = sorted(path.glob("*.tflite"))
        if len(tflites) != 1:
            found = ", ".join(p.name for p in tflites) or "none"
            raise ModelError(f"{path}: no {MANIFEST_NAME} and not exactly one .tflite (found {found})")
        labels = path / "labels.txt"
        return ModelFiles(tflites[0], labels if labels.exists() else None, None, path)
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    labels = path.with_name("labels.txt")
    return ModelFiles(path, labels if labels.exists() else None, None, None)


def check_label_count(labels: list[str], labels_file: Path, layout: ModelLayout) -> str:
    """One line describing the label/class agreement; ``ModelError`` when they disagree."""
    n = layout.num_classes  # what the tensors fix (a YOLO head); None when they do not say (SSD post-process)
    if n is None:
        return f"{len(labels)} labels (the {layout.kind} outputs do not fix the class count)"
    if len(labels) != n:
        raise ModelError(f"{labels_file}: {len(labels)} labels but the {layout.kind} head "
                         f"{list(layout.head.shape) if layout.head else ''} has {n} classes")
    return f"{len(labels)} labels = {n} head classes"


@dataclass(slots=True)
class Inspection:
    files: ModelFiles
    size: int
    sha256: str
    runtime: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    ops: Counter = field(default_factory=Counter)
    layout: ModelLayout | None = None
    labels: list[str] | None = None
    label_check: str = ""


def graph_ops(rt: ModelRuntime) -> Counter:
    """Operators of the model itself: listed from an interpreter without the default XNNPACK delegate,
    which would otherwise replace most of them by ``DELEGATE`` nodes."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        plain = Interpreter(model_content=rt.content,
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        plain.allocate_tensors()
        return Counter(op["op_name"] for op in plain._get_ops_details())
    except Exception:  # private API or another runtime: fall back to what the loaded runtime lists
        return Counter(rt.ops())


def inspect_model(path: Path, threads: int = 1) -> Inspection:
    files = resolve(path)
    rt = ModelRuntime(files.model, threads)
    override = files.manifest.format if files.manifest else "auto"
    layout = detect_layout(rt.inputs, rt.outputs, None, override)
    labels = load_labels(files.labels) if files.labels else None
    check = check_label_count(labels, files.labels, layout) if labels is not None and files.labels else \
        "no label file (pass a folder with labels.txt or a manifest)"
    return Inspection(files=files, size=files.model.stat().st_size, sha256=sha256_file(files.model),
                      runtime=rt.runtime_name, inputs=rt.inputs, outputs=rt.outputs, ops=graph_ops(rt),
                      layout=layout, labels=labels, label_check=check)


def quant_text(t: TensorInfo) -> str:
    return f"scale {t.scale:.6g}, zero point {t.zero_point}" if t.quantised else "not quantised"


def report_lines(ins: Inspection) -> list[str]:
    """Plain text report (the CLI prints it with rich markup off)."""
    f = ins.files
    lines = [f"model     {f.model} ({ins.size / 1024:.0f} KiB)", f"sha256    {ins.sha256}",
             f"runtime   {ins.runtime}"]
    if f.manifest:
        m = f.manifest
        lines.append(f"manifest  {m.name} {m.version} ({m.format}, {m.input.width}x{m.input.height} "
                     f"{m.input.dtype} {m.input.resize}, license {m.license})")
    lines.append("inputs")
    lines += [f"  [{t.index}] {t.name}  {t.dtype.name} {list(t.shape)}  {quant_text(t)}" for t in ins.inputs]
    lines.append("outputs")
    lines += [f"  [{t.index}] {t.name}  {t.dtype.name} {list(t.shape)}  {quant_text(t)}" for t in ins.outputs]
    if ins.ops:
        ops = ", ".join(f"{name} x{n}" for name, n in sorted(ins.ops.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"ops       {sum(ins.ops.values())}: {ops}")
    else:
        lines.append("ops       (this runtime does not list operators)")
    assert ins.layout is not None
    lines.append(f"format    {ins.layout.describe()}")
    w, h = ins.layout.input_size
    lines.append(f"input     {w}x{h} {ins.layout.image.dtype.name}, {quant_text(ins.layout.image)}")
    if ins.layout.state:
        for inp, out in ins.layout.state:
            lines.append(f"state     {out.name} -> {inp.name} {list(inp.shape)} (fed back every frame)")
    lines.append(f"labels    {f.labels or '-'}: {ins.label_check}")
    return lines
