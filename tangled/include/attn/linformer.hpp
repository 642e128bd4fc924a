// Generated from chapters/10-linformer.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 10: Linformer — attention through
/// keys and values projected along the sequence.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

#include <xtensor/xtensor.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/random.hpp"
#include "attn/self_attention.hpp"

namespace attn {

// ⟨Draw a random projection⟩ 10-linformer.md:195
/// @brief A k×n random projection along the sequence with independent N(0, 1/k) entries
/// (Johnson–Lindenstrauss scaling: E[EᵀE] = I_n).
/// @param k projected length, ≥ 1 (k > n is allowed: it only adds work)
/// @param n sequence length, ≥ 1; @param seed fixes the draw
/// @return E, k×n; std::invalid_argument if k·n entries would overflow a size
template <class T>
xt::xtensor<T, 2> random_projection(std::size_t k, std::size_t n, std::uint64_t seed)
{
    if (k == 0 || n == 0)
        throw std::invalid_argument("random_projection: k and n must be positive, "
                                    "not k = " + std::to_string(k) + ", n = " +
                                    std::to_string(n));
    if (n > std::numeric_limits<std::size_t>::max() / k / sizeof(T))
        throw std::invalid_argument("random_projection: a " + std::to_string(k) + "×" +
                                    std::to_string(n) + " projection is too big");
    std::mt19937_64 rng(seed);
    return random_normal<T>(k, n, 1.0 / std::sqrt(double(k)), rng);
}

// ⟨Build a mean-pooling projection⟩ 10-linformer.md:222
/// @brief The k×n projection that averages k contiguous segments of the sequence
/// (segment l covers tokens ⌊l·n/k⌋ … ⌊(l+1)·n/k⌋ − 1); the identity when k = n.
/// @param k number of segments, 1 ≤ k ≤ n; @param n sequence length
/// @return the projection, k×n, each row summing to 1
template <class T>
xt::xtensor<T, 2> pooling_projection(std::size_t k, std::size_t n)
{
    if (k == 0 || k > n)
        throw std::invalid_argument("pooling_projection: need 1 ≤ k ≤ n");
    if (n > std::numeric_limits<std::size_t>::max() / k / sizeof(T))
        throw std::invalid_argument("pooling_projection: a " + std::to_string(k) +
                                    "×" + std::to_string(n) + " projection is too big");
    xt::xtensor<T, 2> E = xt::zeros<T>({k, n});  // k×n
    for (std::size_t l = 0; l < k; ++l) {
        const std::size_t begin = l * n / k, end = (l + 1) * n / k;
        for (std::size_t j = begin; j < end; ++j) E(l, j) = T(1) / T(end - begin);
    }
    return E;
}

// ⟨Check the shapes of the projections⟩ 10-linformer.md:248
/// @brief Throw std::invalid_argument unless E and
/// F are both k×m for the m rows of K, with k ≥ 1.
template <class T>
void check_projection_shapes(const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& E,
                             const xt::xtensor<T, 2>& F)
{
    const std::size_t m = K.shape(0);
    auto shape = [](const xt::xtensor<T, 2>& x) {
        return std::to_string(x.shape(0)) + "×" + std::to_string(x.shape(1));
    };
    if (E.shape(1) != m || F.shape(1) != m)
        throw std::invalid_argument("linformer: E is " + shape(E) + " and F is " +
                                    shape(F) + " but there are " + std::to_string(m) +
                                    " keys; both need " + std::to_string(m) +
                                    " columns");
    if (E.shape(0) != F.shape(0) || E.shape(0) == 0)
        throw std::invalid_argument("linformer: E is " + shape(E) + " and F is " +
                                    shape(F) +
                                    "; both need the same number k ≥ 1 of rows");
}

// ⟨Project along the sequence with loops⟩ 10-linformer.md:275
/// @brief P·X by plain loops accumulated in double (the reference for E·K and F·V).
/// @param P projection, k×m; @param X rows to mix, m×d
/// @return k×d
template <class T>
xt::xtensor<T, 2> project_rows_by_loops(const xt::xtensor<T, 2>& P,
                                        const xt::xtensor<T, 2>& X)
{
    const std::size_t k = P.shape(0), m = P.shape(1), d = X.shape(1);
    xt::xtensor<T, 2> Y = xt::zeros<T>({k, d});  // k×d
    for (std::size_t l = 0; l < k; ++l)
        for (std::size_t c = 0; c < d; ++c) {
            double acc = 0;
            for (std::size_t j = 0; j < m; ++j)
                acc += double(P(l, j)) * double(X(j, c));
            Y(l, c) = static_cast<T>(acc);
        }
    return Y;
}

/// @brief Linformer by loops: E·K and F·V by
/// project_rows_by_loops, then attention_by_rows (the reference).
/// @param Q n×d_k; @param K m×d_k; @param V m×d_v; @param E k×m; @param F k×m
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> linformer_attention_by_rows(const xt::xtensor<T, 2>& Q,
                                              const xt::xtensor<T, 2>& K,
                                              const xt::xtensor<T, 2>& V,
                                              const xt::xtensor<T, 2>& E,
                                              const xt::xtensor<T, 2>& F)
{
    check_attention_shapes(Q, K, V);
    check_projection_shapes(K, E, F);
    return attention_by_rows(Q, project_rows_by_loops(E, K),
                             project_rows_by_loops(F, V));
}

// ⟨Attend through projected keys and values⟩ 10-linformer.md:328
/// @brief Linformer attention softmax(Q·(E·K)ᵀ/√d_k)·(F·V) (Wang et al. 2020, §4).
/// @param Q queries, n×d_k
/// @param K keys, m×d_k
/// @param V values, m×d_v
/// @param E key projection, k×m
/// @param F value projection, k×m
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> linformer_attention(const xt::xtensor<T, 2>& Q,
                                      const xt::xtensor<T, 2>& K,
                                      const xt::xtensor<T, 2>& V,
                                      const xt::xtensor<T, 2>& E,
                                      const xt::xtensor<T, 2>& F)
{
    check_attention_shapes(Q, K, V);
    check_projection_shapes(K, E, F);
    const xt::xtensor<T, 2> EK = xt::linalg::dot(E, K);  // k×d_k
    const xt::xtensor<T, 2> FV = xt::linalg::dot(F, V);  // k×d_v
    return scaled_dot_product_attention(Q, EK, FV);      // n×d_v
}

/// @brief Linformer's attention weights softmax(Q·(E·K)ᵀ/√d_k), for plotting.
/// @param Q n×d_k; @param K m×d_k; @param E k×m
/// @return weights, n×k, rows summing to 1
template <class T>
xt::xtensor<T, 2> linformer_weights(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K,
                                    const xt::xtensor<T, 2>& E)
{
    check_attention_shapes(Q, K, K);
    check_projection_shapes(K, E, E);
    const xt::xtensor<T, 2> EK = xt::linalg::dot(E, K);  // k×d_k
    return attention_weights(Q, EK);                     // n×k
}

}  // namespace attn
