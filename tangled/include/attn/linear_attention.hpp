// Generated from chapters/19-linear-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 19: linear attention (φ(x) = elu(x) + 1) in its parallel and
/// recurrent forms, a decaying state, its backward pass and a tiny causal model.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/attention_backward.hpp"
#include "attn/causal_decoder.hpp"
#include "attn/multi_head_attention.hpp"
#include "attn/performer.hpp"
#include "attn/tiny_model.hpp"

namespace attn {

// ⟨Map rows to positive features⟩ 19-linear-attention.md:64
/// @brief φ(x) = elu(x) + 1 for one number: x + 1 for x > 0, eˣ for x ≤ 0.
template <class T>
T elu_feature(T x)
{
    return x > T(0) ? x + T(1) : std::exp(x);  // exp(NaN) is NaN
}

/// @brief The feature map of Katharopoulos et al. (2020, §3.2.1), φ(x) = elu(x) + 1:
/// x + 1 for x > 0, eˣ for x ≤ 0, entry by entry. Positive for every finite x; NaN
/// stays NaN. @param X n×d @return φ(X), n×d
template <class T>
xt::xtensor<T, 2> elu_feature_map(const xt::xtensor<T, 2>& X)
{
    xt::xtensor<T, 2> features = xt::zeros<T>(X.shape());  // n×d
    for (std::size_t e = 0; e < X.size(); ++e)
        features.data()[e] = elu_feature(X.data()[e]);
    return features;
}

/// @brief The derivative of φ(x) = elu(x) + 1: 1 for x > 0, eˣ for x ≤ 0.
template <class T>
T elu_feature_slope(T x)
{
    return x > T(0) ? T(1) : std::exp(x);
}

// ⟨Check the shapes of linear attention⟩ 19-linear-attention.md:99
namespace detail {
/// Throw std::invalid_argument unless Φ_Q is n×r, Φ_K m×r and V m×d_v with m, r ≥ 1,
/// and n = m when `causal`.
template <class T>
void check_feature_attention_shapes(const xt::xtensor<T, 2>& phi_Q,
                                    const xt::xtensor<T, 2>& phi_K,
                                    const xt::xtensor<T, 2>& V, bool causal)
{
    const auto shape = [](const xt::xtensor<T, 2>& x) {
        return std::to_string(x.shape(0)) + "×" + std::to_string(x.shape(1));
    };
    if (phi_Q.shape(1) != phi_K.shape(1))
        throw std::invalid_argument("linear attention: queries are " + shape(phi_Q) +
                                    " but keys " + shape(phi_K) +
                                    "; they need one width");
    if (phi_K.shape(0) != V.shape(0))
        throw std::invalid_argument("linear attention: keys are " + shape(phi_K) +
                                    " but V is " + shape(V) + "; one value per key");
    if (phi_K.shape(0) == 0)
        throw std::invalid_argument("linear attention: there are no keys (m = 0)");
    if (phi_K.shape(1) == 0)
        throw std::invalid_argument("linear attention: queries and keys are empty "
                                    "(d_k = 0), so every weight would be 0/0");
    if (causal && phi_Q.shape(0) != phi_K.shape(0))
        throw std::invalid_argument("causal linear attention: needs one key per query, "
                                    "got n = " + std::to_string(phi_Q.shape(0)) +
                                    " and m = " + std::to_string(phi_K.shape(0)));
}
}  // namespace detail

// ⟨Form the linear attention weights⟩ 19-linear-attention.md:138
namespace detail {
/// Throw std::invalid_argument unless the decay γ is in (0, 1], and 1 unless causal.
inline void check_decay(double gamma, bool causal, const std::string& where)
{
    if (!(gamma > 0 && gamma <= 1))
        throw std::invalid_argument(where + ": the decay γ = " + std::to_string(gamma) +
                                    " is not in (0, 1]");
    if (!causal && gamma != 1)
        throw std::invalid_argument(where + ": a decay γ < 1 needs causal attention");
}

/// What the kernel of query i and key j is multiplied by: γ^(i−j) for j ≤ i, 0 for a
/// future key when causal, 1 when not.
template <class T>
T decay_factor(std::size_t i, std::size_t j, bool causal, double gamma)
{
    if (!causal) return T(1);
    return j > i ? T(0) : T(std::pow(gamma, double(i - j)));
}
}  // namespace detail

/// @brief The weights linear attention implies, φ(q_i)·φ(k_j) / Σ_j' φ(q_i)·φ(k_j'),
/// formed as a matrix (the reference; O(n·m) memory). With a decay γ < 1 (causal
/// only) each kernel is first multiplied by γ^(i−j), the matrix form of the decayed
/// state (RetNet's parallel form, Sun et al. 2023, §2.1).
/// @param Q n×d_k; @param K m×d_k
/// @param causal if true, key j > i gets weight 0 (requires n = m)
/// @param gamma the decay γ in (0, 1]
/// @return weights, n×m, rows summing to 1
template <class T>
xt::xtensor<T, 2> linear_attention_weights(const xt::xtensor<T, 2>& Q,
                                           const xt::xtensor<T, 2>& K, bool causal,
                                           double gamma = 1.0)
{
    const xt::xtensor<T, 2> phi_Q = elu_feature_map(Q);  // n×d_k
    const xt::xtensor<T, 2> phi_K = elu_feature_map(K);  // m×d_k
    const xt::xtensor<T, 2> V_shape = xt::zeros<T>({K.shape(0), std::size_t(1)});
    detail::check_feature_attention_shapes(phi_Q, phi_K, V_shape, causal);
    detail::check_decay(gamma, causal, "linear_attention_weights");
    const xt::xtensor<T, 2> phi_K_t = xt::transpose(phi_K);           // d_k×m
    xt::xtensor<T, 2> weights = xt::linalg::dot(phi_Q, phi_K_t);      // n×m
    for (std::size_t i = 0; i < weights.shape(0); ++i) {
        T total = 0;
        for (std::size_t j = 0; j < weights.shape(1); ++j) {
            const T factor = detail::decay_factor<T>(i, j, causal, gamma);
            weights(i, j) = factor == T(0) ? T(0) : factor * weights(i, j);
            total += weights(i, j);
        }
        for (std::size_t j = 0; j < weights.shape(1); ++j) weights(i, j) /= total;
    }
    return weights;
}

// ⟨Attend through feature prefix sums in blocks⟩ 19-linear-attention.md:244
/// @brief Attention with the kernel φ(q)·φ(k) given the features:
/// o_i = Σ_j (Φ_Q[i]·Φ_K[j]) v_j / Σ_j Φ_Q[i]·Φ_K[j], over every key, or over the keys
/// j ≤ i if `causal` (by prefix sums carried from block to block; Katharopoulos et al.
/// 2020, §3.3). Never forms an n×m matrix: O(n·r·d_v + n·block·(r + d_v)) time,
/// O(r·d_v + block²) extra memory. Linear attention is this with Φ = φ(Q), φ(K);
/// causal FAVOR+ (chapter 11) is this with its random features.
/// @param phi_Q query features, n×r, every entry ≥ 0
/// @param phi_K key features, m×r, every entry ≥ 0 (m = n if causal)
/// @param V values, m×d_v
/// @param causal whether query i sees only keys j ≤ i
/// @param block tokens per block of the causal pass (≥ 1)
/// @return outputs, n×d_v. A row whose every kernel is 0 (features that underflow)
/// is 0/0, NaN.
template <class T>
xt::xtensor<T, 2> feature_attention(const xt::xtensor<T, 2>& phi_Q,
                                    const xt::xtensor<T, 2>& phi_K,
                                    const xt::xtensor<T, 2>& V, bool causal,
                                    std::size_t block = 64)
{
    detail::check_feature_attention_shapes(phi_Q, phi_K, V, causal);
    if (block == 0)
        throw std::invalid_argument("feature_attention: a block needs ≥ 1 token");
    const std::size_t n = phi_Q.shape(0), m = phi_K.shape(0), r = phi_K.shape(1);
    const std::size_t d_v = V.shape(1);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    if (n == 0) return O;
    block = causal ? std::min(block, n) : std::max(n, m);  // not causal: one block
    std::vector<T> summary(r * (d_v + 1), T(0));  // r×(d_v+1): [S z] of earlier blocks
    std::vector<T> V_1(block * (d_v + 1), T(1));  // block×(d_v+1): [V 1], ones kept
    std::vector<T> totals(block * (d_v + 1));     // block×(d_v+1): numerators, D
    std::vector<T> kernels(causal ? block * block : 0);  // block×block
    for (std::size_t begin = 0; begin < std::max(n, m); begin += block) {
        const std::size_t keys = std::min(block, m - std::min(begin, m));
        const std::size_t rows = std::min(block, n - std::min(begin, n));
        for (std::size_t j = 0; j < keys; ++j)
            std::copy_n(V.data() + (begin + j) * d_v, d_v, V_1.data() + j * (d_v + 1));
        const T* phi_K_block = phi_K.data() + begin * r;  // keys×r
        if (!causal)  // every key before any query reads the summary
            detail::gemm_rows(true, false, r, d_v + 1, keys, phi_K_block, r, V_1.data(),
                              d_v + 1, T(1), summary.data(), d_v + 1);
        // rows×(d_v+1): what the earlier blocks give each query, Φ_Q·[S z]
        detail::gemm_rows(false, false, rows, d_v + 1, r, phi_Q.data() + begin * r, r,
                          summary.data(), d_v + 1, T(0), totals.data(), d_v + 1);
        if (causal) {
            // ⟨Add one block's own keys to its queries⟩ 19-linear-attention.md:230
            // rows×rows kernels φ(q_i)·φ(k_j) within the block; the future is never read
            detail::gemm_rows(false, true, rows, rows, r, phi_Q.data() + begin * r, r,
                              phi_K.data() + begin * r, r, T(0), kernels.data(), block);
            for (std::size_t i = 0; i < rows; ++i) {
                T* total = totals.data() + i * (d_v + 1);
                for (std::size_t j = 0; j <= i; ++j) {  // keys of this block up to query i
                    const T kernel = kernels[i * block + j];
                    const T* value_1 = V_1.data() + j * (d_v + 1);
                    for (std::size_t c = 0; c <= d_v; ++c) total[c] += kernel * value_1[c];
                }
            }
            // then the block joins the summary: [S z] += Φ_Kᵀ·[V 1]
            detail::gemm_rows(true, false, r, d_v + 1, keys, phi_K_block, r, V_1.data(),
                              d_v + 1, T(1), summary.data(), d_v + 1);
        }
        for (std::size_t i = 0; i < rows; ++i) {
            const T* total = totals.data() + i * (d_v + 1);
            for (std::size_t c = 0; c < d_v; ++c)
                O(begin + i, c) = total[c] / total[d_v];
        }
    }
    return O;
}

// ⟨Compute linear attention⟩ 19-linear-attention.md:306
/// @brief Linear attention (Katharopoulos et al. 2020, §3.2): softmax attention with
/// the kernel exp(q·k/√d_k) replaced by φ(q)·φ(k), φ(x) = elu(x) + 1. No n×m matrix:
/// O(n·d_k·d_v) time. Keeps chapter 1's contract: d_k = 0 or m = 0 throw
/// std::invalid_argument, n = 0 gives 0×d_v, a NaN reaches only the rows that read it.
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
/// @param causal whether query i sees only keys j ≤ i (then m = n)
/// @param block tokens per block of the causal pass (≥ 1)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> linear_attention(const xt::xtensor<T, 2>& Q,
                                   const xt::xtensor<T, 2>& K,
                                   const xt::xtensor<T, 2>& V, bool causal,
                                   std::size_t block = 64)
{
    return feature_attention(elu_feature_map(Q), elu_feature_map(K), V, causal, block);
}

// ⟨Carry the state of linear attention⟩ 19-linear-attention.md:365
/// @brief Causal linear attention as a recurrent network (Katharopoulos et al. 2020,
/// §3.4): a d_k×d_v state S and a d_k normaliser z, updated per token, optionally
/// decaying as in RetNet (Sun et al. 2023, §2.1): S ← γS + φ(k)vᵀ, z ← γz + φ(k).
/// Its memory is fixed at construction: d_k·d_v + 2·d_k numbers (S, z and one row of
/// features) for any number of tokens. With γ = 1, step i returns row i of
/// linear_attention(Q, K, V, true).
template <class T>
class LinearAttentionState {
public:
    /// @param d_k width of queries and keys (≥ 1); @param d_v width of values (≥ 1)
    /// @param gamma the decay γ, in (0, 1]; 1 forgets nothing
    LinearAttentionState(std::size_t d_k, std::size_t d_v, double gamma = 1.0)
        : d_k_(d_k), d_v_(d_v), gamma_(T(gamma))
    {
        if (d_k == 0 || d_v == 0)
            throw std::invalid_argument("LinearAttentionState: d_k = " +
                                        std::to_string(d_k) + " and d_v = " +
                                        std::to_string(d_v) + " must both be ≥ 1");
        detail::check_decay(gamma, true, "LinearAttentionState");
        S_.assign(d_k * d_v, T(0));
        z_.assign(d_k, T(0));
        phi_.assign(d_k, T(0));
    }

    /// @brief Read one token (q, k: d_k numbers, v: d_v) and return its output row
    /// φ(q)ᵀS / φ(q)·z (d_v), the state now holding this token too.
    xt::xtensor<T, 1> step(const xt::xtensor<T, 1>& q, const xt::xtensor<T, 1>& k,
                           const xt::xtensor<T, 1>& v)
    {
        check_token(q, k, v);
        // ⟨Add one token to the state⟩ 19-linear-attention.md:437
        for (std::size_t l = 0; l < d_k_; ++l) phi_[l] = elu_feature(k(l));  // φ(k)
        for (std::size_t l = 0; l < d_k_; ++l) {
            T* S_l = S_.data() + l * d_v_;  // row l of S, d_v
            for (std::size_t c = 0; c < d_v_; ++c) S_l[c] = gamma_ * S_l[c] + phi_[l] * v(c);
            z_[l] = gamma_ * z_[l] + phi_[l];
        }
        ++tokens_;
        // ⟨Read the state with the query⟩ 19-linear-attention.md:449
        for (std::size_t l = 0; l < d_k_; ++l) phi_[l] = elu_feature(q(l));  // φ(q)
        xt::xtensor<T, 1> o = xt::zeros<T>({d_v_});  // d_v
        T denominator = 0;
        for (std::size_t l = 0; l < d_k_; ++l) {
            const T* S_l = S_.data() + l * d_v_;
            for (std::size_t c = 0; c < d_v_; ++c) o(c) += phi_[l] * S_l[c];
            denominator += phi_[l] * z_[l];
        }
        o /= denominator;
        return o;
    }

    /// Tokens read so far.
    std::size_t tokens() const { return tokens_; }
    /// Bytes the state holds (S, z and one feature row), the same after any number
    /// of tokens.
    std::size_t bytes() const
    {
        return (S_.size() + z_.size() + phi_.size()) * sizeof(T);
    }
    std::size_t d_k() const { return d_k_; }
    std::size_t d_v() const { return d_v_; }

private:
    void check_token(const xt::xtensor<T, 1>& q, const xt::xtensor<T, 1>& k,
                     const xt::xtensor<T, 1>& v) const
    {
        if (q.size() != d_k_ || k.size() != d_k_ || v.size() != d_v_)
            throw std::invalid_argument(
                "LinearAttentionState::step: got q, k, v of " +
                std::to_string(q.size()) + ", " + std::to_string(k.size()) + ", " +
                std::to_string(v.size()) +
                " numbers; the state takes d_k = " + std::to_string(d_k_) +
                " and d_v = " + std::to_string(d_v_));
    }

    std::size_t d_k_, d_v_;
    T gamma_;
    std::vector<T> S_;    // d_k×d_v: Σ_j γ^(i−j) φ(k_j) v_jᵀ
    std::vector<T> z_;    // d_k: Σ_j γ^(i−j) φ(k_j)
    std::vector<T> phi_;  // d_k: φ of the current key, then of the query
    std::size_t tokens_ = 0;
};

// ⟨Run the recurrence over a sequence⟩ 19-linear-attention.md:468
/// @brief Causal linear attention with decay γ, by running a LinearAttentionState over
/// the rows of Q, K, V (n×d_k, n×d_k, n×d_v). @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> recurrent_linear_attention(const xt::xtensor<T, 2>& Q,
                                             const xt::xtensor<T, 2>& K,
                                             const xt::xtensor<T, 2>& V,
                                             double gamma = 1.0)
{
    detail::check_feature_attention_shapes(Q, K, V, true);
    LinearAttentionState<T> state(K.shape(1), V.shape(1), gamma);
    xt::xtensor<T, 2> O = xt::zeros<T>({Q.shape(0), V.shape(1)});  // n×d_v
    for (std::size_t i = 0; i < Q.shape(0); ++i)
        xt::row(O, i) = state.step(xt::xtensor<T, 1>(xt::row(Q, i)),
                                   xt::xtensor<T, 1>(xt::row(K, i)),
                                   xt::xtensor<T, 1>(xt::row(V, i)));
    return O;
}

// ⟨Backpropagate through linear attention⟩ 19-linear-attention.md:529
/// @brief Backward pass of O = linear_attention_weights(Q, K, causal, γ)·V, through
/// the n×m weights (for small n: training the tiny model).
/// @param Q n×d_k; @param K m×d_k; @param V m×d_v; @param dO ∂L/∂O, n×d_v
/// @param causal as in the forward pass; @param gamma the decay γ in (0, 1]
/// @return dQ (n×d_k), dK (m×d_k), dV (m×d_v)
template <class T>
AttentionGradients<T> linear_attention_backward(const xt::xtensor<T, 2>& Q,
                                                const xt::xtensor<T, 2>& K,
                                                const xt::xtensor<T, 2>& V,
                                                const xt::xtensor<T, 2>& dO,
                                                bool causal, double gamma = 1.0)
{
    using detail::matmul, detail::transposed;
    const xt::xtensor<T, 2> A = linear_attention_weights(Q, K, causal, gamma);  // n×m
    const xt::xtensor<T, 2> phi_Q = elu_feature_map(Q), phi_K = elu_feature_map(K);
    const xt::xtensor<T, 2> U = matmul(phi_Q, transposed(phi_K));  // n×m, unmasked
    AttentionGradients<T> grad;
    grad.dV = matmul(transposed(A), dO);                    // m×d_v
    const xt::xtensor<T, 2> dA = matmul(dO, transposed(V));  // n×m
    xt::xtensor<T, 2> dU = xt::zeros<T>(A.shape());          // n×m
    for (std::size_t i = 0; i < A.shape(0); ++i) {
        T average = 0, D = 0;  // Σ_j A_ij dA_ij, and the row's sum of decayed kernels
        for (std::size_t j = 0; j < A.shape(1); ++j) {
            average += A(i, j) * dA(i, j);
            D += detail::decay_factor<T>(i, j, causal, gamma) * U(i, j);
        }
        for (std::size_t j = 0; j < A.shape(1); ++j)  // through A_ij = G_ij·U_ij / D_i
            dU(i, j) = detail::decay_factor<T>(i, j, causal, gamma) *
                       (dA(i, j) - average) / D;
    }
    grad.dQ = matmul(dU, phi_K);               // n×d_k, ∂L/∂φ(Q) for now
    grad.dK = matmul(transposed(dU), phi_Q);  // m×d_k, ∂L/∂φ(K) for now
    for (std::size_t e = 0; e < Q.size(); ++e)
        grad.dQ.data()[e] *= elu_feature_slope(Q.data()[e]);
    for (std::size_t e = 0; e < K.size(); ++e)
        grad.dK.data()[e] *= elu_feature_slope(K.data()[e]);
    return grad;
}

// ⟨Attend linearly in every head⟩ 19-linear-attention.md:579
/// @brief Causal linear attention with decay γ as the attention of each head of a
/// layer, for chapter 4's layer and chapter 16's model and training loop.
struct CausalLinearAttention {
    double gamma = 1.0;  ///< the decay γ in (0, 1]
    /// @brief One head's weights. @param Q n×d_k; @param K n×d_k @return n×n
    template <class T>
    xt::xtensor<T, 2> weights(const xt::xtensor<T, 2>& Q,
                              const xt::xtensor<T, 2>& K) const
    {
        return linear_attention_weights(Q, K, true, gamma);
    }
    /// @brief Backward pass of O = weights(Q, K)·V for one head (P is not needed).
    template <class T>
    AttentionGradients<T> backward(const xt::xtensor<T, 2>& Q,
                                   const xt::xtensor<T, 2>& K,
                                   const xt::xtensor<T, 2>& V, const xt::xtensor<T, 2>&,
                                   const xt::xtensor<T, 2>& dO) const
    {
        return linear_attention_backward(Q, K, V, dO, true, gamma);
    }
};

// ⟨Run and train the linear model⟩ 19-linear-attention.md:608
/// @brief Chapter 16's causal model with linear attention (decay γ) in every head, on
/// a prefix of n ≤ shape.n tokens. @return logits n×vocab with every intermediate value
template <class T>
TinyModelForward<T> linear_model_forward(const TinyModel<T>& model,
                                         const std::vector<std::size_t>& tokens,
                                         double gamma = 1.0)
{
    return causal_model_forward(model, tokens, CausalLinearAttention{gamma});
}

/// @brief Train `model`, run with linear attention (decay γ), on chapter 16's reversal
/// task with Adam, exactly as train_causal_reversal trains it with softmax attention.
/// @return the mean loss per scored token and the accuracy on each recorded batch
template <class T>
std::vector<TrainingPoint> train_linear_reversal(TinyModel<T>& model,
                                                 const ReversalTask& task,
                                                 const TrainingConfig& config,
                                                 std::mt19937_64& rng,
                                                 double gamma = 1.0)
{
    return train_causal_reversal(model, task, config, rng, [](TinyModel<T>&) {},
                                 CausalLinearAttention{gamma});
}

// ⟨Decode the linear model one token at a time⟩ 19-linear-attention.md:1179
/// @brief Runs a TinyModel with linear attention (decay γ) one token per step, with one
/// LinearAttentionState per layer and head instead of a KV cache: its memory does not
/// grow with the tokens read. The model must outlive the decoder.
template <class T>
class LinearDecoder {
public:
    /// @brief A decoder that has read nothing; @param gamma the decay γ in (0, 1]
    explicit LinearDecoder(const TinyModel<T>& model, double gamma = 1.0)
        : model_(&model)
    {
        const std::size_t d_k = model.shape.d_model / model.shape.heads;
        const std::vector<LinearAttentionState<T>> layer(
            model.shape.heads, LinearAttentionState<T>(d_k, d_k, gamma));
        states_.assign(model.shape.layers, layer);
    }

    /// @brief Read one token at the next position; return the next token's logits.
    xt::xtensor<T, 1> step(std::size_t token)
    {
        using Row = xt::xtensor<T, 1>;
        return decode_token(*model_, token, states_[0][0].tokens(),
                            [&](std::size_t l, std::size_t head, const Row& q,
                                const Row& k, const Row& v) {
                                return states_[l][head].step(q, k, v);
                            });
    }

    /// Bytes held by every state: the same after any number of tokens.
    std::size_t state_bytes() const
    {
        std::size_t bytes = 0;
        for (const auto& layer : states_)
            for (const LinearAttentionState<T>& state : layer) bytes += state.bytes();
        return bytes;
    }

private:
    const TinyModel<T>* model_;
    std::vector<std::vector<LinearAttentionState<T>>> states_;  // [layer][head]
};

}  // namespace attn
