// Generated from chapters/01-self-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 1: scaled dot-product self-attention, its reference loops and the
/// stable softmax.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor-blas/xlinalg.hpp>

namespace attn {

// ⟨Check the shapes of Q, K and V⟩ 01-self-attention.md:125
/// @brief Throw std::invalid_argument unless Q is n×d_k, K is m×d_k and V is m×d_v,
/// with m ≥ 1 and d_k ≥ 1 (see "The contract every kernel keeps").
template <class T>
void check_attention_shapes(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                            const xt::xtensor<T, 2>& V)
{
    auto shape = [](const xt::xtensor<T, 2>& x) {
        return std::to_string(x.shape(0)) + "×" + std::to_string(x.shape(1));
    };
    if (Q.shape(1) != K.shape(1))
        throw std::invalid_argument("attention: Q is " + shape(Q) + " but K is " +
                                    shape(K) + "; queries and keys need one width d_k");
    if (K.shape(0) != V.shape(0))
        throw std::invalid_argument("attention: K is " + shape(K) + " but V is " +
                                    shape(V) + "; there must be one value per key");
    if (K.shape(0) == 0)
        throw std::invalid_argument("attention: there are no keys (m = 0)");
    if (K.shape(1) == 0)
        throw std::invalid_argument(
            "attention: queries and keys are empty (d_k = 0), so "
            "the scale 1/√d_k is undefined");
}

// ⟨Attend with one query⟩ 01-self-attention.md:51
/// @brief Attention for the single query `q`, one loop per formula (the reference).
/// @param q  query, d_k
/// @param K  keys, m×d_k
/// @param V  values, m×d_v
/// @return   the output row o = Σ_j a_j v_j, d_v
template <class T>
xt::xtensor<T, 1> attend_one_query(const xt::xtensor<T, 1>& q,
                                   const xt::xtensor<T, 2>& K,
                                   const xt::xtensor<T, 2>& V)
{
    const std::size_t m = K.shape(0), d_k = K.shape(1), d_v = V.shape(1);
    // ⟨Score the query against every key⟩ 01-self-attention.md:71
    std::vector<double> s(m);  // m
    for (std::size_t j = 0; j < m; ++j) {
        double dot = 0;
        for (std::size_t c = 0; c < d_k; ++c) dot += double(q(c)) * double(K(j, c));
        s[j] = dot / std::sqrt(double(d_k));
    }
    // ⟨Turn the scores into weights⟩ 01-self-attention.md:84
    const double s_max = *std::max_element(s.begin(), s.end());
    double total = 0;
    for (double& s_j : s) total += (s_j = std::exp(s_j - s_max));
    for (double& s_j : s) s_j /= total;  // s now holds the weights a_j
    // ⟨Average the values with the weights⟩ 01-self-attention.md:91
    xt::xtensor<T, 1> o = xt::zeros<T>({d_v});  // d_v
    for (std::size_t c = 0; c < d_v; ++c) {
        double acc = 0;
        for (std::size_t j = 0; j < m; ++j) acc += s[j] * double(V(j, c));
        o(c) = static_cast<T>(acc);
    }
    return o;
}

// ⟨Attend with every query, one at a time⟩ 01-self-attention.md:103
/// @brief Attention query by query with attend_one_query: the reference loops.
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> attention_by_rows(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K,
                                    const xt::xtensor<T, 2>& V)
{
    check_attention_shapes(Q, K, V);
    xt::xtensor<T, 2> O = xt::zeros<T>({Q.shape(0), V.shape(1)});  // n×d_v
    for (std::size_t i = 0; i < Q.shape(0); ++i) {
        const xt::xtensor<T, 1> q = xt::row(Q, i);
        xt::row(O, i) = attend_one_query(q, K, V);
    }
    return O;
}

// ⟨Normalise each row with a stable softmax⟩ 01-self-attention.md:244
/// @brief Softmax of every row of `scores`, stable for any finite input.
/// Subtracts each row's maximum before exponentiating; a row that is all −∞
/// (nothing may be attended) gives all zeros instead of NaN; a row with a NaN is NaN.
/// @param scores n×m
/// @return weights, n×m, each row summing to 1 (or all zero)
template <class T>
xt::xtensor<T, 2> softmax_rows(const xt::xtensor<T, 2>& scores)
{
    const std::size_t n = scores.shape(0), m = scores.shape(1);
    xt::xtensor<T, 2> weights = xt::zeros<T>({n, m});  // n×m
    for (std::size_t i = 0; i < n; ++i) {
        const T* s = scores.data() + i * m;
        T* a = weights.data() + i * m;
        T s_max = -std::numeric_limits<T>::infinity();
        bool has_nan = false;
        for (std::size_t j = 0; j < m; ++j)
            std::isnan(s[j]) ? void(has_nan = true)
                             : void(s_max = std::max(s_max, s[j]));
        if (has_nan) {  // a NaN score reaches the whole row, never a quiet zero
            std::fill(a, a + m, std::numeric_limits<T>::quiet_NaN());
            continue;
        }
        if (s_max == -std::numeric_limits<T>::infinity())
            continue;  // fully masked: zeros
        T total = 0;
        for (std::size_t j = 0; j < m; ++j) total += (a[j] = std::exp(s[j] - s_max));
        for (std::size_t j = 0; j < m; ++j)
            a[j] /= total;  // total ≥ 1: the max term is e^0
    }
    return weights;
}

// ⟨Compute the attention weights⟩ 01-self-attention.md:291
/// @brief The attention weights softmax(Q·Kᵀ/√d_k).
/// @param Q queries, n×d_k; @param K keys, m×d_k
/// @return weights, n×m, rows summing to 1
template <class T>
xt::xtensor<T, 2> attention_weights(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K)
{
    const xt::xtensor<T, 2> K_t = xt::transpose(K);  // d_k×m, contiguous for BLAS
    xt::xtensor<T, 2> scores = xt::linalg::dot(Q, K_t);  // n×m
    scores *= T(1) / std::sqrt(T(K.shape(1)));
    return softmax_rows(scores);
}

// ⟨Compute scaled dot-product attention⟩ 01-self-attention.md:306
/// @brief Scaled dot-product attention softmax(Q·Kᵀ/√d_k)·V (Vaswani et al. 2017).
/// @param Q queries, n×d_k
/// @param K keys, m×d_k
/// @param V values, m×d_v
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> scaled_dot_product_attention(const xt::xtensor<T, 2>& Q,
                                               const xt::xtensor<T, 2>& K,
                                               const xt::xtensor<T, 2>& V)
{
    check_attention_shapes(Q, K, V);
    const xt::xtensor<T, 2> weights = attention_weights(Q, K);  // n×m
    return xt::linalg::dot(weights, V);                         // n×d_v
}

}  // namespace attn
