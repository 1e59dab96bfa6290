"""The one tensor metadata type of trtq: :class:`TensorInfo` (name, shape, dtype, producer).

Every room describes tensors with it: a runner's inputs and outputs, the static inputs a dataset
fills (``datasets.resolve_input_specs``), the network inputs of a TensorRT build, the device
buffers of a TensorRT calibrator, and the float activations of a model
(:func:`trtq._core.onnx_model.float_tensors`).

Shape conventions: ``shape`` is a tuple of dims, ``None`` when not known at all (e.g. an
activation listed before shape inference). A dim is *static* when it is an ``int >= 0``; it is
*dynamic* when it is ``None``, a symbolic name (``"N"``, from ONNX ``dim_param``) or a negative
int (TensorRT writes ``-1``). Dims are kept as given, so error messages show the model's own
spelling. ``dtype`` is always a :class:`numpy.dtype`.

Where a tensor is produced is a separate small value, :class:`Producer`, held in
``TensorInfo.producer`` (``None`` for graph inputs and for tensors not read from a graph). It is
kept apart because only the activation listing knows it: merging its three fields into the
metadata would give every runner input and dataset input three meaningless fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Dim = int | str | None


def is_static_dim(dim: object) -> bool:
    """``dim`` is a known size (an int >= 0; numpy integers count)."""
    return isinstance(dim, int | np.integer) and not isinstance(dim, bool) and dim >= 0


@dataclass(frozen=True)
class Producer:
    """The node that produces a tensor: its name (:func:`~trtq._core.onnx_model.node_names`:
    ``<op_type>_<index>`` for an unnamed node), op type and topological index in the graph."""

    node: str
    op_type: str
    index: int


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's name, shape (see module doc), numpy dtype and, for activations, its producer.

    ``dtype`` is normalised to :class:`numpy.dtype` and numpy integer dims to ``int``, so
    ``TensorInfo("x", (1, 3), np.float32) == TensorInfo("x", (1, 3), np.dtype("float32"))``.
    """

    name: str
    shape: tuple[Dim, ...] | None = None
    dtype: np.dtype = np.dtype(np.float32)
    producer: Producer | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.shape is not None:
            dims = tuple(int(d) if isinstance(d, np.integer) else d for d in self.shape)
            object.__setattr__(self, "shape", dims)

    @property
    def is_dynamic(self) -> bool:
        """Some dim is dynamic, or the shape is unknown."""
        return self.shape is None or not all(is_static_dim(d) for d in self.shape)

    @property
    def sample_shape(self) -> tuple[Dim, ...]:
        """The shape of one sample (dim 0, the batch dim, removed)."""
        return tuple(self.shape or ())[1:]

    @property
    def nbytes(self) -> int:
        """Bytes of one tensor of this (static) shape and dtype; raises ``ValueError`` if dynamic."""
        if self.is_dynamic:
            raise ValueError(f"tensor '{self.name}' has no static shape: {self.shape}")
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
