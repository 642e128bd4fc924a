// Generated from chapters/08-longformer.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 8: Longformer attention — a dilated
/// two-sided window plus symmetric global tokens.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/masked_attention.hpp"
#include "attn/self_attention.hpp"
#include "attn/sliding_window.hpp"

namespace attn {

// ⟨Test whether a key is in the dilated window⟩ 08-longformer.md:57
/// @brief Whether key j lies in query i's dilated window:
/// |i − j| ≤ w·dilation and dilation divides i − j.
/// @param w window on each side, counted in steps of `dilation`; @param dilation ≥ 1
inline bool in_dilated_window(std::size_t i, std::size_t j, std::size_t w,
                              std::size_t dilation)
{
    const std::size_t gap = i > j ? i - j : j - i;
    return gap % dilation == 0 && gap / dilation <= w;
}

namespace detail {

// ⟨Check the arguments of the pattern⟩ 08-longformer.md:72
/// @brief Throw std::invalid_argument unless dilation ≥ 1.
inline void check_dilation(std::size_t dilation, const std::string& who)
{
    if (dilation == 0)
        throw std::invalid_argument(who + ": dilation must be at least 1");
}

/// @brief flag[i] is true when token i is global;
/// throws std::invalid_argument for a position ≥ n.
/// @param global positions with global attention, in any order, repeats allowed
/// @return n flags
inline std::vector<bool> global_flags(std::size_t n,
                                      const std::vector<std::size_t>& global,
                                      const std::string& who)
{
    std::vector<bool> flag(n, false);
    for (std::size_t g : global) {
        if (g >= n)
            throw std::invalid_argument(
                who + ": global position " + std::to_string(g) +
                " is past the last token (n = " + std::to_string(n) + ")");
        flag[g] = true;
    }
    return flag;
}

/// The positions whose flag is set, in increasing order, each once.
inline std::vector<std::size_t> flagged_positions(const std::vector<bool>& flag)
{
    std::vector<std::size_t> positions;
    for (std::size_t i = 0; i < flag.size(); ++i)
        if (flag[i]) positions.push_back(i);
    return positions;
}

}  // namespace detail

// ⟨Build the Longformer mask⟩ 08-longformer.md:112
/// @brief Longformer's attention pattern as a dense n×n mask (for
/// figures and tests; the kernel never builds it). Query i may attend
/// key j when |i − j| ≤ w·dilation and dilation divides i − j (the
/// window, two-sided, w keys on each side), or when i or j is global.
/// @param n        number of tokens
/// @param w        window on each side, in steps of `dilation`
/// @param dilation gap between window keys, ≥ 1 (1: no gaps)
/// @param global   positions with global attention (attend to all, attended by all)
/// @return mask, n×n, true where query i may attend key j
inline Mask longformer_mask(std::size_t n, std::size_t w, std::size_t dilation,
                            const std::vector<std::size_t>& global)
{
    detail::check_dilation(dilation, "longformer_mask");
    const std::vector<bool> is_global =
        detail::global_flags(n, global, "longformer_mask");
    Mask mask = xt::zeros<bool>({n, n});  // n×n
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j)
            mask(i, j) =
                in_dilated_window(i, j, w, dilation) || is_global[i] || is_global[j];
    return mask;
}

namespace detail {

// ⟨Gather rows of a matrix⟩ 08-longformer.md:198
/// Rows `rows` of X, in that order, as a new contiguous matrix: rows.size()×X.shape(1).
template <class T>
xt::xtensor<T, 2> gather_rows(const xt::xtensor<T, 2>& X,
                              const std::vector<std::size_t>& rows)
{
    const std::size_t width = X.shape(1);
    xt::xtensor<T, 2> gathered = xt::empty<T>({rows.size(), width});
    for (std::size_t r = 0; r < rows.size(); ++r)
        std::copy_n(X.data() + rows[r] * width, width, gathered.data() + r * width);
    return gathered;
}

// ⟨Attend from listed queries to listed keys⟩ 08-longformer.md:212
/// Attention of the queries Q[queries] over the keys K[keys] and values V[keys],
/// written to O[queries]. `allowed(a, c)` says whether the a-th listed query may attend
/// the c-th listed key; a key listed twice would be counted twice, so `keys` must not
/// repeat. Memory: O((|queries| + d)·|keys|). Adds the |queries|·|keys| scores computed
/// to `visits` if given.
template <class T, class Allowed>
void attend_listed(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                   const xt::xtensor<T, 2>& V, const std::vector<std::size_t>& queries,
                   const std::vector<std::size_t>& keys, Allowed allowed,
                   xt::xtensor<T, 2>& O, KeyVisits* visits)
{
    const xt::xtensor<T, 2> Q_listed = gather_rows(Q, queries);               // q×d_k
    // d_k×c, contiguous for BLAS
    const xt::xtensor<T, 2> K_listed_t = xt::transpose(gather_rows(K, keys));
    const xt::xtensor<T, 2> V_listed = gather_rows(V, keys);                   // c×d_v
    xt::xtensor<T, 2> scores = xt::linalg::dot(Q_listed, K_listed_t);         // q×c
    if (visits) visits->scores += scores.size();  // every one computed, allowed or not
    // ⟨Scale the allowed scores and hide the others⟩ 08-longformer.md:246
    const T scale = T(1) / std::sqrt(T(Q.shape(1)));
    const T hidden = -std::numeric_limits<T>::infinity();
    for (std::size_t a = 0; a < queries.size(); ++a) {
        T* scores_a = scores.data() + a * keys.size();
        for (std::size_t c = 0; c < keys.size(); ++c)
            scores_a[c] = allowed(a, c) ? scores_a[c] * scale : hidden;
    }
    const xt::xtensor<T, 2> weights = softmax_allowed_rows(scores);  // q×c, chapter 2
    const xt::xtensor<T, 2> O_listed = xt::linalg::dot(weights, V_listed);     // q×d_v
    const std::size_t d_v = V.shape(1);
    for (std::size_t a = 0; a < queries.size(); ++a)
        std::copy_n(O_listed.data() + a * d_v, d_v, O.data() + queries[a] * d_v);
}

// ⟨Attend within the window, block by block⟩ 08-longformer.md:272
/// Window rows of the non-global queries among `positions` (one subsequence r, r +
/// dilation, ...), in blocks of `block` consecutive queries. Writes those rows of O.
template <class T>
void attend_window_blocks(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                          const xt::xtensor<T, 2>& V,
                          const std::vector<std::size_t>& positions, std::size_t w,
                          std::size_t dilation, const std::vector<bool>& is_global,
                          const std::vector<std::size_t>& global_positions,
                          xt::xtensor<T, 2>& O, KeyVisits* visits)
{
    const std::size_t count = positions.size(), block = std::max<std::size_t>(w, 32);
    for (std::size_t t0 = 0; t0 < count; t0 += block) {
        // this block: positions[t0, t1)
        const std::size_t t1 = std::min(count, t0 + block);
        // ⟨List the block's queries⟩ 08-longformer.md:299
        // positions, and their indices t in the subsequence
        std::vector<std::size_t> queries, steps;
        for (std::size_t t = t0; t < t1; ++t)
            if (!is_global[positions[t]]) queries.push_back(positions[t]), steps.push_back(t);
        if (queries.empty()) continue;
        // ⟨List the keys the block can see⟩ 08-longformer.md:313
        // span: positions[u0, u1)
        const std::size_t u0 = t0 > w ? t0 - w : 0, u1 = std::min(count, t1 + w);
        const std::size_t span = u1 - u0;
        std::vector<std::size_t> keys(positions.begin() + u0, positions.begin() + u1);
        for (std::size_t g : global_positions) {
            const bool in_span = g % dilation == positions[0] % dilation &&
                                 g >= positions[u0] && g <= positions[u1 - 1];
            if (!in_span) keys.push_back(g);
        }
        attend_listed(Q, K, V, queries, keys, [&](std::size_t a, std::size_t c) {
            if (c >= span) return true;  // a global key outside the span
            // key and query, in steps along the subsequence
            const std::size_t u = u0 + c, t = steps[a];
            return (u > t ? u - t : t - u) <= w || is_global[keys[c]];
        }, O, visits);
    }
}

// ⟨Give the global tokens full rows⟩ 08-longformer.md:334
/// Full rows for the global queries: each attends every key. Groups of
/// 32 queries keep the score matrix at 32×n. Writes those rows of O.
template <class T>
void attend_globally(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                     const xt::xtensor<T, 2>& V,
                     const std::vector<std::size_t>& global_positions,
                     xt::xtensor<T, 2>& O, KeyVisits* visits)
{
    std::vector<std::size_t> every_key(K.shape(0));
    std::iota(every_key.begin(), every_key.end(), std::size_t(0));
    const auto everything = [](std::size_t, std::size_t) { return true; };
    for (std::size_t g0 = 0; g0 < global_positions.size(); g0 += 32) {
        const std::size_t g1 = std::min(global_positions.size(), g0 + 32);
        const std::vector<std::size_t> group(global_positions.begin() + g0,
                                             global_positions.begin() + g1);
        attend_listed(Q, K, V, group, every_key, everything, O, visits);
    }
}

}  // namespace detail

// ⟨Compute Longformer attention with separate global projections⟩ 08-longformer.md:379
/// @brief Longformer attention whose global rows use their own projections
/// (Beltagy et al. 2020, §3.1). Window rows: softmax over the window and the
/// global keys of Q·Kᵀ/√d_k, averaging V. Global rows (i in `global`):
/// softmax(Q_g[i]·K_gᵀ/√d_k)·V_g over every key. Never builds an n×n matrix:
/// O(n·(w + g)·d) time for the window rows, O(g·n·d) for the global rows.
/// @param Q, K, V       window projections, n×d_k, n×d_k, n×d_v
/// @param Q_g, K_g, V_g global projections, n×d_k, n×d_k, n×d_v
/// @param w             window on each side, in steps of `dilation`;
///                      clamped to n
/// @param dilation      gap between window keys, ≥ 1 (0: std::invalid_argument);
///                      clamped to n
/// @param global        positions with global attention, each < n
///                      (std::invalid_argument otherwise); repeats count once
/// @param visits        optional: adds the query–key scores computed (chapter 6)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> longformer_attention_global_projections(
    const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
    const xt::xtensor<T, 2>& Q_g, const xt::xtensor<T, 2>& K_g,
    const xt::xtensor<T, 2>& V_g, std::size_t w, std::size_t dilation,
    const std::vector<std::size_t>& global, KeyVisits* visits = nullptr)
{
    // ⟨Check the Longformer operands⟩ 08-longformer.md:433
    check_attention_shapes(Q, K, V);
    check_attention_shapes(Q_g, K_g, V_g);
    detail::check_dilation(dilation, "longformer_attention");
    const std::size_t n = Q.shape(0);
    if (K.shape(0) != n)
        throw std::invalid_argument(
            "longformer_attention: the pattern is over one sequence, so K needs n = " +
            std::to_string(n) + " rows, not " + std::to_string(K.shape(0)));
    if (Q_g.shape() != Q.shape() || K_g.shape() != K.shape() || V_g.shape() != V.shape())
        throw std::invalid_argument(
            "longformer_attention: the global projections must have the shapes of Q, K, V");
    // past the sequence a window or a dilation allows the same keys as n: clamp
    dilation = std::min(dilation, std::max<std::size_t>(n, 1));
    w = std::min(w, n);
    const std::vector<bool> is_global =
        detail::global_flags(n, global, "longformer_attention");
    const std::vector<std::size_t> global_positions =
        detail::flagged_positions(is_global);             // sorted, each once
    xt::xtensor<T, 2> O = xt::zeros<T>({n, V.shape(1)});  // n×d_v
    for (std::size_t r = 0; r < std::min(dilation, n); ++r) {
        std::vector<std::size_t> positions;  // the subsequence r, r + dilation, ...
        for (std::size_t i = r; i < n; i += dilation) positions.push_back(i);
        detail::attend_window_blocks(Q, K, V, positions, w, dilation, is_global,
                                     global_positions, O, visits);
    }
    detail::attend_globally(Q_g, K_g, V_g, global_positions, O, visits);
    return O;
}

// ⟨Compute Longformer attention⟩ 08-longformer.md:452
/// @brief Longformer attention (Beltagy et al. 2020): a dilated sliding window
/// plus symmetric global tokens. Equals scaled_dot_product_attention(Q, K, V,
/// longformer_mask(n, w, dilation, global)) but never builds an n×n matrix: a
/// banded block kernel, O(n·(w + g)·d), plus g full global rows, O(g·n·d).
/// @param Q        queries, n×d_k
/// @param K        keys, n×d_k
/// @param V        values, n×d_v
/// @param w        window on each side (two-sided: 2w + 1 window keys), in steps
///                 of `dilation`; clamped to n
/// @param dilation gap between window keys, ≥ 1 (0 throws std::invalid_argument);
///                 clamped to n
/// @param global   positions with global attention, each < n
///                 (std::invalid_argument otherwise); repeats count once
/// @param visits   optional: adds the query–key scores computed (chapter 6's KeyVisits)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> longformer_attention(const xt::xtensor<T, 2>& Q,
                                       const xt::xtensor<T, 2>& K,
                                       const xt::xtensor<T, 2>& V, std::size_t w,
                                       std::size_t dilation,
                                       const std::vector<std::size_t>& global,
                                       KeyVisits* visits = nullptr)
{
    return longformer_attention_global_projections(Q, K, V, Q, K, V, w, dilation,
                                                   global, visits);
}

}  // namespace attn
