#!/usr/bin/python3
"""Write the golden data of chapters 1-3 with PyTorch (Debian's python3-torch).

    /usr/bin/python3 tests/golden/generate.py        # rewrites tests/golden/*.txt

Every input is drawn once in float32, so float and double tests start from
exactly the same numbers; each reference output is computed by PyTorch twice,
in float32 (`*_f32.txt`) and in float64 (`*_f64.txt`). Masks use this book's
convention, 1 where query i may attend key j; PyTorch is given their negation
where it expects `True` = not allowed.

File format (what test_support::read_golden reads): '#' comment lines, a line
"rows cols", then rows lines of cols numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SEED = 20240611


def write(name: str, x: torch.Tensor, comment: str) -> None:
    """One matrix as text, every number with enough digits to read back exactly."""
    x = x.detach().to(torch.float64)
    if x.dim() == 1:
        x = x[None, :]
    rows, cols = x.shape
    lines = [f"# {line}" for line in comment.splitlines()]
    lines.append("# written by tests/golden/generate.py; do not edit")
    lines.append(f"{rows} {cols}")
    for r in range(rows):
        lines.append(" ".join(format(float(v), ".17g") for v in x[r]))
    (HERE / name).write_text("\n".join(lines) + "\n")


def draw(gen: torch.Generator, rows: int, cols: int, scale: float = 1.0) -> torch.Tensor:
    """rows×cols of N(0, scale²) rounded to float32, returned as float64 (exact)."""
    return (torch.randn(rows, cols, generator=gen, dtype=torch.float64) * scale).to(torch.float32).to(torch.float64)


def attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """softmax(Q·Kᵀ/√d_k, hidden scores −∞)·V in Q's dtype, written with PyTorch's own operations."""
    scores = Q @ K.T / math.sqrt(Q.shape[1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ V


def write_attention_case(prefix: str, about: str, Q, K, V, allowed=None) -> None:
    write(f"{prefix}_Q.txt", Q, f"{about}: queries Q, n×d_k")
    write(f"{prefix}_K.txt", K, f"{about}: keys K, m×d_k")
    write(f"{prefix}_V.txt", V, f"{about}: values V, m×d_v")
    if allowed is not None:
        write(f"{prefix}_mask.txt", allowed.to(torch.float64), f"{about}: mask, 1 where query i may attend key j")
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        out = attention(Q.to(dtype), K.to(dtype), V.to(dtype), allowed)
        write(f"{prefix}_out_{tag}.txt", out, f"{about}: PyTorch {torch.__version__} output in {dtype}, n×d_v")


def causal(n: int) -> torch.Tensor:
    return torch.tril(torch.ones(n, n, dtype=torch.bool))


def padding(n: int, key_is_real: list[bool]) -> torch.Tensor:
    return torch.tensor(key_is_real, dtype=torch.bool)[None, :].expand(n, -1).clone()


def chapter1(gen: torch.Generator) -> None:
    for case, (n, m, d_k, d_v) in enumerate([(1, 1, 1, 1), (3, 5, 4, 2), (7, 7, 8, 8), (16, 12, 32, 16)]):
        write_attention_case(f"ch01_case{case}", f"chapter 1, n={n} m={m} d_k={d_k} d_v={d_v}",
                             draw(gen, n, d_k), draw(gen, m, d_k), draw(gen, m, d_v))
    # Large logits: entries of size ~100 with d_k = 4 give scores of order 1e4.
    write_attention_case("ch01_large_logits", "chapter 1, scores of order 1e4",
                         draw(gen, 4, 4, 100.0), draw(gen, 6, 4, 100.0), draw(gen, 6, 3))


def left_padded_causal(n: int, pads: int) -> torch.Tensor:
    return causal(n) & padding(n, [False] * pads + [True] * (n - pads))


def chapter2(gen: torch.Generator) -> str:
    write_attention_case("ch02_causal", "chapter 2, causal mask, n=m=6 d_k=4 d_v=3",
                         draw(gen, 6, 4), draw(gen, 6, 4), draw(gen, 6, 3), causal(6))
    write_attention_case("ch02_padding", "chapter 2, padding mask, n=5 m=7 (keys 5, 6 are pads)",
                         draw(gen, 5, 4), draw(gen, 7, 4), draw(gen, 7, 3), padding(5, [True] * 5 + [False] * 2))
    write_attention_case("ch02_causal_large_logits", "chapter 2, causal mask, scores of order 1e4",
                         draw(gen, 5, 4, 100.0), draw(gen, 5, 4, 100.0), draw(gen, 5, 3), causal(5))
    # Left padding under a causal mask: rows 0 and 1 may attend nothing. PyTorch gives NaN there;
    # the data files hold PyTorch's numbers with each NaN written as 0, and which ones were NaN.
    Q, K, V, allowed = draw(gen, 5, 4), draw(gen, 5, 4), draw(gen, 5, 3), left_padded_causal(5, 2)
    about = "chapter 2, left padding (2 pads) under a causal mask: rows 0, 1 fully masked"
    write("ch02_fully_masked_Q.txt", Q, f"{about}: queries Q")
    write("ch02_fully_masked_K.txt", K, f"{about}: keys K")
    write("ch02_fully_masked_V.txt", V, f"{about}: values V")
    write("ch02_fully_masked_mask.txt", allowed.to(torch.float64), f"{about}: mask, 1 where allowed")
    log = [f"PyTorch {torch.__version__}: softmax(QK^T/sqrt(d_k), -inf where masked) V",
           "mask (1 = may attend), left padding (2 pads) under a causal mask:",
           str(allowed.to(torch.int64).numpy()), ""]
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        out = attention(Q.to(dtype), K.to(dtype), V.to(dtype), allowed)
        nan = torch.isnan(out)
        write(f"ch02_fully_masked_out_{tag}.txt", torch.nan_to_num(out, nan=0.0),
              f"{about}: PyTorch {torch.__version__} output in {dtype},\n"
              f"with each NaN written as 0 (ch02_fully_masked_nan_{tag}.txt marks them)")
        write(f"ch02_fully_masked_nan_{tag}.txt", nan.to(torch.float64),
              f"{about}: 1 where PyTorch's {dtype} output is NaN")
        if dtype == torch.float32:
            log += ["output, float32:", str(out), ""]
    mha = torch.nn.MultiheadAttention(4, 1, bias=False, batch_first=True).eval()
    with torch.no_grad():
        out, _ = mha(Q.to(torch.float32)[None], K.to(torch.float32)[None], K.to(torch.float32)[None],
                     attn_mask=~allowed, need_weights=False)
    log += ["torch.nn.MultiheadAttention, same mask (attn_mask = not allowed), output:", str(out[0])]
    return "\n".join(log) + "\n"


def multi_head_case(gen: torch.Generator, prefix: str, about: str, n: int, m: int, d_model: int, heads: int,
                    allowed: torch.Tensor | None) -> None:
    """Inputs and weights in this book's convention, outputs from torch.nn.MultiheadAttention."""
    X_q, X_kv = draw(gen, n, d_model), draw(gen, m, d_model)
    scale = 1.0 / math.sqrt(d_model)
    W = {name: draw(gen, d_model, d_model, scale) for name in ("W_q", "W_k", "W_v", "W_o")}
    write(f"{prefix}_X_q.txt", X_q, f"{about}: X_q, n×d_model")
    write(f"{prefix}_X_kv.txt", X_kv, f"{about}: X_kv, m×d_model")
    for name, w in W.items():
        write(f"{prefix}_{name}.txt", w, f"{about}: {name}, d_model×d_model (multiplies on the right)")
    if allowed is not None:
        write(f"{prefix}_mask.txt", allowed.to(torch.float64), f"{about}: mask, 1 where query i may attend key j")
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        mha = torch.nn.MultiheadAttention(d_model, heads, bias=False, batch_first=True, dtype=dtype).eval()
        with torch.no_grad():
            # PyTorch computes x·Wᵀ: its in_proj_weight rows are q, k, v, each the transpose of ours.
            mha.in_proj_weight.copy_(torch.cat([W["W_q"].T, W["W_k"].T, W["W_v"].T]).to(dtype))
            mha.out_proj.weight.copy_(W["W_o"].T.to(dtype))
            out, weights = mha(X_q.to(dtype)[None], X_kv.to(dtype)[None], X_kv.to(dtype)[None],
                               attn_mask=None if allowed is None else ~allowed,
                               need_weights=True, average_attn_weights=False)
        write(f"{prefix}_out_{tag}.txt", out[0],
              f"{about}: torch.nn.MultiheadAttention(bias=False) {torch.__version__} output in {dtype}, n×d_model")
        for h in range(heads):
            write(f"{prefix}_weights{h}_{tag}.txt", weights[0, h],
                  f"{about}: head {h}'s attention weights from PyTorch in {dtype}, n×m")


def chapter3(gen: torch.Generator) -> None:
    multi_head_case(gen, "ch03_self", "chapter 3, self-attention n=m=5 d_model=8 h=2", 5, 5, 8, 2, None)
    multi_head_case(gen, "ch03_cross", "chapter 3, cross-attention n=4 m=6 d_model=12 h=3", 4, 6, 12, 3, None)
    multi_head_case(gen, "ch03_causal", "chapter 3, causal self-attention n=m=6 d_model=8 h=4", 6, 6, 8, 4,
                    causal(6))


def main() -> None:
    gen = torch.Generator().manual_seed(SEED)
    for old in HERE.glob("ch0[1-3]_*.txt"):
        old.unlink()
    chapter1(gen)
    log = chapter2(gen)
    (HERE / "torch_fully_masked.txt").write_text(log)
    chapter3(gen)
    print(log, end="")


if __name__ == "__main__":
    main()
