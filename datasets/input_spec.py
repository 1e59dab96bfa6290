"""Static input shapes: what each model input must receive, resolved from the model and ``--shape``.

Conventions: dim 0 of every input is the batch dim. A dim is dynamic when the model gives no
positive size for it (``None``, a symbolic name, or -1). The batch dim, when dynamic, becomes the
batch size (default 1); every other dynamic dim comes from the first sample of a folder of
``.npy``/``.npz`` tensors (:func:`trtq.datasets.folder.sample_shapes`: a text model's sequence
length), else must be given with ``--shape NAME:DIMS``, e.g.
``--shape x:1x3x640x640`` (batch dim included; it is replaced by the batch size when the model's
batch dim is dynamic).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from trtq._core.errors import InputError
from trtq._core.tensors import TensorInfo, is_static_dim

SHAPE_SYNTAX = "NAME:DIMS, e.g. --shape x:1x3x640x640 (batch dim included)"


def static_inputs(inputs: Iterable[TensorInfo]) -> list[TensorInfo]:
    """``inputs`` as a list, checked to be what a dataset can fill: every shape fully static,
    batch dim included, all sizes positive (else :class:`InputError` naming the input)."""
    out = list(inputs)
    for t in out:
        shape = t.shape or ()
        if not shape or any(not isinstance(d, int) or d <= 0 for d in shape):
            raise InputError(f"input '{t.name}': shape {t.shape} must have a batch dim and positive sizes")
    return out


def parse_shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``"x:1x3x640x640"`` into ``("x", (1, 3, 640, 640))``.

    The name is everything before the last ``:`` (TensorFlow-style names such as ``input:0``
    work); dims are separated by ``x`` or ``,``. Without a ``:`` the name is ``""``, meaning the
    model's only input.
    """
    name, sep, dims = str(text).strip().rpartition(":")
    if not sep:
        name, dims = "", text.strip()
    parts = [p for p in dims.replace(",", "x").split("x")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise InputError(f"--shape '{text}': expected {SHAPE_SYNTAX}, with positive integer dims")
    return name, shape


def _is_dynamic(dim: object) -> bool:  # 0 too: no input can be fed a zero-size dim
    return not (is_static_dim(dim) and dim > 0)


def _example(info: TensorInfo, batch: int) -> str:
    dims = [str(batch)] + [f"D{i}" if _is_dynamic(d) else str(d) for i, d in enumerate(info.shape) if i > 0]
    return f"--shape {info.name}:{'x'.join(dims)}"


def default_batch_size(inputs: Sequence[TensorInfo]) -> int:
    """The model's static batch dimension (of its first input), else 1."""
    first = inputs[0].shape[0] if inputs and inputs[0].shape else None
    return first if isinstance(first, int) and first > 0 else 1


def resolve_input_specs(
    inputs: Sequence[TensorInfo],
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch_size: int | None = None,
) -> list[TensorInfo]:
    """Make every model input static, from the model's shapes, ``shapes`` and ``batch_size``.

    - a shape in ``shapes`` must have the input's rank and agree with its static dims;
    - the batch dim is ``batch_size`` when the model's batch dim is dynamic (else the shape's,
      else 1); when it is static, ``batch_size`` must equal it;
    - any other dynamic dim not covered by ``shapes`` raises :class:`InputError` naming the
      input and dims and showing the ``--shape`` syntax.
    """
    shapes = dict(shapes or {})
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    names = [t.name for t in inputs]
    if "" in shapes:
        if len(inputs) != 1:
            raise InputError(f"--shape without a name is only for single-input models; this one has {names}")
        shapes[inputs[0].name] = shapes.pop("")
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise InputError(f"--shape names unknown input(s) {unknown}; the model's inputs are {names}")
    specs = []
    for info in inputs:
        if not info.shape:
            raise InputError(
                f"input '{info.name}' is a scalar; only inputs with a batch dim can be fed from data"
            )
        given = shapes.get(info.name)
        dims: list[int | None] = [None if _is_dynamic(d) else int(d) for d in info.shape]
        if given is not None:
            given = tuple(int(d) for d in given)
            if len(given) != len(dims):
                raise InputError(
                    f"--shape for input '{info.name}' has {len(given)} dims {given}, "
                    f"but the model's input has {len(dims)}: {tuple(info.shape)}"
                )
            for i, (g, d) in enumerate(zip(given, dims, strict=True)):
                if d is not None and g != d:
                    raise InputError(
                        f"--shape for input '{info.name}' sets dim {i} to {g}, but the model fixes it at {d}"
                    )
            batch_dynamic = dims[0] is None
            dims = [d if d is not None else g for g, d in zip(given, dims, strict=True)]
            if batch_dynamic:
                dims[0] = None
        if dims[0] is None:
            dims[0] = batch_size if batch_size is not None else (given[0] if given is not None else 1)
        elif batch_size is not None and batch_size != dims[0]:
            raise InputError(
                f"input '{info.name}' has a fixed batch dim of {dims[0]}; batch size {batch_size} is not possible"
            )
        missing = [i for i, d in enumerate(dims) if d is None]
        if missing:
            what = ", ".join(f"{i} ({info.shape[i] or '?'})" for i in missing)
            raise InputError(
                f"input '{info.name}' {tuple(info.shape)} has dynamic dim(s) {what}: give its shape with "
                f"{_example(info, dims[0] or 1)} (replace each D<i> with a size); syntax {SHAPE_SYNTAX}"
            )
        specs.append(TensorInfo(info.name, tuple(int(d) for d in dims), info.dtype))  # type: ignore[arg-type]
    return static_inputs(specs)
