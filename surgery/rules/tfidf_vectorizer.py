"""``TfIdfVectorizer`` on integer tokens with a static row length -> window comparisons, sums and a
constant ``MatMul``, exact.

What it counts (ONNX reference and ONNX Runtime): for every skip distance ``d`` in
``1..max_skip_count+1`` and every pool n-gram ``g`` of a length ``n`` in
``[min_gram_length, max_gram_length]`` (unigrams only at ``d = 1``), the number of start positions
``i`` with ``i + (n-1)*d < C`` and ``x[i + k*d] == g[k]`` for all ``k``; each count is added to
output column ``ngram_indexes[g]``; then ``TF`` gives the counts, ``IDF`` ``weights[j]`` (or 1)
where the count is positive, ``TFIDF`` ``weights[j] * count`` (or the count); ONNX Runtime reads
``weights`` in pool order (the weight of n-gram ``k`` goes to column ``ngram_indexes[k]``; it
requires as many weights as n-grams), and so does this rule (distinct ``ngram_indexes`` required).

The rewrite, per ``(d, n)``: the ``n`` strided ``Slice``s of the row stacked on a new axis
(``[.., L, 1, n]``) are compared (``Equal``) with the constant pool n-grams of length ``n``
(``[G, n]``); a window matches when all ``n`` positions do (``ReduceMin`` of the 0/1 values), and the
matches are summed over the positions (``ReduceSum``): integer counts, exact in FP32. The counts of
all ``(d, n)`` are concatenated and multiplied by a constant 0/1 matrix that sends each pool
n-gram to its output column (``MatMul``: sums of at most ``C * (max_skip_count+1)`` ones, exact),
then weighted by the mode. Conditions: INT32/INT64 input ``[C]`` or ``[B, C]`` with static ``C >= 1``
(STRING input has no TensorRT type: no rewrite), integer pool, the comparison tensors at most
2**26 elements.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from trtq.surgery.graph_util import NameMaker, add_node
from trtq.surgery.rule import Match, Rule, register_rule
from trtq.surgery.rules._qlinear import const0

MAX_ELEMENTS = 2**26


def _attr(node: gs.Node, name: str, default=None):
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def _pool_by_length(node: gs.Node) -> dict[int, list[tuple[tuple[int, ...], int]]] | None:
    """{n: [(n-gram, output column), ...]} for the lengths that are counted."""
    pool = _attr(node, "pool_int64s")
    counts = list(_attr(node, "ngram_counts", []))
    indexes = list(_attr(node, "ngram_indexes", []))
    if pool is None or not counts:
        return None
    pool = [int(v) for v in pool]
    lo, hi = int(_attr(node, "min_gram_length", 1)), int(_attr(node, "max_gram_length", 1))
    out: dict[int, list] = {}
    gram_id = 0
    for size, start in enumerate(counts, start=1):
        end = counts[size] if size < len(counts) else len(pool)
        for k in range((end - start) // size):
            gram = tuple(pool[start + k * size : start + (k + 1) * size])
            if lo <= size <= hi:
                out.setdefault(size, []).append((gram, int(indexes[gram_id])))
            gram_id += 1
    return out


def _plan(node: gs.Node) -> dict | None:
    x = node.inputs[0]
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or len(shape) not in (1, 2) or not isinstance(shape[-1], int) or shape[-1] < 1:
        return None
    if dtype is None or np.dtype(dtype) not in (np.dtype(np.int32), np.dtype(np.int64)):
        return None
    grams = _pool_by_length(node)
    mode = _attr(node, "mode")
    if grams is None or mode not in ("TF", "IDF", "TFIDF"):
        return None
    c = int(shape[-1])
    rows = int(shape[0]) if len(shape) == 2 and isinstance(shape[0], int) else 1
    skips = int(_attr(node, "max_skip_count", 0)) + 1
    lo, hi = int(_attr(node, "min_gram_length", 1)), int(_attr(node, "max_gram_length", 1))
    steps = []
    for d in range(1, skips + 1):
        for n in range(max(lo, 1 if d == 1 else 2), hi + 1):
            if n in grams and (n - 1) * d < c:
                steps.append((d, n))
                if rows * (c - (n - 1) * d) * len(grams[n]) * n > MAX_ELEMENTS:
                    return None
    indexes = [int(v) for v in _attr(node, "ngram_indexes", [0])]
    width = max(indexes) + 1
    weights = _attr(node, "weights")
    if weights is not None:  # ORT weights the n-gram (pool order): column ngram_indexes[k] gets weights[k]
        if len(weights) != len(indexes) or len(set(indexes)) != len(indexes):
            return None
        by_column = np.zeros(width, np.float32)
        by_column[indexes] = np.asarray(weights, np.float32)
        weights = by_column
    return {"grams": grams, "steps": steps, "c": c, "rank": len(shape), "width": width, "mode": mode,
            "weights": None if weights is None else np.asarray(weights, np.float32)}  # fmt: skip


@register_rule
class TfIdfVectorizerToCounts(Rule):
    name = "tfidf_vectorizer"
    summary = (
        "TfIdfVectorizer on integer tokens (static length) -> window Equal + ReduceMin/ReduceSum + MatMul"
    )
    order = 59
    rewrites = ("TfIdfVectorizer",)

    def match(self, graph: gs.Graph) -> list[Match]:
        return [
            self._match([n], "TfIdfVectorizer is not supported by TensorRT's ONNX parser")
            for n in graph.nodes
            if n.op == "TfIdfVectorizer" and (n.domain or "") in ("", "ai.onnx") and graph.opset >= 11
            and _plan(n) is not None
        ]  # fmt: skip

    def rewrite(self, graph: gs.Graph, found: list[gs.Node], match: Match) -> bool:
        (node,) = found
        plan = _plan(node)
        if plan is None:
            return False
        names = NameMaker(graph)
        base, opset = node.name, graph.opset
        x = node.inputs[0]
        dtype = np.dtype(x.dtype)
        last = plan["rank"]  # the window axis is appended after the row axis

        def op(kind, inputs, attrs=None, tag="", out_dtype=np.float32):
            out = gs.Variable(names(f"{base}_{tag or kind.lower()}"), dtype=out_dtype)
            add_node(graph, names, kind, inputs, [out], attrs, base=f"{base}_{tag or kind.lower()}")
            return out

        def i64(values, tag):
            return const0(names, f"{base}_{tag}", np.array(values, np.int64))

        def reduce(kind, t, axis, tag):
            if opset >= 18 or kind == "ReduceSum" and opset >= 13:
                return op(kind, [t, i64([axis], f"{tag}_axes")], {"keepdims": 0}, tag)
            return op(kind, [t], {"axes": [axis], "keepdims": 0}, tag)

        def unsqueeze(t, axis, tag, out_dtype):
            if opset >= 13:
                return op("Unsqueeze", [t, i64([axis], f"{tag}_axes")], tag=tag, out_dtype=out_dtype)
            return op("Unsqueeze", [t], {"axes": [axis]}, tag, out_dtype)

        counts, columns = [], []
        for d, n in plan["steps"]:
            grams = plan["grams"][n]
            length = plan["c"] - (n - 1) * d
            parts = []
            for k in range(n):
                part = op("Slice", [x, i64([k * d], f"s{d}_{n}_{k}"), i64([k * d + length], f"e{d}_{n}_{k}"),
                                    i64([last - 1], "row_axis")], tag=f"win{d}_{n}_{k}", out_dtype=dtype)  # fmt: skip
                parts.append(unsqueeze(part, last, f"win{d}_{n}_{k}_u", dtype))
            windows = parts[0] if n == 1 else op("Concat", parts, {"axis": last}, f"windows{d}_{n}", dtype)
            windows = unsqueeze(windows, last, f"windows{d}_{n}_u", dtype)  # [.., L, 1, n]
            pool = const0(names, f"{base}_pool{n}", np.array([g for g, _ in grams], dtype))  # [G, n]
            equal = op("Equal", [windows, pool], tag=f"eq{d}_{n}", out_dtype=np.bool_)
            hits = op("Cast", [equal], {"to": 1}, f"eqf{d}_{n}")
            whole = reduce("ReduceMin", hits, last + 1, f"all{d}_{n}")  # [.., L, G]
            counts.append(reduce("ReduceSum", whole, last - 1, f"count{d}_{n}"))  # [.., G]
            columns += [col for _, col in grams]
        if not counts:  # no n-gram fits in a row: all counts are 0 (a [.., 1] zero column)
            xf = op("Cast", [x], {"to": 1}, "tokens_f")
            if opset >= 13:
                row_sum = op("ReduceSum", [xf, i64([last - 1], "sum_axes")], {"keepdims": 1}, "row_sum")
            else:
                row_sum = op("ReduceSum", [xf], {"axes": [last - 1], "keepdims": 1}, "row_sum")
            counts = [op("Mul", [row_sum, const0(names, f"{base}_nothing", np.float32(0))], tag="no_counts")]
            columns = [0]
        total = counts[0] if len(counts) == 1 else op("Concat", counts, {"axis": last - 1}, "counts")
        onehot = np.zeros((len(columns), plan["width"]), np.float32)
        if plan["steps"]:
            onehot[np.arange(len(columns)), columns] = 1.0
        freq = op("MatMul", [total, const0(names, f"{base}_columns", onehot)], tag="freq")
        out = node.outputs[0]
        node.outputs.clear()
        out.dtype = np.float32
        w = plan["weights"]
        if plan["mode"] == "TF" or (plan["mode"] == "TFIDF" and w is None):
            add_node(graph, names, "Identity", [freq], [out], base=f"{base}_tf")
        elif plan["mode"] == "TFIDF":
            add_node(
                graph, names, "Mul", [freq, const0(names, f"{base}_weights", w)], [out], base=f"{base}_tfidf"
            )
        else:
            present = op("Greater", [freq, const0(names, f"{base}_zero", np.float32(0))], tag="present",
                         out_dtype=np.bool_)  # fmt: skip
            value = const0(names, f"{base}_weights", w if w is not None else np.float32(1))
            add_node(graph, names, "Where", [present, value, const0(names, f"{base}_none", np.float32(0))], [out],
                     base=f"{base}_idf")  # fmt: skip
        return True
