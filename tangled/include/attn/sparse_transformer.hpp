// Generated from chapters/07-sparse-transformer.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 7: the Sparse Transformer's strided and fixed patterns (Child
/// et al. 2019), their two heads, and kernels that visit only the allowed keys.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "attn/masked_attention.hpp"
#include "attn/sliding_window.hpp"

namespace attn {

// ⟨Say which keys each head attends⟩ 07-sparse-transformer.md:47
/// Strided head 1: the last ℓ positions, i − ℓ < j ≤ i.
inline bool strided_local_allows(std::size_t i, std::size_t j, std::size_t stride)
{
    return j <= i && i - j < stride;
}

/// Strided head 2: every ℓ-th position back from i, (i − j) mod ℓ = 0.
inline bool strided_stride_allows(std::size_t i, std::size_t j, std::size_t stride)
{
    return j <= i && (i - j) % stride == 0;
}

/// Fixed head 1: the query's own block of ℓ, up to the query.
inline bool fixed_block_allows(std::size_t i, std::size_t j, std::size_t stride)
{
    return j <= i && j / stride == i / stride;
}

/// Fixed head 2: the last c positions of every block (the summaries), up to the query.
inline bool fixed_summary_allows(std::size_t i, std::size_t j, std::size_t stride,
                                 std::size_t c)
{
    return j <= i && j % stride >= stride - c;
}

// ⟨Build a mask from a rule⟩ 07-sparse-transformer.md:74
/// An n×n mask with allowed(i, j) in every cell.
template <class Allowed>
Mask mask_where(std::size_t n, Allowed allowed)
{
    Mask mask = xt::zeros<bool>({n, n});  // n×n
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j <= i; ++j) mask(i, j) = allowed(i, j);
    return mask;
}

/// Throw std::invalid_argument unless ℓ ≥ 1 and 1 ≤ c ≤ ℓ.
inline void check_stride(std::size_t stride, std::size_t c = 1)
{
    if (stride == 0)
        throw std::invalid_argument(
            "sparse transformer: the stride ℓ must be at least 1");
    if (c == 0 || c > stride)
        throw std::invalid_argument(
            "sparse transformer: the summary width c must be in 1..ℓ, got c = " +
            std::to_string(c) + " for ℓ = " + std::to_string(stride));
}

// ⟨Build the strided and fixed masks⟩ 07-sparse-transformer.md:98
/// @brief The strided pattern (Child et al. 2019,
/// §4.2) as a dense mask (for figures and tests only).
/// @param n sequence length; @param stride ℓ ≥ 1
/// @return mask, n×n: j ≤ i and (i − j < ℓ or (i − j) mod ℓ = 0)
inline Mask strided_mask(std::size_t n, std::size_t stride)
{
    check_stride(stride);
    return mask_where(n, [&](std::size_t i, std::size_t j) {
        return strided_local_allows(i, j, stride) ||
               strided_stride_allows(i, j, stride);
    });
}

/// @brief The fixed pattern (Child et al. 2019, §4.3)
/// as a dense mask (for figures and tests only).
/// @param n sequence length; @param stride ℓ ≥ 1, the block
/// length; @param c summary positions per block, 1 ≤ c ≤ ℓ
/// @return mask, n×n: j ≤ i and (⌊j/ℓ⌋ = ⌊i/ℓ⌋ or j mod ℓ ≥ ℓ − c)
inline Mask fixed_mask(std::size_t n, std::size_t stride, std::size_t c)
{
    check_stride(stride, c);
    return mask_where(n, [&](std::size_t i, std::size_t j) {
        return fixed_block_allows(i, j, stride) ||
               fixed_summary_allows(i, j, stride, c);
    });
}

// ⟨Build each head's mask⟩ 07-sparse-transformer.md:130
/// @brief The two heads of the strided pattern: {A⁽¹⁾ local, A⁽²⁾ strided}, each n×n.
inline std::array<Mask, 2> strided_head_masks(std::size_t n, std::size_t stride)
{
    check_stride(stride);
    return {mask_where(n,
                       [&](std::size_t i, std::size_t j) {
                           return strided_local_allows(i, j, stride);
                       }),
            mask_where(n, [&](std::size_t i, std::size_t j) {
                return strided_stride_allows(i, j, stride);
            })};
}

/// @brief The two heads of the fixed pattern:
/// {A⁽¹⁾ own block, A⁽²⁾ summaries}, each n×n.
inline std::array<Mask, 2> fixed_head_masks(std::size_t n, std::size_t stride,
                                            std::size_t c)
{
    check_stride(stride, c);
    return {
        mask_where(n, [&](std::size_t i,
                          std::size_t j) { return fixed_block_allows(i, j, stride); }),
        mask_where(n, [&](std::size_t i, std::size_t j) {
            return fixed_summary_allows(i, j, stride, c);
        })};
}

// ⟨Attend where a pattern allows, one query at a time⟩ 07-sparse-transformer.md:227
/// @brief Attention restricted to the keys j ≤ i with `allowed(i, j)`, by chapter 2's
/// row-by-row reference (O(n²) work).
/// @param Q queries, n×d_k; @param K keys, n×d_k; @param V values, n×d_v
/// @return outputs, n×d_v; a row with no allowed key is zero
template <class T, class Allowed>
xt::xtensor<T, 2> pattern_attention_by_rows(const xt::xtensor<T, 2>& Q,
                                            const xt::xtensor<T, 2>& K,
                                            const xt::xtensor<T, 2>& V, Allowed allowed)
{
    check_self_attention_inputs(Q, K, V);
    return masked_attention_by_rows(Q, K, V, mask_where(Q.shape(0), allowed));
}

// ⟨Regroup rows by their remainder mod the stride⟩ 07-sparse-transformer.md:258
/// Rows of X (n×d) regrouped by position mod ℓ: group r holds
/// positions r, r+ℓ, r+2ℓ, … in order. `group_start[r]` is the
/// row where group r begins (group_start has ℓ+1 entries).
template <class T>
std::vector<T> regroup_by_remainder(const xt::xtensor<T, 2>& X, std::size_t stride,
                                    std::vector<std::size_t>& group_start)
{
    const std::size_t n = X.shape(0), d = X.shape(1);
    group_start.assign(stride + 1, 0);
    for (std::size_t r = 0; r < stride; ++r)
        group_start[r + 1] = group_start[r] + (r < n ? (n - r - 1) / stride + 1 : 0);
    std::vector<T> grouped(n * d);  // n×d, rows in the new order
    for (std::size_t j = 0; j < n; ++j) {
        const std::size_t row = group_start[j % stride] + j / stride;
        std::copy(X.data() + j * d, X.data() + (j + 1) * d, grouped.begin() + row * d);
    }
    return grouped;
}

// ⟨Compute strided attention⟩ 07-sparse-transformer.md:292
/// @brief Strided Sparse Transformer attention: query i attends j ≤ i with i − j < ℓ
/// or (i − j) mod ℓ = 0. Equals scaled_dot_product_attention(Q, K, V,
/// strided_mask(n, ℓ)) in O(n·(ℓ + n/ℓ)) time — O(n√n) for ℓ ≈ √n — and
/// O(n·(d_k + d_v)) memory: it never builds an n×n matrix.
/// @param Q queries, n×d_k; @param K keys, n×d_k; @param V values, n×d_v
/// @param stride ℓ ≥ 1 (0 throws std::invalid_argument); ℓ > n is clamped to n,
/// which allows the same keys (every earlier one, through head 1)
/// @param visits optional: adds the query–key scores computed (the allowed pairs)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> strided_attention(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K,
                                    const xt::xtensor<T, 2>& V, std::size_t stride,
                                    KeyVisits* visits = nullptr)
{
    check_self_attention_inputs(Q, K, V);
    check_stride(stride);
    const std::size_t n = Q.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    stride = std::min(stride, std::max<std::size_t>(n, 1));  // same keys; ℓ + 1 groups
    std::vector<std::size_t> group_start;
    // n×d_k
    const std::vector<T> K_grouped = regroup_by_remainder(K, stride, group_start);
    // n×d_v
    const std::vector<T> V_grouped = regroup_by_remainder(V, stride, group_start);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    OnlineSoftmax<T> row(d_k, d_v);
    for (std::size_t i = 0; i < n; ++i) {
        const T* q = Q.data() + i * d_k;
        const std::size_t first = first_key_in_window(i, stride);  // head 1: first..i
        const std::size_t group = group_start[i % stride];  // head 2: i − ℓ, i − 2ℓ, …
        const std::size_t earlier = i / stride;
        row.reset();
        row.add_run(q, K.data() + first * d_k, V.data() + first * d_v, i + 1 - first);
        row.add_run(q, K_grouped.data() + group * d_k, V_grouped.data() + group * d_v,
                    earlier);  // .data(): V_grouped is empty when d_v = 0
        row.write(O.data() + i * d_v);
    }
    if (visits) visits->scores += row.scores_computed();
    return O;
}

// ⟨Gather the summary rows of every block⟩ 07-sparse-transformer.md:343
/// The last c rows of every complete block of ℓ
/// rows of X (n×d), block after block: (⌊n/ℓ⌋·c)×d.
template <class T>
std::vector<T> gather_summaries(const xt::xtensor<T, 2>& X, std::size_t stride,
                                std::size_t c)
{
    const std::size_t blocks = X.shape(0) / stride, d = X.shape(1);
    std::vector<T> summaries(blocks * c * d);
    for (std::size_t b = 0; b < blocks; ++b) {
        // rows bℓ+ℓ−c … bℓ+ℓ−1
        const T* last_c = X.data() + (b * stride + stride - c) * d;
        std::copy(last_c, last_c + c * d, summaries.begin() + b * c * d);
    }
    return summaries;
}

// ⟨Compute fixed attention⟩ 07-sparse-transformer.md:361
/// @brief Fixed Sparse Transformer attention: query i attends j ≤ i in its own block
/// of ℓ, or with j mod ℓ ≥ ℓ − c (the last c positions of every block).
/// Equals scaled_dot_product_attention(Q, K, V, fixed_mask(n, ℓ, c)) in
/// O(n·(ℓ + c·n/ℓ)) time and O(n·(d_k + d_v)) memory: it never builds an n×n matrix.
/// @param Q queries, n×d_k; @param K keys, n×d_k; @param V values, n×d_v
/// @param stride ℓ ≥ 1, the block length (ℓ > n is one block, safe as it is)
/// @param c summaries per block, 1 ≤ c ≤ ℓ (otherwise std::invalid_argument)
/// @param visits optional: adds the query–key scores computed (the allowed pairs)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> fixed_attention(const xt::xtensor<T, 2>& Q,
                                  const xt::xtensor<T, 2>& K,
                                  const xt::xtensor<T, 2>& V, std::size_t stride,
                                  std::size_t c, KeyVisits* visits = nullptr)
{
    check_self_attention_inputs(Q, K, V);
    check_stride(stride, c);
    const std::size_t n = Q.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    const std::vector<T> K_summaries = gather_summaries(K, stride, c);  // (⌊n/ℓ⌋·c)×d_k
    const std::vector<T> V_summaries = gather_summaries(V, stride, c);  // (⌊n/ℓ⌋·c)×d_v
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    OnlineSoftmax<T> row(d_k, d_v);
    for (std::size_t i = 0; i < n; ++i) {
        const T* q = Q.data() + i * d_k;
        // head 1: first..i
        const std::size_t block = i / stride, first = block * stride;
        row.reset();
        row.add_run(q, K.data() + first * d_k, V.data() + first * d_v, i + 1 - first);
        row.add_run(q, K_summaries.data(), V_summaries.data(), block * c);  // head 2
        row.write(O.data() + i * d_v);
    }
    if (visits) visits->scores += row.scores_computed();
    return O;
}

}  // namespace attn
