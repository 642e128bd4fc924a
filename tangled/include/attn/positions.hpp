// Generated from chapters/15-positions.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 15: positions: sinusoids, T5 buckets, ALiBi, RoPE, biased scores.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/masked_attention.hpp"
#include "attn/self_attention.hpp"

namespace attn {

// ⟨Describe a shape⟩ 15-positions.md:287
namespace detail {

/// "rows×cols" of a matrix, for error messages.
template <class E>
std::string shape_of(const E& X)
{
    return std::to_string(X.shape(0)) + "×" + std::to_string(X.shape(1));
}

}  // namespace detail

// ⟨Compute the frequency of a pair of columns⟩ 15-positions.md:185
/// @brief ω_c = base^(−2c/d), the angle per position of column pair c (of d/2).
inline double rope_frequency(std::size_t c, std::size_t d, double base)
{
    return std::pow(base, -2.0 * double(c) / double(d));
}

// ⟨Write the sinusoidal positions⟩ 15-positions.md:160
/// @brief The sinusoidal positions of Vaswani et al. (2017, §3.5).
/// @param n positions 0 … n−1; @param d width, even
/// @return P, n×d: P(i, 2c) = sin(i·ω_c), P(i, 2c+1) = cos(i·ω_c), ω_c = 10000^(−2c/d)
template <class T>
xt::xtensor<T, 2> sinusoidal_positions(std::size_t n, std::size_t d)
{
    if (d % 2 != 0)
        throw std::invalid_argument("sinusoidal_positions: d = " + std::to_string(d) +
                                    " must be even (sine and cosine pairs)");
    xt::xtensor<T, 2> P = xt::zeros<T>({n, d});  // n×d
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t c = 0; c < d / 2; ++c) {
            const double angle = double(i) * rope_frequency(c, d, 10000.0);
            P(i, 2 * c) = static_cast<T>(std::sin(angle));
            P(i, 2 * c + 1) = static_cast<T>(std::cos(angle));
        }
    return P;
}

// ⟨Add a bias to the scores⟩ 15-positions.md:255
/// @brief softmax(Q·Kᵀ/√d_k + bias) over the keys `mask` allows (positions as a bias).
/// @param Q queries, n×d_k; @param K keys, m×d_k
/// @param bias n×m, added to the scaled scores; @param mask n×m, true where allowed
/// @return weights, n×m: zero where masked; each row sums to 1 (or is all zero)
template <class T>
xt::xtensor<T, 2> biased_attention_weights(const xt::xtensor<T, 2>& Q,
                                           const xt::xtensor<T, 2>& K,
                                           const xt::xtensor<T, 2>& bias,
                                           const Mask& mask)
{
    if (Q.shape(1) != K.shape(1) || K.shape(1) == 0)
        throw std::invalid_argument(
            "biased_attention_weights: Q is " + detail::shape_of(Q) + " and K is " +
            detail::shape_of(K) + "; they need the same width d_k ≥ 1");
    if (bias.shape(0) != Q.shape(0) || bias.shape(1) != K.shape(0))
        throw std::invalid_argument("biased_attention_weights: bias is " +
                                    detail::shape_of(bias) +
                                    ", expected n×m = " + std::to_string(Q.shape(0)) +
                                    "×" + std::to_string(K.shape(0)));
    check_mask_shape(mask, Q.shape(0), K.shape(0));
    const xt::xtensor<T, 2> K_t = xt::transpose(K);      // d_k×m
    xt::xtensor<T, 2> scores = xt::linalg::dot(Q, K_t);  // n×m
    scores *= T(1) / std::sqrt(T(K.shape(1)));
    scores += bias;
    hide_masked_scores(scores, mask);
    return softmax_rows(scores);
}

// ⟨Put a distance in a T5 bucket⟩ 15-positions.md:325
/// @brief T5's bucket of a relative position (Raffel et al. 2020): exact for short
/// distances, logarithmic up to max_distance, one last bucket beyond.
/// @param relative_position j − i, the key's position minus the query's
/// @param bidirectional     half the buckets for keys before, half for keys after
///                          (an encoder); otherwise keys after the query share bucket 0
/// @param num_buckets  B ≥ 2 (≥ 4 when bidirectional)
/// @param max_distance distances from here on share the last bucket; > B/2 (or B/4)
/// @return a bucket in [0, B)
inline std::size_t t5_bucket(std::int64_t relative_position, bool bidirectional,
                             std::size_t num_buckets = 32,
                             std::size_t max_distance = 128)
{
    std::size_t buckets = bidirectional ? num_buckets / 2 : num_buckets, first = 0;
    const std::size_t max_exact = buckets / 2;
    if (max_exact == 0 || max_distance <= max_exact)
        throw std::invalid_argument(
            "t5_bucket: " + std::to_string(num_buckets) + " buckets and max_distance " +
            std::to_string(max_distance) + " leave no exact range");
    std::uint64_t distance = 0;
    if (bidirectional) {
        if (relative_position > 0) first = buckets;  // keys after the query
        distance = relative_position < 0 ? std::uint64_t(-(relative_position + 1)) + 1
                                         : std::uint64_t(relative_position);
    } else {
        distance =
            relative_position < 0 ? std::uint64_t(-(relative_position + 1)) + 1 : 0;
    }
    if (distance < max_exact) return first + std::size_t(distance);
    // ⟨Find the logarithmic bucket⟩ 15-positions.md:367
    const float scaled = std::log(float(distance) / float(max_exact)) /
                         float(std::log(double(max_distance) / double(max_exact))) *
                         float(buckets - max_exact);
    const std::size_t log_bucket = max_exact + std::size_t(scaled);  // truncates, ≥ 0
    return first + std::min(log_bucket, buckets - 1);
}

// ⟨Build the T5 bias of one head⟩ 15-positions.md:377
/// @brief The T5 bias of one head over n positions: B(i, j) = table[bucket(j − i)].
/// @param table one learned scalar per bucket, num_buckets values
/// @return B, n×n
template <class T>
xt::xtensor<T, 2> t5_bias(std::size_t n, const std::vector<T>& table,
                          bool bidirectional, std::size_t max_distance = 128)
{
    xt::xtensor<T, 2> B = xt::zeros<T>({n, n});  // n×n
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j)
            B(i, j) = table[t5_bucket(std::int64_t(j) - std::int64_t(i), bidirectional,
                                      table.size(), max_distance)];
    return B;
}

// ⟨Compute the ALiBi slopes⟩ 15-positions.md:451
/// @brief The ALiBi slopes of h heads (Press et al. 2022): 2^(−8k/h), k = 1 … h, when h
/// is a power of two; otherwise those of the power of two p below h, followed by the
/// first h − p of every other slope of 2p.
/// @return h slopes, steepest first for a power of two
inline std::vector<double> alibi_slopes(std::size_t h)
{
    if (h == 0) throw std::invalid_argument("alibi_slopes: need at least one head");
    auto geometric = [](std::size_t heads) {
        std::vector<double> slopes;
        for (std::size_t k = 1; k <= heads; ++k)
            slopes.push_back(std::pow(2.0, -8.0 * double(k) / double(heads)));
        return slopes;
    };
    std::size_t p = 1;
    while (2 * p <= h) p *= 2;
    std::vector<double> slopes = geometric(p);
    const std::vector<double> finer = geometric(2 * p);
    for (std::size_t k = 0; slopes.size() < h; k += 2) slopes.push_back(finer[k]);
    return slopes;
}

// ⟨Build the ALiBi bias of one head⟩ 15-positions.md:479
/// @brief The ALiBi bias of one head over n positions: B(i, j) = −slope·|i − j|.
/// (The paper's bias for j ≤ i; a causal mask hides the rest.)
/// @return B, n×n
template <class T>
xt::xtensor<T, 2> alibi_bias(std::size_t n, double slope)
{
    xt::xtensor<T, 2> B = xt::zeros<T>({n, n});  // n×n
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j)
            B(i, j) = static_cast<T>(-slope * (i > j ? double(i - j) : double(j - i)));
    return B;
}

// ⟨Name the two RoPE layouts⟩ 15-positions.md:580
/// @brief Which columns RoPE rotates together.
enum class RopeLayout {
    interleaved,   ///< pairs (2c, 2c+1): RoFormer, GPT-J, Meta's Llama code
    split_halves,  ///< pairs (c, c + d/2): GPT-NeoX, Llama in Hugging Face transformers
};

/// @brief The two columns of pair c (of d/2) in a layout.
inline std::pair<std::size_t, std::size_t> rope_pair(std::size_t c, std::size_t d,
                                                     RopeLayout layout)
{
    return layout == RopeLayout::interleaved ? std::make_pair(2 * c, 2 * c + 1)
                                             : std::make_pair(c, c + d / 2);
}

// ⟨Rotate the rows⟩ 15-positions.md:599
namespace detail {

/// Rotate pair c of row i of X by direction·(first_position + i)·θ_c,
/// θ_c = base^(−2c/d).
template <class T>
xt::xtensor<T, 2> rotate_rows(const xt::xtensor<T, 2>& X, std::int64_t first_position,
                              double base, RopeLayout layout, double direction)
{
    const std::size_t n = X.shape(0), d = X.shape(1);
    if (d % 2 != 0)
        throw std::invalid_argument(
            "rope: X is " + detail::shape_of(X) +
            "; RoPE rotates pairs of columns, so d must be even");
    if (!(base > 1))
        throw std::invalid_argument("rope: the base must be greater than 1");
    xt::xtensor<T, 2> Y = X;  // n×d
    for (std::size_t c = 0; c < d / 2; ++c) {
        const double theta = rope_frequency(c, d, base);
        const auto [a, b] = rope_pair(c, d, layout);
        for (std::size_t i = 0; i < n; ++i) {
            // the angle in double: position·θ loses digits in float at large positions
            const double angle =
                direction * double(first_position + std::int64_t(i)) * theta;
            const double cos_a = std::cos(angle), sin_a = std::sin(angle);
            const double x = double(X(i, a)), y = double(X(i, b));
            Y(i, a) = static_cast<T>(x * cos_a - y * sin_a);
            Y(i, b) = static_cast<T>(x * sin_a + y * cos_a);
        }
    }
    return Y;
}

}  // namespace detail

// ⟨Apply rotary position embedding⟩ 15-positions.md:635
/// @brief Rotary position embedding (Su et al., RoFormer): row i of X, at position
/// first_position + i, has pair c of its columns rotated by that position times θ_c.
/// @param X       queries or keys of one head, n×d (d even)
/// @param first_position the position of row 0 (may be negative)
/// @param base    θ_c = base^(−2c/d); 10 000 in RoFormer and Llama 2
/// @param layout  which columns form a pair
/// @return the rotated rows, n×d
template <class T>
xt::xtensor<T, 2> rope(const xt::xtensor<T, 2>& X, std::int64_t first_position,
                       double base = 10000,
                       RopeLayout layout = RopeLayout::split_halves)
{
    return detail::rotate_rows(X, first_position, base, layout, +1.0);
}

/// @brief The backward pass of rope: the gradient with respect to X, given the
/// gradient dY with respect to its output (the inverse rotation, since R⁻¹ = Rᵀ).
/// @param dY n×d; the other arguments as given to rope
/// @return dX, n×d
template <class T>
xt::xtensor<T, 2> rope_backward(const xt::xtensor<T, 2>& dY,
                                std::int64_t first_position, double base = 10000,
                                RopeLayout layout = RopeLayout::split_halves)
{
    return detail::rotate_rows(dY, first_position, base, layout, -1.0);
}

}  // namespace attn
