"""graph_passes.small_gemms: which GEMMs it rewrites, and that the graph computes the same."""

from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from trainables.graph_passes import small_gemms

aten = torch.ops.aten


def layers(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor,
           b3: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
    h = torch.relu(x @ w1.t())  # 350x12 @ 12x64: wide, kept
    h2 = h @ w2.t()  # 350x64 @ 64x32: kept
    logits = torch.addmm(b3, h2, w3.t())  # 350x32 @ 32x2: thin, multiply and sum
    dw1 = g.t() @ x  # 64x350 @ 350x12: narrow, transposed
    return logits, dw1, h2


def gemms(gm: torch.fx.GraphModule) -> list[tuple[int, ...]]:
    return [
        tuple(n.meta["val"].shape) if "val" in n.meta else ()
        for n in gm.graph.nodes
        if n.op == "call_function" and n.target in (aten.mm.default, aten.addmm.default)
    ]


def test_rewrites_the_thin_and_the_narrow_gemm_and_computes_the_same() -> None:
    torch.manual_seed(0)
    args = (torch.randn(350, 12), torch.randn(64, 12), torch.randn(32, 64),
            torch.randn(2, 32), torch.randn(2), torch.randn(350, 64))  # fmt: skip
    gm = make_fx(layers)(*args)
    want = gm(*args)
    assert sorted(gemms(gm)) == [(64, 12), (350, 2), (350, 32), (350, 64)]

    assert small_gemms(gm) == 2
    # The thin one is gone; the narrow one is now a wide mm; the two others are untouched.
    assert sorted(s for s in gemms(gm) if s) == [(350, 32), (350, 64)]
    assert sum(1 for n in gm.graph.nodes if n.target is aten.mm.default) == 3
    got = gm(*args)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.stride() == w.stride()
        # The sums add in another order: their rounding scales with the entries' size, not with
        # one entry's (a logit near 0 is a sum of terms near 100; MKL's AVX-512 kernels differ
        # from its AVX2 ones there by 2e-5). A wrong rewrite is off by the entries' size.
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * float(w.abs().max()))


def test_leaves_a_graph_without_small_gemms_alone() -> None:
    def wide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    gm = make_fx(wide)(torch.randn(40, 30), torch.randn(30, 20))
    code = gm.code
    assert small_gemms(gm) == 0
    assert gm.code == code
