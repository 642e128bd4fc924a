// Generated from chapters/11-performer.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 11: Performer — FAVOR+ attention
/// through positive orthogonal random features.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor-blas/xblas.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/machine.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"

namespace attn {

// ⟨Draw independent random features⟩ 11-performer.md:80
/// @brief r×d random features with independent N(0, 1) entries.
/// @param r number of features; @param d width
/// of the vectors; @param seed fixes the draw
/// @return W, r×d
template <class T>
xt::xtensor<T, 2> iid_features(std::size_t r, std::size_t d, std::uint64_t seed)
{
    if (r == 0 || d == 0)
        throw std::invalid_argument("iid_features: r and d must be positive");
    if (r > std::numeric_limits<std::size_t>::max() / d / sizeof(T))
        throw std::invalid_argument("iid_features: r×d overflows its size");
    std::mt19937_64 rng(seed);
    return random_normal<T>(r, d, 1.0, rng);
}

// ⟨Draw orthogonal random features⟩ 11-performer.md:109
/// @brief r×d orthogonal random features (Choromanski et al.
/// 2020, §2.4): each block of d rows is orthogonal, and each row,
/// a direction scaled by a χ_d-distributed length, is N(0, I_d).
/// @param r number of features (the paper's m); @param
/// d width of the vectors; @param seed fixes the draw
/// @return W, r×d
template <class T>
xt::xtensor<T, 2> orthogonal_features(std::size_t r, std::size_t d, std::uint64_t seed)
{
    if (r == 0 || d == 0)
        throw std::invalid_argument("orthogonal_features: r and d must be positive");
    if (r > std::numeric_limits<std::size_t>::max() / d / sizeof(T))
        throw std::invalid_argument("orthogonal_features: r×d overflows its size");
    std::mt19937_64 rng(seed);
    std::chi_squared_distribution<double> chi_squared{double(d)};
    xt::xtensor<T, 2> W = xt::zeros<T>({r, d});  // r×d
    for (std::size_t start = 0; start < r; start += d) {
        const xt::xtensor<double, 2> G = random_normal<double>(d, d, 1.0, rng);  // d×d
        const auto factors = xt::linalg::qr(G);
        // d×d, orthonormal columns
        const xt::xtensor<double, 2> directions = std::get<0>(factors);
        const xt::xtensor<double, 2> R = std::get<1>(factors);
        for (std::size_t row = 0; row < std::min(d, r - start); ++row) {
            // Column `row` of the Q factor, sign-fixed by
            // R's diagonal so the rotation is uniform.
            const double length =
                std::sqrt(chi_squared(rng)) * (R(row, row) < 0 ? -1.0 : 1.0);
            for (std::size_t c = 0; c < d; ++c)
                W(start + row, c) = static_cast<T>(length * directions(c, row));
        }
    }
    return W;
}

// ⟨Compute the exponents of the positive features⟩ 11-performer.md:152
namespace detail {

/// Throw std::invalid_argument unless W (r×d)
/// has the width d of the rows of X and r ≥ 1.
template <class T>
void check_feature_shapes(const xt::xtensor<T, 2>& X, const xt::xtensor<T, 2>& W)
{
    if (W.shape(0) == 0 || W.shape(1) != X.shape(1))
        throw std::invalid_argument(
            "performer: W is " + std::to_string(W.shape(0)) + "×" +
            std::to_string(W.shape(1)) + " but the rows have width " +
            std::to_string(X.shape(1)) + "; W must be r×d with r ≥ 1");
}

/// X̃·Wᵀ with x̃ = x·d^(−1/4): the projections w_l·x̃_i, n×r.
template <class T>
xt::xtensor<T, 2> scaled_projections(const xt::xtensor<T, 2>& X,
                                     const xt::xtensor<T, 2>& W)
{
    check_feature_shapes(X, W);
    const T scale = T(1) / std::sqrt(std::sqrt(T(X.shape(1))));  // d^(−1/4)
    const xt::xtensor<T, 2> X_tilde = X * scale;                   // n×d
    // d×r, contiguous for BLAS
    const xt::xtensor<T, 2> W_t = xt::transpose(W);
    return xt::linalg::dot(X_tilde, W_t);                          // n×r
}

/// Half the squared length of each scaled row, ‖x̃_i‖²/2, accumulated in double: n.
template <class T>
std::vector<double> half_squared_norms(const xt::xtensor<T, 2>& X)
{
    const std::size_t n = X.shape(0), d = X.shape(1);
    std::vector<double> half(n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
        for (std::size_t c = 0; c < d; ++c)
            half[i] += double(X(i, c)) * double(X(i, c));
        half[i] /= 2.0 * std::sqrt(double(d));  // ‖x̃‖² = ‖x‖²/√d
    }
    return half;
}

/// The exponents w_l·x̃_i − ‖x̃_i‖²/2 of the positive features, n×r; NaN in
/// every column of a row whose ‖x̃_i‖²/2 is not finite in T (a non-finite
/// entry, or out of range).
template <class T>
xt::xtensor<T, 2> favor_exponents(const xt::xtensor<T, 2>& X,
                                  const xt::xtensor<T, 2>& W)
{
    xt::xtensor<T, 2> exponents = scaled_projections(X, W);  // n×r
    const std::vector<double> half = half_squared_norms(X);
    const std::size_t r = W.shape(0);
    const T nan = std::numeric_limits<T>::quiet_NaN();
    for (std::size_t i = 0; i < X.shape(0); ++i) {  // a row too long for T: NaN, not 0
        const T h = static_cast<T>(half[i]);
        for (std::size_t l = 0; l < r; ++l)
            exponents(i, l) = std::isfinite(h) ? exponents(i, l) - h : nan;
    }
    return exponents;
}

}  // namespace detail

// ⟨Compute the positive random features⟩ 11-performer.md:216
/// @brief FAVOR+ positive random features φ(x) = exp(W·x̃ − ‖x̃‖²/2)/√r
/// with x̃ = x·d^(−1/4), so that φ(q)·φ(k) is an unbiased estimate of
/// exp(q·k/√d) (Choromanski et al. 2020, Lemma 1). No stabiliser: entries
/// overflow when W·x̃ is large; the attention functions guard against it.
/// @param X rows, n×d; @param W random features, r×d
/// @return φ(X), n×r, every entry positive
template <class T>
xt::xtensor<T, 2> favor_features(const xt::xtensor<T, 2>& X, const xt::xtensor<T, 2>& W)
{
    xt::xtensor<T, 2> features = xt::exp(detail::favor_exponents(X, W));  // n×r
    features *= T(1) / std::sqrt(T(W.shape(0)));
    return features;
}

/// @brief Trigonometric random features exp(‖x̃‖²/2)·(sin W·x̃, cos
/// W·x̃)/√r with x̃ = x·d^(−1/4): unbiased for exp(q·k/√d) too, but
/// neither positive nor accurate where the kernel is small.
/// @param X rows, n×d; @param W random features, r×d
/// @return n×2r: the r sines, then the r cosines
template <class T>
xt::xtensor<T, 2> trig_features(const xt::xtensor<T, 2>& X, const xt::xtensor<T, 2>& W)
{
    const xt::xtensor<T, 2> projections = detail::scaled_projections(X, W);  // n×r
    const std::vector<double> half = detail::half_squared_norms(X);
    const std::size_t n = X.shape(0), r = W.shape(0);
    xt::xtensor<T, 2> features = xt::zeros<T>({n, 2 * r});  // n×2r
    for (std::size_t i = 0; i < n; ++i) {
        const double size = std::exp(half[i]) / std::sqrt(double(r));
        for (std::size_t l = 0; l < r; ++l) {
            features(i, l) = static_cast<T>(size * std::sin(double(projections(i, l))));
            features(i, r + l) =
                static_cast<T>(size * std::cos(double(projections(i, l))));
        }
    }
    return features;
}

// ⟨Form the implied attention weights⟩ 11-performer.md:586
/// @brief The attention weights FAVOR+ implies, D⁻¹·φ(Q)·φ(K)ᵀ, formed explicitly
/// and stabilised (the reference; O(n·m·r) time, O(n·m) memory).
/// @param Q n×d_k; @param K m×d_k; @param W random features, r×d_k
/// @param causal if true, the n queries are the last n of the m positions (n ≤ m) and
///        query i gets no weight on the keys after it, j > m − n + i
/// @return weights, n×m, rows summing to 1 (NaN in a row with a non-finite exponent)
template <class T>
xt::xtensor<T, 2> performer_weights(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K,
                                    const xt::xtensor<T, 2>& W, bool causal = false)
{
    const std::size_t n = Q.shape(0), m = K.shape(0), r = W.shape(0);
    if (causal && n > m)
        throw std::invalid_argument("performer_weights: causal needs n ≤ m queries");
    const xt::xtensor<T, 2> e_Q = detail::favor_exponents(Q, W);  // n×r
    const xt::xtensor<T, 2> e_K = detail::favor_exponents(K, W);  // m×r
    // b_l: the largest exponent of feature l over the keys seen (NaN skipped)
    std::vector<double> b(r, -std::numeric_limits<double>::infinity()), kernels(m);
    xt::xtensor<T, 2> P = xt::zeros<T>({n, m});  // n×m
    for (std::size_t i = 0, seen = 0; i < n; ++i) {
        const std::size_t visible = causal ? m - n + i + 1 : m;
        for (; seen < visible; ++seen)
            for (std::size_t l = 0; l < r; ++l)
                b[l] = std::max(b[l], double(e_K(seen, l)));
        double a = -std::numeric_limits<double>::infinity(), total = 0;
        for (std::size_t l = 0; l < r; ++l) a = std::max(a, double(e_Q(i, l)) + b[l]);
        for (std::size_t j = 0; j < visible; ++j) {
            kernels[j] = 0;  // e^{−a_i}·r·φ(q_i)·φ(k_j)
            for (std::size_t l = 0; l < r; ++l)
                kernels[j] += std::exp(double(e_Q(i, l)) + double(e_K(j, l)) - a);
            total += kernels[j];
        }
        for (std::size_t j = 0; j < visible; ++j)
            P(i, j) = static_cast<T>(kernels[j] / total);
    }
    return P;
}

// ⟨Exponentiate with a stabiliser⟩ 11-performer.md:664
namespace detail {

/// exp(exponents − a_i) for each row i, with a_i the
/// row's largest entry: √r·φ·e^{−a_i}, in (0, 1].
template <class T>
void exponentiate_each_row_stably(xt::xtensor<T, 2>& exponents)
{
    const std::size_t n = exponents.shape(0), r = exponents.shape(1);
    for (std::size_t i = 0; i < n; ++i) {
        T* row = exponents.data() + i * r;
        const T a = *std::max_element(row, row + r);
        for (std::size_t l = 0; l < r; ++l) row[l] = std::exp(row[l] - a);
    }
}

/// exp(exponents − b_l) for each column l, with b_l the column's largest entry
/// (NaN entries skipped): √r·φ·e^{−b_l}, in (0, 1]. Returns b, r entries.
template <class T>
std::vector<T> exponentiate_each_column_stably(xt::xtensor<T, 2>& exponents)
{
    const std::size_t m = exponents.shape(0), r = exponents.shape(1);
    std::vector<T> b(r, -std::numeric_limits<T>::infinity());  // r
    for (std::size_t j = 0; j < m; ++j)
        for (std::size_t l = 0; l < r; ++l) b[l] = std::max(b[l], exponents(j, l));
    for (std::size_t j = 0; j < m; ++j)
        for (std::size_t l = 0; l < r; ++l)
            exponents(j, l) = std::exp(exponents(j, l) - b[l]);
    return b;
}

/// Add b_l to column l of the query exponents: they then meet keys scaled by e^{−b_l}.
template <class T>
void add_to_each_column(xt::xtensor<T, 2>& exponents, const std::vector<T>& b)
{
    for (std::size_t i = 0; i < exponents.shape(0); ++i)
        for (std::size_t l = 0; l < b.size(); ++l) exponents(i, l) += b[l];
}

}  // namespace detail

// ⟨Attend through positive random features⟩ 11-performer.md:719
/// @brief FAVOR+ attention D⁻¹·φ(Q)·(φ(K)ᵀ·V), D = diag(φ(Q)·φ(K)ᵀ·1)
/// (Choromanski et al. 2020, §2.2), on whole n×r feature matrices: the reference for
/// the blocked performer_attention. Stabilised so that no feature overflows; the
/// stabiliser cancels exactly. O(n·r·d) time, no n×m array, but O((n + m)·r) memory.
/// @param Q queries, n×d_k
/// @param K keys, m×d_k
/// @param V values, m×d_v
/// @param W random features, r×d_k (iid_features or orthogonal_features)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> performer_attention_unblocked(
    const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
    const xt::xtensor<T, 2>& W)
{
    check_attention_shapes(Q, K, V);
    const std::size_t n = Q.shape(0), m = K.shape(0), d_v = V.shape(1);
    xt::xtensor<T, 2> phi_Q = detail::favor_exponents(Q, W);  // n×r
    xt::xtensor<T, 2> phi_K = detail::favor_exponents(K, W);  // m×r
    const std::vector<T> b = detail::exponentiate_each_column_stably(phi_K);  // r
    detail::add_to_each_column(phi_Q, b);
    detail::exponentiate_each_row_stably(phi_Q);
    xt::xtensor<T, 2> V_1 = xt::ones<T>({m, d_v + 1});  // m×(d_v+1): [V 1]
    xt::view(V_1, xt::all(), xt::range(0, d_v)) = V;
    const xt::xtensor<T, 2> phi_K_t = xt::transpose(phi_K);              // r×m
    // r×(d_v+1): [φ(K)ᵀV  φ(K)ᵀ1]
    const xt::xtensor<T, 2> summary = xt::linalg::dot(phi_K_t, V_1);
    // n×(d_v+1): numerators, D
    const xt::xtensor<T, 2> totals = xt::linalg::dot(phi_Q, summary);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});                        // n×d_v
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t c = 0; c < d_v; ++c) O(i, c) = totals(i, c) / totals(i, d_v);
    return O;
}

// ⟨Keep the prefix sums of the causal pass⟩ 11-performer.md:819
namespace detail {
/// @brief The running sums of causal FAVOR+, in double: S (r×d_v), z (r) and the
/// running maxima b (r) of each feature's key exponents.
class PrefixSums {
public:
    PrefixSums(std::size_t r, std::size_t d_v)
        : r_(r), d_v_(d_v), S(r * d_v, 0.0), z(r, 0.0), phi_k(r), phi_q(r),
          b(r, -std::numeric_limits<double>::infinity())
    {
    }

    /// Add key i: its r exponents and its value row v_i (d_v).
    template <class T>
    void add_key(const T* exponents, const T* v_i)
    {
        const std::size_t r = r_, d_v = d_v_;
        // ⟨Add key i to the prefix sums⟩ 11-performer.md:856
        for (std::size_t l = 0; l < r; ++l) {
            if (double(exponents[l]) > b[l]) {  // a new maximum: shrink feature l's sums so far
                const double shrink = std::exp(b[l] - double(exponents[l]));  // first: 0·0 = 0
                for (std::size_t c = 0; c < d_v; ++c) S[l * d_v + c] *= shrink;
                z[l] *= shrink;
                b[l] = double(exponents[l]);
            }
            phi_k[l] = std::exp(double(exponents[l]) - b[l]);
            z[l] += phi_k[l];
            double* S_l = S.data() + l * d_v;
            for (std::size_t c = 0; c < d_v; ++c) S_l[c] += phi_k[l] * double(v_i[c]);
        }
    }

    /// Write output row i (d_v) for query i's r exponents e_q.
    template <class T>
    void read_out(const T* e_q, T* o_i)
    {
        const std::size_t r = r_, d_v = d_v_;
        // ⟨Read out query i⟩ 11-performer.md:871
        double a = -std::numeric_limits<double>::infinity();  // the query's largest e_l + b_l
        for (std::size_t l = 0; l < r; ++l) a = std::max(a, double(e_q[l]) + b[l]);
        for (std::size_t l = 0; l < r; ++l) phi_q[l] = std::exp(double(e_q[l]) + b[l] - a);
        std::vector<double> numerator(d_v, 0.0);
        double denominator = 0;
        for (std::size_t l = 0; l < r; ++l) {
            const double* S_l = S.data() + l * d_v;
            for (std::size_t c = 0; c < d_v; ++c) numerator[c] += double(phi_q[l]) * S_l[c];
            denominator += double(phi_q[l]) * z[l];
        }
        for (std::size_t c = 0; c < d_v; ++c)
            o_i[c] = static_cast<T>(numerator[c] / denominator);
    }

private:
    std::size_t r_, d_v_;
    std::vector<double> S, z;         // r×d_v, r: the prefix sums
    std::vector<double> phi_k, phi_q;  // r, r: one key, one query
    std::vector<double> b;             // r: the running maxima
};
}  // namespace detail

// ⟨Attend causally through prefix sums⟩ 11-performer.md:782
/// @brief Causal FAVOR+: o_i = φ(q_i)ᵀS_i / φ(q_i)·z_i with prefix sums
/// S_i = Σ_{j≤i} φ(k_j)v_jᵀ and z_i = Σ_{j≤i} φ(k_j) (Choromanski et al. 2020, §2.2),
/// stabilised by a running maximum so that output i depends on tokens 0..i only; the
/// features of all n tokens at once (the reference for performer_causal_attention).
/// O(n·r·d_v) time, O(n·r) memory for the features.
/// @param Q queries, n×d_k
/// @param K keys, n×d_k (one per position)
/// @param V values, n×d_v
/// @param W random features, r×d_k
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> performer_causal_attention_unblocked(
    const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
    const xt::xtensor<T, 2>& W)
{
    check_attention_shapes(Q, K, V);
    if (Q.shape(0) != K.shape(0))
        throw std::invalid_argument(
            "performer_causal_attention: needs one key per query (n = m)");
    const std::size_t n = Q.shape(0), d_v = V.shape(1), r = W.shape(0);
    const xt::xtensor<T, 2> query_exponents = detail::favor_exponents(Q, W);  // n×r
    const xt::xtensor<T, 2> key_exponents = detail::favor_exponents(K, W);    // n×r
    detail::PrefixSums sums(r, d_v);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    for (std::size_t i = 0; i < n; ++i) {
        sums.add_key(key_exponents.data() + i * r, V.data() + i * d_v);
        sums.read_out(query_exponents.data() + i * r, O.data() + i * d_v);
    }
    return O;
}

// ⟨Choose the tokens per block⟩ 11-performer.md:916
/// @brief Tokens per block in the blocked FAVOR+ kernels: as many as let one block's
/// arrays (rows, scaled rows, r exponents, d_v + 1 totals per token) share the L2 cache
/// with the r×(d_v+1) summary; at least 16.
/// @param d_k width of queries and keys; @param d_v width of values; @param r features
template <class T>
std::size_t performer_block_rows(std::size_t d_k, std::size_t d_v, std::size_t r)
{
    static const std::size_t l2 = cache_bytes(2) > 0 ? cache_bytes(2) : 512 * 1024;
    const std::size_t summary = r * (d_v + 1) * sizeof(T);             // r×(d_v+1)
    const std::size_t per_token = (2 * d_k + r + 2 * (d_v + 1)) * sizeof(T);
    const std::size_t room = l2 > 2 * summary ? l2 - summary : l2 / 2;  // bytes
    return std::max<std::size_t>(16, room / per_token);
}

// ⟨Multiply row-major arrays with BLAS⟩ 11-performer.md:940
namespace detail {

/// C = op(A)·op(B) + beta·C for row-major arrays (op transposes when asked), by BLAS:
/// C is m×n with leading dimension ldc, op(A) m×k, op(B) k×n.
template <class T>
void gemm_rows(bool transpose_a, bool transpose_b, std::size_t m, std::size_t n,
               std::size_t k, const T* A, std::size_t lda, const T* B, std::size_t ldb,
               T beta, T* C, std::size_t ldc)
{
    using I = xt::blas_index_t;
    const auto op = [](bool t) { return t ? cxxblas::Trans : cxxblas::NoTrans; };
    cxxblas::gemm<I>(cxxblas::StorageOrder::RowMajor, op(transpose_a), op(transpose_b),
                     I(m), I(n), I(k), T(1), A, I(lda), B, I(ldb), beta, C, I(ldc));
}

}  // namespace detail

// ⟨Compute the exponents of one block of rows⟩ 11-performer.md:963
namespace detail {

/// @brief The exponents w_l·x̃_i − ‖x̃_i‖²/2 of a block of rows, in buffers allocated
/// once for blocks of up to `block` rows and reused from block to block.
template <class T>
struct FeatureBlock {
    std::size_t d, r;
    std::vector<T> scaled;     ///< block×d: the rows times d^(−1/4)
    std::vector<double> half;  ///< block: ‖x̃_i‖²/2
    std::vector<T> exponents;  ///< block×r, row i − begin for row i of X

    FeatureBlock(std::size_t block, std::size_t d, std::size_t r)
        : d(d), r(r), scaled(block * d), half(block), exponents(block * r) {}

    /// Fill the first end − begin rows of `exponents` for rows begin … end − 1 of X.
    void compute(const xt::xtensor<T, 2>& X, std::size_t begin, std::size_t end,
                 const xt::xtensor<T, 2>& W)
    {
        const std::size_t rows = end - begin;
        const T scale = T(1) / std::sqrt(std::sqrt(T(d)));  // d^(−1/4)
        for (std::size_t i = 0; i < rows; ++i) {
            const T* x = X.data() + (begin + i) * d;
            double squares = 0;
            for (std::size_t c = 0; c < d; ++c) {
                scaled[i * d + c] = x[c] * scale;
                squares += double(x[c]) * double(x[c]);
            }
            half[i] = squares / (2.0 * std::sqrt(double(d)));  // ‖x̃‖² = ‖x‖²/√d
        }
        gemm_rows(false, true, rows, r, d, scaled.data(), d, W.data(), d, T(0),
                  exponents.data(), r);  // X̃·Wᵀ
        const T nan = std::numeric_limits<T>::quiet_NaN();
        for (std::size_t i = 0; i < rows; ++i) {  // out of range or non-finite: NaN
            const T h = static_cast<T>(half[i]);
            for (std::size_t l = 0; l < r; ++l)
                exponents[i * r + l] =
                    std::isfinite(h) ? exponents[i * r + l] - h : nan;
        }
    }
};

}  // namespace detail

// ⟨Attend through positive random features in blocks⟩ 11-performer.md:1018
/// @brief FAVOR+ attention D⁻¹·φ(Q)·(φ(K)ᵀ·V), equal to performer_attention_unblocked
/// up to rounding, computed in blocks of `block` tokens so that the working set stays
/// in the cache: φ(K)ᵀ[V 1] accumulated over blocks of keys, then the outputs over
/// blocks of queries. O(n·r·d) time, O(r·d_v + block·r) memory besides the output.
/// @param Q queries, n×d_k
/// @param K keys, m×d_k
/// @param V values, m×d_v
/// @param W random features, r×d_k (iid_features or orthogonal_features)
/// @param block tokens per block; 0 chooses performer_block_rows, more than n or m is
///        clamped to one block
/// @return outputs, n×d_v
/// Range: the outputs are finite whenever the squared lengths ‖q_i‖²/√d_k and
/// ‖k_j‖²/√d_k are finite in T (entries up to about 10^153 in double and 10^18 in
/// float at d_k = 64): the per-feature stabiliser keeps every denominator ≥ 1. Beyond
/// it the row's features are NaN, and so are the outputs that depend on them. The
/// features are exponents rounded in T, so the estimate is accurate only while
/// ‖x‖²/√d_k ≪ 1/ε (entries up to about 10³ in float and 10⁷ in double).
template <class T>
xt::xtensor<T, 2> performer_attention(
    const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
    const xt::xtensor<T, 2>& W, std::size_t block = 0)
{
    check_attention_shapes(Q, K, V);
    detail::check_feature_shapes(K, W);
    const std::size_t n = Q.shape(0), m = K.shape(0), d_v = V.shape(1), r = W.shape(0);
    if (block == 0) block = performer_block_rows<T>(K.shape(1), d_v, r);
    block = std::min(block, std::max(n, m));  // a longer block is one block
    detail::FeatureBlock<T> features(block, K.shape(1), r);
    std::vector<T> V_1(block * (d_v + 1), T(1));  // block×(d_v+1): [V 1], ones kept
    std::vector<T> summary(r * (d_v + 1), T(0));  // r×(d_v+1): [φ(K)ᵀV  φ(K)ᵀ1]
    std::vector<T> b(r, -std::numeric_limits<T>::infinity());  // r: largest so far
    for (std::size_t begin = 0; begin < m; begin += block) {
        const std::size_t end = std::min(begin + block, m), rows = end - begin;
        // ⟨Add a block of keys to the summary⟩ 11-performer.md:1074
        features.compute(K, begin, end, W);
        T* phi = features.exponents.data();  // rows×r
        for (std::size_t l = 0; l < r; ++l) {
            T b_block = b[l];  // feature l's largest exponent, this block included
            for (std::size_t j = 0; j < rows; ++j) b_block = std::max(b_block, phi[j * r + l]);
            if (b_block > b[l]) {  // a new maximum: shrink row l so far (first block: 0·0 = 0)
                const T shrink = std::exp(b[l] - b_block);
                for (std::size_t c = 0; c <= d_v; ++c) summary[l * (d_v + 1) + c] *= shrink;
                b[l] = b_block;
            }
        }
        for (std::size_t e = 0; e < rows * r; ++e)
            phi[e] = std::exp(phi[e] - b[e % r]);  // (0, 1]
        for (std::size_t j = 0; j < rows; ++j)
            std::copy_n(V.data() + (begin + j) * d_v, d_v, V_1.data() + j * (d_v + 1));
        detail::gemm_rows(true, false, r, d_v + 1, rows, phi, r, V_1.data(), d_v + 1, T(1),
                          summary.data(), d_v + 1);  // summary += φᵀ·[V 1]
    }
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    std::vector<T>& totals = V_1;                  // block×(d_v+1), free again
    for (std::size_t begin = 0; begin < n; begin += block) {
        const std::size_t end = std::min(begin + block, n), rows = end - begin;
        // ⟨Read out a block of queries⟩ 11-performer.md:1094
        features.compute(Q, begin, end, W);
        T* phi = features.exponents.data();  // rows×r
        for (std::size_t i = 0; i < rows; ++i) {  // meet the keys' b, then the row's maximum
            T* row = phi + i * r;
            T a = -std::numeric_limits<T>::infinity();
            for (std::size_t l = 0; l < r; ++l) a = std::max(a, row[l] += b[l]);
            for (std::size_t l = 0; l < r; ++l) row[l] = std::exp(row[l] - a);
        }
        detail::gemm_rows(false, false, rows, d_v + 1, r, phi, r, summary.data(), d_v + 1, T(0),
                          totals.data(), d_v + 1);  // rows×(d_v+1): numerators, D
        for (std::size_t i = 0; i < rows; ++i) {
            const T* total = totals.data() + i * (d_v + 1);
            for (std::size_t c = 0; c < d_v; ++c) O(begin + i, c) = total[c] / total[d_v];
        }
    }
    return O;
}

// ⟨Attend causally through prefix sums in blocks⟩ 11-performer.md:1116
/// @brief Causal FAVOR+ (as performer_causal_attention_unblocked, up to rounding), with
/// the features computed one block of `block` tokens at a time and the prefix sums S,
/// z and the running maximum carried across blocks. O(n·r·d_v) time,
/// O(r·d_v + block·r) extra memory.
/// @param Q queries, n×d_k
/// @param K keys, n×d_k (one per position)
/// @param V values, n×d_v
/// @param W random features, r×d_k
/// @param block tokens per block; 0 chooses performer_block_rows, more than n is
///        clamped to one block
/// @return outputs, n×d_v; the range is performer_attention's
template <class T>
xt::xtensor<T, 2> performer_causal_attention(
    const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
    const xt::xtensor<T, 2>& W, std::size_t block = 0)
{
    check_attention_shapes(Q, K, V);
    if (Q.shape(0) != K.shape(0))
        throw std::invalid_argument(
            "performer_causal_attention: needs one key per query (n = m)");
    detail::check_feature_shapes(K, W);
    const std::size_t n = Q.shape(0), d_k = K.shape(1), d_v = V.shape(1);
    const std::size_t r = W.shape(0);
    if (block == 0) block = performer_block_rows<T>(d_k, d_v, r);
    block = std::max<std::size_t>(1, std::min(block, n));  // longer: one block
    detail::FeatureBlock<T> queries(block, d_k, r), keys(block, d_k, r);
    const std::vector<T>& query_exponents = queries.exponents;  // block×r
    const std::vector<T>& key_exponents = keys.exponents;      // block×r
    detail::PrefixSums sums(r, d_v);  // carried from block to block
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    for (std::size_t begin = 0; begin < n; begin += block) {
        const std::size_t end = std::min(begin + block, n);
        queries.compute(Q, begin, end, W);
        keys.compute(K, begin, end, W);
        for (std::size_t i = begin; i < end; ++i) {
            const std::size_t row = i - begin;  // token i's row in the block
            sums.add_key(key_exponents.data() + row * r, V.data() + i * d_v);
            sums.read_out(query_exponents.data() + row * r, O.data() + i * d_v);
        }
    }
    return O;
}

}  // namespace attn
