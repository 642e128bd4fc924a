// Generated from chapters/02-masked-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 2: causal and padding masks, and attention restricted by a mask.

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

#include "attn/self_attention.hpp"

namespace attn {

// ⟨Name the mask type⟩ 02-masked-attention.md:24
/// @brief A mask over the n×m query–key pairs: `true` where query i may attend key j.
using Mask = xt::xtensor<bool, 2>;

// ⟨Build the causal mask⟩ 02-masked-attention.md:51
/// @brief The causal (decoder) mask: query i may attend keys 0..i.
/// @param n number of tokens (queries and keys)
/// @return n×n mask, true on and below the diagonal
inline Mask causal_mask(std::size_t n)
{
    Mask mask = xt::zeros<bool>({n, n});
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j <= i; ++j) mask(i, j) = true;
    return mask;
}

// ⟨Build the padding mask⟩ 02-masked-attention.md:84
/// @brief The padding mask: every query may attend exactly the real (non-padding) keys.
/// @param n_queries  number of queries n
/// @param key_is_real one flag per key (m of them), false for a padding token
/// @return n×m mask whose column j is key_is_real[j]
inline Mask padding_mask(std::size_t n_queries, const std::vector<bool>& key_is_real)
{
    const std::size_t m = key_is_real.size();
    Mask mask = xt::zeros<bool>({n_queries, m});
    for (std::size_t i = 0; i < n_queries; ++i)
        for (std::size_t j = 0; j < m; ++j) mask(i, j) = key_is_real[j];
    return mask;
}

// ⟨Check the shape of a mask⟩ 02-masked-attention.md:108
/// @brief Throw std::invalid_argument unless `mask` is n×m.
inline void check_mask_shape(const Mask& mask, std::size_t n, std::size_t m)
{
    if (mask.shape(0) != n || mask.shape(1) != m)
        throw std::invalid_argument(
            "attention: the mask is " + std::to_string(mask.shape(0)) + "×" +
            std::to_string(mask.shape(1)) + " but there are " + std::to_string(n) +
            " queries and " + std::to_string(m) + " keys; it must be n×m");
}

// ⟨Attend over the allowed keys, one query at a time⟩ 02-masked-attention.md:128
/// @brief Masked attention computed query by query
/// over the allowed keys only (the reference).
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
/// @param mask n×m, true where query i may attend key j
/// @return outputs, n×d_v; a query that may attend nothing gets a zero row
template <class T>
xt::xtensor<T, 2> masked_attention_by_rows(const xt::xtensor<T, 2>& Q,
                                           const xt::xtensor<T, 2>& K,
                                           const xt::xtensor<T, 2>& V, const Mask& mask)
{
    check_attention_shapes(Q, K, V);
    check_mask_shape(mask, Q.shape(0), K.shape(0));
    const std::size_t n = Q.shape(0), m = K.shape(0);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, V.shape(1)});  // n×d_v
    for (std::size_t i = 0; i < n; ++i) {
        std::vector<std::size_t> allowed;  // the keys query i may attend
        for (std::size_t j = 0; j < m; ++j)
            if (mask(i, j)) allowed.push_back(j);
        if (allowed.empty()) continue;  // nothing to attend: the row stays zero
        // |allowed|×d_k
        const xt::xtensor<T, 2> K_i = xt::view(K, xt::keep(allowed), xt::all());
        // |allowed|×d_v
        const xt::xtensor<T, 2> V_i = xt::view(V, xt::keep(allowed), xt::all());
        const xt::xtensor<T, 1> q = xt::row(Q, i);
        xt::row(O, i) = attend_one_query(q, K_i, V_i);
    }
    return O;
}

// ⟨Hide the masked scores⟩ 02-masked-attention.md:164
/// @brief Set every score that `mask` hides to −∞, in place.
/// @param scores n×m; @param mask n×m
template <class T>
void hide_masked_scores(xt::xtensor<T, 2>& scores, const Mask& mask)
{
    const T minus_infinity = -std::numeric_limits<T>::infinity();
    const bool* allowed = mask.data();
    T* s = scores.data();
    for (std::size_t k = 0; k < scores.size(); ++k)
        if (!allowed[k]) s[k] = minus_infinity;
}

// ⟨Normalise the allowed scores of each row⟩ 02-masked-attention.md:209
/// @brief Softmax of each row over its allowed (not −∞) scores; a row with none
/// gives zeros, and a row with a NaN score gives NaN weights (never zeros).
/// @param scores n×m, hidden scores −∞
/// @return weights, n×m
template <class T>
xt::xtensor<T, 2> softmax_allowed_rows(const xt::xtensor<T, 2>& scores)
{
    xt::xtensor<T, 2> weights = softmax_rows(scores);  // chapter 1, n×m
    const std::size_t m = scores.shape(1);
    for (std::size_t i = 0; i < scores.shape(0); ++i) {
        const T* s = scores.data() + i * m;
        if (std::any_of(s, s + m, [](T x) { return std::isnan(x); }))
            std::fill_n(weights.data() + i * m, m, std::numeric_limits<T>::quiet_NaN());
    }
    return weights;
}

// ⟨Compute the masked attention weights⟩ 02-masked-attention.md:230
/// @brief The masked attention weights softmax(Q·Kᵀ/√d_k with hidden scores −∞).
/// @param Q queries, n×d_k; @param K keys, m×d_k
/// @param mask n×m, true where query i may attend key j
/// @return weights, n×m: zero where masked; each row sums
/// to 1, or is all zero if its mask row is all false
template <class T>
xt::xtensor<T, 2> attention_weights(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K, const Mask& mask)
{
    if (Q.shape(1) != K.shape(1))
        throw std::invalid_argument(
            "attention_weights: Q and K need the same width d_k");
    check_mask_shape(mask, Q.shape(0), K.shape(0));
    const xt::xtensor<T, 2> K_t = xt::transpose(K);        // d_k×m, contiguous for BLAS
    xt::xtensor<T, 2> scores = xt::linalg::dot(Q, K_t);   // n×m
    scores *= T(1) / std::sqrt(T(K.shape(1)));
    hide_masked_scores(scores, mask);
    return softmax_allowed_rows(scores);  // a row of −∞ only gives zeros
}

// ⟨Compute masked scaled dot-product attention⟩ 02-masked-attention.md:254
/// @brief Masked scaled dot-product attention: softmax over
/// the allowed keys only, times V. A query whose mask row is
/// all false gets a zero output row (PyTorch 1.13 gives NaN there;
/// scaled_dot_product_attention of PyTorch 2.5 and later, zeros).
/// @param Q queries, n×d_k
/// @param K keys, m×d_k
/// @param V values, m×d_v
/// @param mask n×m, true where query i may attend key j
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> scaled_dot_product_attention(const xt::xtensor<T, 2>& Q,
                                               const xt::xtensor<T, 2>& K,
                                               const xt::xtensor<T, 2>& V,
                                               const Mask& mask)
{
    check_attention_shapes(Q, K, V);
    check_mask_shape(mask, Q.shape(0), K.shape(0));
    const xt::xtensor<T, 2> weights = attention_weights(Q, K, mask);  // n×m
    return xt::linalg::dot(weights, V);                                // n×d_v
}

}  // namespace attn
