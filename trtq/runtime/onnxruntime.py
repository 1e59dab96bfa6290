"""ONNX Runtime backend (CPU): the default, and the engine of every emulation in trtq.

Extra tensors are fetched by adding them to the graph outputs before the session is created
("mark"): ``mark="all"`` marks every float activation (see
:func:`trtq._core.onnx_model.float_tensors`). ONNX Runtime keeps marked tensors intact through its
graph optimisations, so fetching them does not change their values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from trtq._core.errors import InputError, TrtqError, first_line
from trtq._core.onnx_model import (
    float_tensors,
    load_onnx,
    real_inputs,
    tensor_types,
    value_info,
    without_initializers,
)
from trtq.runtime import register_backend
from trtq.runtime.build import BuildSpec, BuildTools
from trtq.runtime.runner import Runner


def mark_outputs(
    model: onnx.ModelProto, names: Sequence[str], types: Mapping[str, int] | None = None
) -> onnx.ModelProto:
    """Return a copy of ``model`` whose graph outputs also include ``names``; their element types
    come from ``types`` (default: :func:`~trtq._core.onnx_model.tensor_types`), FLOAT if unknown."""
    if types is None:
        types = tensor_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name for o in out.graph.output}
    for name in names:
        if name in existing:
            continue
        elem = types.get(name, onnx.TensorProto.FLOAT)
        out.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
        existing.add(name)
    return out


#: Initializers of at least this many bytes reach ONNX Runtime as arrays beside the model, not in
#: its serialised bytes (:func:`split_weights`).
SPLIT_BYTES = 1 << 16
#: Element types an initializer may have to be split: the ones numpy holds natively, which
#: ``OrtValue.ortvalue_from_numpy`` takes. FP8 (FLOAT8E4M3FN weights of an FP8 Q/DQ export),
#: bfloat16 and 4-bit types stay in the model's bytes.
_SPLITTABLE = frozenset(
    {
        onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
        onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL,
    }
)  # fmt: skip
#: Where a split initializer's stub says its data is: a name, not a file. ONNX Runtime replaces
#: the stub with the array before it would read any file.
_IN_MEMORY = "trtq-in-memory"


def split_weights(
    model: onnx.ModelProto, min_bytes: int = SPLIT_BYTES
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``(light, weights)``: a copy of ``model`` in which every top-graph initializer held as raw
    data of at least ``min_bytes`` is a stub (name, type, dims, and an external-data location that
    names no file), and those initializers' values by name. Only element types numpy holds
    natively are split (:data:`_SPLITTABLE`: not FP8).

    Why: ONNX Runtime's Python API takes a model as serialised bytes. Serialising the weights,
    then parsing them back inside ONNX Runtime, touches several times their size in fresh memory
    (ViT-S's 88 MB: a session took 0.28 s to create from the whole model, 0.13 s split). The
    weights are handed over with ``SessionOptions.add_external_initializers`` instead (ONNX
    Runtime copies them as it loads, so the arrays need not outlive the session); the outputs
    are the same (tests/runtime/test_split_weights.py). Small initializers (shapes,
    scales) stay in the model: shape inference reads their values. Weights held in Constant
    nodes (the PaddleOCR models) are not split; folding makes them initializers.
    """
    from onnx import numpy_helper

    light = without_initializers(model)
    weights: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if (
            init.data_location != onnx.TensorProto.EXTERNAL
            and init.data_type in _SPLITTABLE
            and init.HasField("raw_data")
            and init.ByteSize() >= min_bytes
        ):
            weights[init.name] = numpy_helper.to_array(init)
            stub = light.graph.initializer.add(name=init.name, dims=init.dims, data_type=init.data_type)
            stub.data_location = onnx.TensorProto.EXTERNAL
            nbytes = str(weights[init.name].nbytes)
            for key, value in (("location", _IN_MEMORY), ("offset", "0"), ("length", nbytes)):
                stub.external_data.add(key=key, value=value)
        else:
            light.graph.initializer.append(init)
    return light, weights


@register_backend("onnxruntime")
class OnnxRuntimeRunner(Runner):
    """Run an ONNX model with ONNX Runtime on the CPU.

    Args:
        model: path to an ``.onnx`` file or a loaded ``ModelProto``.
        mark: extra tensors to make fetchable: a list of names, or ``"all"`` for every float
            activation.
        threads: intra-op threads (default: ONNX Runtime's choice, all cores).
        spin: let ONNX Runtime's idle worker threads spin after a run (its default, best for
            back-to-back runs). ``False`` when other threads work between runs: calibration's
            histogram pool ran 2.8x slower beside spinning workers on a 16-core machine. Default:
            spin only when no extra tensor is marked (a caller that marks tensors works on them
            between runs).
        optimize: let ONNX Runtime fuse and optimise (``True``). Set ``False`` to run the graph
            node for node, e.g. when comparing emulations that must not be refused.
    """

    name = "onnxruntime"
    emulated_precision = True

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        *,
        mark: Sequence[str] | str = (),
        threads: int | None = None,
        optimize: bool = True,
        spin: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        if spin is None:
            spin = not mark

        proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
        self.source = None if isinstance(model, onnx.ModelProto) else Path(model)
        self.model = proto
        types = tensor_types(proto) if mark else None  # one shape inference for choosing and marking
        marked = [t.name for t in float_tensors(proto, types)] if mark == "all" else list(mark)
        self.marked = marked
        light, weights = split_weights(proto)
        run_model = mark_outputs(light, marked, types=types) if marked else light
        opts = ort.SessionOptions()
        if weights:  # copied into the session as it loads: freed when __init__ returns
            opts.add_external_initializers(
                list(weights), [ort.OrtValue.ortvalue_from_numpy(w) for w in weights.values()]
            )
        opts.log_severity_level = 3
        # Graph-optimiser notes ("UnsqueezeElimination cannot remove node") go to ONNX Runtime's
        # process-wide logger, not the session's: quiet it too, unless trtq logs at DEBUG.
        if not logging.getLogger("trtq").isEnabledFor(logging.DEBUG):
            ort.set_default_logger_severity(3)
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self.session = ort.InferenceSession(
                run_model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types for unsupported models
            where = self.source or "model"
            raise InputError(f"{where}: ONNX Runtime cannot load it: {first_line(exc)}") from exc
        self._inputs = real_inputs(proto)
        self._outputs = [value_info(o) for o in proto.graph.output]
        self._fetchable = {o.name for o in self.session.get_outputs()}

    @classmethod
    def build(
        cls,
        model: str | os.PathLike | onnx.ModelProto,
        spec: BuildSpec | None = None,
        tools: BuildTools | None = None,
        *,
        mark: Sequence[str] | str = (),
        threads: int | None = None,
    ) -> OnnxRuntimeRunner:
        """FP32 as given (graph optimisations on); FP16/INT8/pins emulated by ``tools.emulate``
        and run node for node: ONNX Runtime's Q/DQ propagation and Conv/Add fusions would move the
        rounding points the emulation placed."""
        spec = spec or BuildSpec()
        if spec.precision == "fp32" and not spec.pins:
            return cls(model, mark=mark, threads=threads)
        if tools is None:
            raise InputError(
                f"{spec.precision} on ONNX Runtime is emulated: build tools are needed (internal)"
            )
        proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
        return cls(tools.emulate(proto, spec), mark=mark, threads=threads, optimize=False)

    def _run_impl(self, feeds: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(outputs, dict(feeds))
        except Exception as exc:
            raise TrtqError(f"ONNX Runtime failed to run the model: {first_line(exc)}") from exc
        return dict(zip(outputs, values, strict=True))

    def _close_impl(self) -> None:
        self.session = None  # type: ignore[assignment]


def run_marked(
    model: onnx.ModelProto,
    names: Sequence[str],
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    threads: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """``names`` of ``model`` for each batch, node for node (optimisations off: the values the
    graph computes, as the precision passes measure them); one session for all batches."""
    marked = list(dict.fromkeys(names))
    with OnnxRuntimeRunner(model, mark=marked, optimize=False, threads=threads) as runner:
        for feeds in batches:
            yield runner.run(feeds, marked)
