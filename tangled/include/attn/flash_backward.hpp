// Generated from chapters/20-training-at-length.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 20: training at length — the forward pass that keeps each row's
/// log-sum-exp, FlashAttention's tiled backward pass, and chunked attention (Rabe and
/// Staats) between it and chapter 4's dense backward.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor-blas/xblas.hpp>

#include "attn/attention_backward.hpp"
#include "attn/masked_attention.hpp"
#include "attn/self_attention.hpp"
#include "attn/sliding_window.hpp"

namespace attn {

// ⟨Compute the row sums of the softmax's backward pass⟩ 20-training-at-length.md:73
/// @brief D_i = dO_i·O_i, which equals Σ_j P_ij·dP_ij: the row sums the softmax's
/// backward pass needs, from the output alone (FlashAttention's D).
/// @param O the forward pass's output, n×d_v; @param dO its gradient, n×d_v
/// @return D, n
template <class T>
xt::xtensor<T, 1> softmax_backward_offsets(const xt::xtensor<T, 2>& O,
                                           const xt::xtensor<T, 2>& dO)
{
    if (O.shape() != dO.shape())
        throw std::invalid_argument(
            "softmax_backward_offsets: O and dO differ in shape");
    const std::size_t n = O.shape(0), d_v = O.shape(1);
    xt::xtensor<T, 1> D = xt::zeros<T>({n});  // n
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t c = 0; c < d_v; ++c) D(i) += dO(i, c) * O(i, c);
    return D;
}

// ⟨Choose the tile sizes⟩ 20-training-at-length.md:237
/// @brief Tile sizes of the tiled forward and backward passes.
struct AttentionTiles {
    std::size_t query_tile = 64;  ///< B_r, query rows per tile (≥ 1, clamped to n)
    std::size_t key_tile = 64;    ///< B_c, keys per tile (≥ 1, clamped to m)
};

/// @brief What the forward pass keeps for the backward pass: the output and one number
/// per row.
template <class T>
struct FlashForward {
    xt::xtensor<T, 2> O;    ///< n×d_v, softmax(Q·Kᵀ/√d_k)·V
    xt::xtensor<T, 1> lse;  ///< n: L_i = log Σ_j exp(s_ij) over the keys row i sees
};

namespace detail {

// ⟨Check the inputs of the tiled passes⟩ 20-training-at-length.md:460
/// Throw std::invalid_argument unless Q, K, V keep chapter 1's contract, both tile
/// sizes are ≥ 1, and causal attention has n == m.
template <class T>
void check_tiled_inputs(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                        const xt::xtensor<T, 2>& V, bool causal, std::size_t query_tile,
                        std::size_t key_tile)
{
    check_attention_shapes(Q, K, V);
    if (query_tile == 0 || key_tile == 0)
        throw std::invalid_argument("tiled attention: tile sizes must be at least 1");
    if (causal && Q.shape(0) != K.shape(0))
        throw std::invalid_argument("tiled attention: causal needs n == m, not n = " +
                                    std::to_string(Q.shape(0)) +
                                    ", m = " + std::to_string(K.shape(0)));
}

/// Throw std::invalid_argument unless X (named `name`) is rows×cols.
template <class T>
void check_gradient_shape(const xt::xtensor<T, 2>& X, std::size_t rows,
                          std::size_t cols, const std::string& name)
{
    if (X.shape(0) != rows || X.shape(1) != cols)
        throw std::invalid_argument(
            "attention backward: " + name + " is " + std::to_string(X.shape(0)) + "×" +
            std::to_string(X.shape(1)) + ", expected n×d_v = " + std::to_string(rows) +
            "×" + std::to_string(cols));
}

// ⟨Copy rows out and add rows back⟩ 20-training-at-length.md:133
/// Rows [begin, end) of X as a contiguous matrix: one tile's or chunk's operand.
template <class T>
xt::xtensor<T, 2> copy_rows(const xt::xtensor<T, 2>& X, std::size_t begin,
                            std::size_t end)
{
    xt::xtensor<T, 2> rows = xt::empty<T>({end - begin, X.shape(1)});
    std::copy(X.data() + begin * X.shape(1), X.data() + end * X.shape(1), rows.data());
    return rows;
}

/// Add `rows` to the rows of X from `begin` on.
template <class T>
void add_rows(xt::xtensor<T, 2>& X, std::size_t begin, const xt::xtensor<T, 2>& rows)
{
    T* x = X.data() + begin * X.shape(1);
    for (std::size_t k = 0; k < rows.size(); ++k) x[k] += rows.data()[k];
}

// ⟨Compute the weights of a chunk of queries⟩ 20-training-at-length.md:112
/// The weights (c×keys) of the query rows Q_c = rows [i0, i0 + c) against K_c, the keys
/// they may see: all of them, or with `causal` keys [0, i0 + c), key j hidden from
/// query i0 + r when j > i0 + r.
template <class T>
xt::xtensor<T, 2> chunk_weights(const xt::xtensor<T, 2>& Q_c,
                                const xt::xtensor<T, 2>& K_c, bool causal,
                                std::size_t i0)
{
    if (!causal) return attention_weights(Q_c, K_c);  // chapter 1
    Mask mask = xt::zeros<bool>({Q_c.shape(0), K_c.shape(0)});  // c×keys
    for (std::size_t r = 0; r < Q_c.shape(0); ++r)
        for (std::size_t j = 0; j <= i0 + r && j < K_c.shape(0); ++j) mask(r, j) = true;
    return attention_weights(Q_c, K_c, mask);  // chapter 2
}

// ⟨Multiply tiles with BLAS⟩ 20-training-at-length.md:260
/// C = α·op(A)·op(B) + β·C with op(X) = Xᵀ where asked (BLAS gemm; C has the shape of
/// the product). An empty operand gives β·C, and C = 0 for β = 0.
template <class T>
void gemm(const xt::xtensor<T, 2>& A, bool transpose_A, const xt::xtensor<T, 2>& B,
          bool transpose_B, T alpha, T beta, xt::xtensor<T, 2>& C)
{
    if (A.size() == 0 || B.size() == 0) {
        if (beta == T(0)) C.fill(T(0));  // not 0·C: C may hold NaN
        else C *= beta;
        return;
    }
    xt::blas::gemm(A, B, C, transpose_A, transpose_B, alpha, beta);
}

// ⟨Score a tile⟩ 20-training-at-length.md:280
/// The scores S = s·Q_i·K_jᵀ of a tile (B_r×B_c), with −∞ where the causal mask hides
/// key j0 + c from query i0 + r.
template <class T>
xt::xtensor<T, 2> tile_scores(const xt::xtensor<T, 2>& Q_i,
                              const xt::xtensor<T, 2>& K_j, bool causal, std::size_t i0,
                              std::size_t j0)
{
    const T scale = T(1) / std::sqrt(T(Q_i.shape(1)));
    xt::xtensor<T, 2> S = xt::empty<T>({Q_i.shape(0), K_j.shape(0)});  // B_r×B_c
    gemm(Q_i, false, K_j, true, scale, T(0), S);                      // s·Q_i·K_jᵀ
    if (causal)
        for (std::size_t r = 0; r < S.shape(0); ++r)
            for (std::size_t c = 0; c < S.shape(1); ++c)
                if (j0 + c > i0 + r) S(r, c) = -std::numeric_limits<T>::infinity();
    return S;
}

// ⟨Attend with one query tile and keep its log-sum-exp⟩ 20-training-at-length.md:304
/// The forward pass of query rows [i0, i1): online softmax over the key tiles, then
/// O_i = o_i / ℓ_i and L_i = m_i + log ℓ_i written into `out`.
template <class T>
void attend_query_tile_with_lse(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                                const xt::xtensor<T, 2>& V, bool causal,
                                std::size_t key_tile, std::size_t i0, std::size_t i1,
                                FlashForward<T>& out)
{
    const std::size_t rows = i1 - i0, d_v = V.shape(1);
    const xt::xtensor<T, 2> Q_i = copy_rows(Q, i0, i1);                 // B_r×d_k
    std::vector<T> row_max(rows, -std::numeric_limits<T>::infinity());  // m_i
    std::vector<T> row_sum(rows, T(0));                                 // ℓ_i
    xt::xtensor<T, 2> acc = xt::zeros<T>({rows, d_v});  // B_r×d_v: o_i, not yet / ℓ_i
    const std::size_t keys = causal ? i1 : K.shape(0);  // causal: keys j < i1 only
    for (std::size_t j0 = 0; j0 < keys; j0 += key_tile) {
        const std::size_t j1 = std::min(keys, j0 + key_tile);
        // B_r×B_c: the scores, turned into weights in place
        xt::xtensor<T, 2> P = tile_scores(Q_i, copy_rows(K, j0, j1), causal, i0, j0);
        // ⟨Turn the tile's scores into weights and rescale its rows⟩ 20-training-at-length.md:340
        for (std::size_t r = 0; r < rows; ++r) {
            T* p = &P(r, 0);
            // m_i, ℓ_i and o_i (row r of acc, taken by pointer: d_v may be 0)
            SoftmaxRow<T> row{row_max[r], row_sum[r], acc.data() + r * d_v, d_v};
            rescale_state(row, std::max(row.max, *std::max_element(p, p + P.shape(1))));
            for (std::size_t c = 0; c < P.shape(1); ++c) {
                p[c] = std::exp(p[c] - row.max);  // ≤ 1; a hidden key: e^{−∞} = 0
                row.sum += p[c];
            }
        }
        gemm(P, false, copy_rows(V, j0, j1), false, T(1), T(1), acc);  // o += P·V_j
    }
    for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t c = 0; c < d_v; ++c) out.O(i0 + r, c) = acc(r, c) / row_sum[r];
        out.lse(i0 + r) = row_max[r] + std::log(row_sum[r]);  // L_i = m_i + log ℓ_i
    }
}

// ⟨Describe a tiled backward problem⟩ 20-training-at-length.md:380
/// The inputs of the tiled backward pass, checked by the caller.
template <class T>
struct TiledBackward {
    const xt::xtensor<T, 2>& Q;      ///< n×d_k
    const xt::xtensor<T, 2>& K;      ///< m×d_k
    const xt::xtensor<T, 2>& V;      ///< m×d_v
    const xt::xtensor<T, 2>& dO;     ///< n×d_v
    const xt::xtensor<T, 1>& lse;    ///< n: L_i from the forward pass
    const xt::xtensor<T, 1>& D;      ///< n: D_i = dO_i·O_i
    bool causal;
    AttentionTiles tiles;            ///< clamped to the problem
};

// ⟨Backpropagate through one key tile⟩ 20-training-at-length.md:395
/// The backward pass for keys [j0, j1): every query tile that sees them recomputes its
/// weights from L, adds its shares to dK_j and dV_j, and adds its share of dQ to grad.
template <class T>
void backpropagate_key_tile(const TiledBackward<T>& p, std::size_t j0, std::size_t j1,
                            AttentionGradients<T>& grad)
{
    const std::size_t n = p.Q.shape(0), B_r = p.tiles.query_tile;
    const T scale = T(1) / std::sqrt(T(p.Q.shape(1)));
    const xt::xtensor<T, 2> K_j = copy_rows(p.K, j0, j1);  // B_c×d_k
    const xt::xtensor<T, 2> V_j = copy_rows(p.V, j0, j1);  // B_c×d_v
    xt::xtensor<T, 2> dK_j = xt::zeros<T>(K_j.shape());    // B_c×d_k
    xt::xtensor<T, 2> dV_j = xt::zeros<T>(V_j.shape());    // B_c×d_v
    // causal: query tiles ending at or before j0 see none of these keys
    for (std::size_t i0 = p.causal ? j0 / B_r * B_r : 0; i0 < n; i0 += B_r) {
        const std::size_t i1 = std::min(n, i0 + B_r);
        const xt::xtensor<T, 2> Q_i = copy_rows(p.Q, i0, i1);    // B_r×d_k
        const xt::xtensor<T, 2> dO_i = copy_rows(p.dO, i0, i1);  // B_r×d_v
        // ⟨Recompute the tile's weights from the log-sum-exp⟩ 20-training-at-length.md:424
        xt::xtensor<T, 2> P = tile_scores(Q_i, K_j, p.causal, i0, j0);  // B_r×B_c, then weights
        for (std::size_t r = 0; r < P.shape(0); ++r)
            for (std::size_t c = 0; c < P.shape(1); ++c)
                P(r, c) = std::exp(P(r, c) - p.lse(i0 + r));  // P_ij = e^{s_ij − L_i} ≤ 1
        // ⟨Backpropagate through the tile⟩ 20-training-at-length.md:434
        gemm(P, true, dO_i, false, T(1), T(1), dV_j);  // dV_j += Pᵀ·dO_i
        xt::xtensor<T, 2> dS = xt::empty<T>(P.shape());  // B_r×B_c
        gemm(dO_i, false, V_j, true, T(1), T(0), dS);    // dP = dO_i·V_jᵀ
        for (std::size_t r = 0; r < dS.shape(0); ++r)
            for (std::size_t c = 0; c < dS.shape(1); ++c)  // dS = s·P ⊙ (dP − D)
                dS(r, c) = scale * P(r, c) * (dS(r, c) - p.D(i0 + r));
        xt::xtensor<T, 2> dQ_i = xt::empty<T>(Q_i.shape());  // B_r×d_k
        gemm(dS, false, K_j, false, T(1), T(0), dQ_i);       // this tile's share: dS·K_j
        add_rows(grad.dQ, i0, dQ_i);
        gemm(dS, true, Q_i, false, T(1), T(1), dK_j);  // dK_j += dSᵀ·Q_i
    }
    add_rows(grad.dK, j0, dK_j);
    add_rows(grad.dV, j0, dV_j);
}

}  // namespace detail

// ⟨Run attention and its backward pass chunk by chunk⟩ 20-training-at-length.md:160
/// @brief Attention by chunks of c query rows (Rabe and Staats): each chunk is dense
/// attention (chapter 1, or chapter 2's with the causal mask) against the keys it may
/// see, so it holds c×m weights at most.
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
/// @param causal query i attends only keys j ≤ i (needs n == m)
/// @param chunk c ≥ 1 (clamped to n)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> chunked_attention(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K,
                                    const xt::xtensor<T, 2>& V, bool causal = false,
                                    std::size_t chunk = 64)
{
    detail::check_tiled_inputs(Q, K, V, causal, chunk, chunk);
    const std::size_t n = Q.shape(0), m = K.shape(0);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, V.shape(1)});  // n×d_v
    for (std::size_t i0 = 0; i0 < n; i0 += chunk) {
        const std::size_t i1 = std::min(n, i0 + chunk), keys = causal ? i1 : m;
        const xt::xtensor<T, 2> P_c = detail::chunk_weights(
            detail::copy_rows(Q, i0, i1), detail::copy_rows(K, 0, keys), causal, i0);
        detail::add_rows(O, i0, detail::matmul(P_c, detail::copy_rows(V, 0, keys)));
    }
    return O;
}

/// @brief The backward pass of chunked_attention: each chunk recomputes its weights and
/// runs chapter 4's dense backward on them (Rabe and Staats' checkpointed chunks).
/// @param Q, K, V as for chunked_attention; @param dO gradient of the output, n×d_v
/// @param causal as in the forward pass; @param chunk c ≥ 1
/// @return dQ (n×d_k), dK (m×d_k), dV (m×d_v)
template <class T>
AttentionGradients<T> chunked_attention_backward(
    const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
    const xt::xtensor<T, 2>& dO, bool causal = false, std::size_t chunk = 64)
{
    detail::check_tiled_inputs(Q, K, V, causal, chunk, chunk);
    detail::check_gradient_shape(dO, Q.shape(0), V.shape(1), "dO");
    const std::size_t n = Q.shape(0), m = K.shape(0);
    AttentionGradients<T> grad{xt::zeros<T>(Q.shape()), xt::zeros<T>(K.shape()),
                               xt::zeros<T>(V.shape())};
    for (std::size_t i0 = 0; i0 < n; i0 += chunk) {
        const std::size_t i1 = std::min(n, i0 + chunk), keys = causal ? i1 : m;
        const xt::xtensor<T, 2> Q_c = detail::copy_rows(Q, i0, i1);  // c×d_k
        const xt::xtensor<T, 2> K_c = detail::copy_rows(K, 0, keys);  // keys×d_k
        const xt::xtensor<T, 2> V_c = detail::copy_rows(V, 0, keys);  // keys×d_v
        const xt::xtensor<T, 2> P_c = detail::chunk_weights(Q_c, K_c, causal, i0);
        const AttentionGradients<T> g =
            attention_backward(Q_c, K_c, V_c, P_c, detail::copy_rows(dO, i0, i1));
        detail::add_rows(grad.dQ, i0, g.dQ);
        detail::add_rows(grad.dK, 0, g.dK);
        detail::add_rows(grad.dV, 0, g.dV);
    }
    return grad;
}

// ⟨Compute attention and its backward pass in tiles⟩ 20-training-at-length.md:490
/// @brief Exact attention softmax(Q·Kᵀ/√d_k)·V in tiles (chapter 13's algorithm), also
/// returning each row's log-sum-exp for flash_attention_backward; never stores an n×m
/// matrix.
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
/// @param causal query i attends only keys j ≤ i (needs n == m)
/// @param tiles B_r and B_c, each ≥ 1 (clamped to n and m)
/// @return O (n×d_v) and lse (n): L_i = log Σ_j exp(q_i·k_j/√d_k) over the keys i sees
template <class T>
FlashForward<T> flash_attention_lse(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K,
                                    const xt::xtensor<T, 2>& V, bool causal = false,
                                    const AttentionTiles& tiles = {})
{
    detail::check_tiled_inputs(Q, K, V, causal, tiles.query_tile, tiles.key_tile);
    const std::size_t n = Q.shape(0), m = K.shape(0);
    const std::size_t B_r = std::min(tiles.query_tile, n);
    const std::size_t B_c = std::min(tiles.key_tile, m);
    FlashForward<T> out{xt::zeros<T>({n, V.shape(1)}), xt::zeros<T>({n})};
    for (std::size_t i0 = 0; i0 < n; i0 += B_r)
        detail::attend_query_tile_with_lse(Q, K, V, causal, B_c, i0,
                                           std::min(n, i0 + B_r), out);
    return out;
}

/// @brief The backward pass of flash_attention_lse (FlashAttention-2's): weights
/// recomputed tile by tile from the log-sum-exp, never an n×m matrix.
/// @param Q, K, V the forward pass's inputs (n×d_k, m×d_k, m×d_v)
/// @param O  the forward pass's output, n×d_v; @param dO the loss's gradient, n×d_v
/// @param lse the forward pass's log-sum-exps, n
/// @param causal and @param tiles as in the forward pass (tiles need not match it)
/// @return dQ (n×d_k), dK (m×d_k), dV (m×d_v)
template <class T>
AttentionGradients<T> flash_attention_backward(
    const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
    const xt::xtensor<T, 2>& O, const xt::xtensor<T, 2>& dO,
    const xt::xtensor<T, 1>& lse, bool causal = false, const AttentionTiles& tiles = {})
{
    detail::check_tiled_inputs(Q, K, V, causal, tiles.query_tile, tiles.key_tile);
    const std::size_t n = Q.shape(0), m = K.shape(0);
    detail::check_gradient_shape(O, n, V.shape(1), "O");
    detail::check_gradient_shape(dO, n, V.shape(1), "dO");
    if (lse.size() != n)
        throw std::invalid_argument("flash_attention_backward: lse has " +
                                    std::to_string(lse.size()) +
                                    " entries, expected one per query, n = " +
                                    std::to_string(n));
    const xt::xtensor<T, 1> D = softmax_backward_offsets(O, dO);  // n
    const detail::TiledBackward<T> problem{
        Q, K, V, dO, lse, D, causal,
        {std::min(tiles.query_tile, n), std::min(tiles.key_tile, m)}};
    AttentionGradients<T> grad{xt::zeros<T>(Q.shape()), xt::zeros<T>(K.shape()),
                               xt::zeros<T>(V.shape())};
    for (std::size_t j0 = 0; j0 < m; j0 += problem.tiles.key_tile)
        detail::backpropagate_key_tile(problem, j0,
                                       std::min(m, j0 + problem.tiles.key_tile), grad);
    return grad;
}

}  // namespace attn
