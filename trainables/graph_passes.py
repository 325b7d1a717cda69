"""Rewrites of a traced training graph before Inductor compiles it, for the small GEMMs that
MKL runs slowly on one CPU core.

Measured on cardio's step (batch 350, MLP 12-64-32-2; docs/benchmarks.md, "(a) Epoch time"):

- A GEMM with an output side of at most ``THIN`` entries, such as the logits layer's
  350x32 @ 32x2 (15 us, 3 GFLOP/s), becomes a multiply and a sum, which Inductor fuses with the
  elementwise kernels around it.
- An ``mm`` with a narrow output (at most ``NARROW`` columns and more rows than columns), such as
  the first layer's weight gradient 64x350 @ 350x12 (22 us), is computed transposed,
  ``(B.T @ A.T).T`` (11 us): MKL is fast on wide outputs.

Both compute the same dot products; only the order of the additions in them changes (rounding).
Inductor's own ``decompose_mm_pass`` does the first only for single-row inputs on the CPU, which
matches none of these GEMMs.
"""

from __future__ import annotations

import torch
from torch import fx

aten = torch.ops.aten

THIN = 2
NARROW = 16


def _is_gemm(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target not in (aten.mm.default, aten.addmm.default):
        return False
    # addmm's beta and alpha (both 1 from a Linear) would need scaling; leave any other alone.
    return not node.kwargs and len(node.args) == (2 if node.target is aten.mm.default else 3)


def _as_multiply_and_sum(graph: fx.Graph, node: fx.Node) -> fx.Node:
    if node.target is aten.mm.default:
        (a, b), bias = node.args, None
    else:
        bias, a, b = node.args
    # (m, k, 1) * (1, k, n) summed over k: each entry of the product is one dot product.
    prod = graph.call_function(
        aten.mul.Tensor,
        (graph.call_function(aten.unsqueeze.default, (a, 2)),
         graph.call_function(aten.unsqueeze.default, (b, 0))),
    )  # fmt: skip
    out = graph.call_function(aten.sum.dim_IntList, (prod, [1]))
    return out if bias is None else graph.call_function(aten.add.Tensor, (out, bias))


def _transposed(graph: fx.Graph, node: fx.Node) -> fx.Node:
    a, b = node.args
    bt = graph.call_function(aten.t.default, (b,))
    at = graph.call_function(aten.t.default, (a,))
    out = graph.call_function(aten.t.default, (graph.call_function(aten.mm.default, (bt, at)),))
    # Row-major again, as mm's own result (a gradient handed to an optimizer keeps its
    # parameter's strides); Inductor fuses the copy into the ops that read it.
    return graph.call_function(
        aten.clone.default, (out,), {"memory_format": torch.contiguous_format}
    )


def small_gemms(gm: fx.GraphModule) -> int:
    """Rewrite ``gm``'s thin and narrow GEMMs in place (see the module's text); return how many.
    Needs the ``val`` shapes that ``make_fx`` records on every node."""
    rewritten = 0
    for node in list(gm.graph.nodes):
        if not _is_gemm(node) or "val" not in node.meta:
            continue
        rows, cols = node.meta["val"].shape
        if min(rows, cols) <= THIN:
            make = _as_multiply_and_sum
        elif node.target is aten.mm.default and cols <= NARROW and cols < rows:
            make = _transposed
        else:
            continue
        with gm.graph.inserting_before(node):
            new = make(gm.graph, node)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        rewritten += 1
    if rewritten:
        gm.graph.lint()
        gm.recompile()
    return rewritten
