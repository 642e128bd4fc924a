// Generated from chapters/04-learning-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 4: the backward pass of scaled dot-product
/// and multi-head attention, and gradient checks.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/masked_attention.hpp"
#include "attn/self_attention.hpp"

namespace attn {

// ⟨Multiply and transpose contiguous matrices⟩ 04-learning-attention.md:167
namespace detail {

/// A·B through BLAS, as a contiguous matrix.
template <class T>
xt::xtensor<T, 2> matmul(const xt::xtensor<T, 2>& A, const xt::xtensor<T, 2>& B)
{
    return xt::linalg::dot(A, B);
}

/// Aᵀ as a contiguous matrix, ready for BLAS.
template <class T>
xt::xtensor<T, 2> transposed(const xt::xtensor<T, 2>& A)
{
    return xt::transpose(A);
}

}  // namespace detail

// ⟨Build the Jacobian of the softmax⟩ 04-learning-attention.md:76
/// @brief The Jacobian of the softmax at weights p: J = diag(p) − p·pᵀ (the reference).
/// @param p the weights of one row, m
/// @return J, m×m, with J(j, l) = ∂p_j/∂s_l
template <class T>
xt::xtensor<T, 2> softmax_jacobian(const xt::xtensor<T, 1>& p)
{
    const std::size_t m = p.size();
    xt::xtensor<T, 2> J = xt::zeros<T>({m, m});  // m×m
    for (std::size_t j = 0; j < m; ++j)
        for (std::size_t l = 0; l < m; ++l)
            J(j, l) = (j == l ? p(j) : T(0)) - p(j) * p(l);
    return J;
}

// ⟨Backpropagate through the softmax⟩ 04-learning-attention.md:94
/// @brief Backward pass of softmax_rows: dS = P ⊙ (dP − rowsum(dP ⊙ P)), O(m) per row.
/// @param P  the weights softmax_rows produced, n×m
/// @param dP the gradient of the loss with respect to P, n×m
/// @return dS, the gradient with respect to the scores, n×m
template <class T>
xt::xtensor<T, 2> softmax_rows_backward(const xt::xtensor<T, 2>& P,
                                        const xt::xtensor<T, 2>& dP)
{
    if (P.shape() != dP.shape())
        throw std::invalid_argument("softmax_rows_backward: P and dP differ in shape");
    const std::size_t n = P.shape(0), m = P.shape(1);
    xt::xtensor<T, 2> dS = xt::zeros<T>({n, m});  // n×m
    for (std::size_t i = 0; i < n; ++i) {
        const T* p = P.data() + i * m;
        const T* dp = dP.data() + i * m;
        T* ds = dS.data() + i * m;
        T average = 0;  // Σ_j p_j dp_j: the incoming gradient averaged with the weights
        for (std::size_t j = 0; j < m; ++j) average += p[j] * dp[j];
        for (std::size_t j = 0; j < m; ++j) ds[j] = p[j] * (dp[j] - average);
    }
    return dS;
}

// ⟨Backpropagate through scaled dot-product attention⟩ 04-learning-attention.md:123
/// @brief Gradients of a loss with respect to the
/// inputs of one scaled dot-product attention call.
template <class T>
struct AttentionGradients {
    xt::xtensor<T, 2> dQ;  ///< n×d_k
    xt::xtensor<T, 2> dK;  ///< m×d_k
    xt::xtensor<T, 2> dV;  ///< m×d_v
};

/// @brief Backward pass of O = softmax(Q·Kᵀ/√d_k)·V.
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
/// @param P  the forward pass's weights attention_weights(Q, K), n×m
/// @param dO the gradient of the loss with respect to O, n×d_v
/// @return dQ (n×d_k), dK (m×d_k), dV (m×d_v)
template <class T>
AttentionGradients<T> attention_backward(const xt::xtensor<T, 2>& Q,
                                         const xt::xtensor<T, 2>& K,
                                         const xt::xtensor<T, 2>& V,
                                         const xt::xtensor<T, 2>& P,
                                         const xt::xtensor<T, 2>& dO)
{
    check_attention_shapes(Q, K, V);
    if (P.shape(0) != Q.shape(0) || P.shape(1) != K.shape(0) ||
        dO.shape(0) != Q.shape(0) || dO.shape(1) != V.shape(1))
        throw std::invalid_argument("attention_backward: P must be n×m and dO n×d_v");
    const T scale = T(1) / std::sqrt(T(K.shape(1)));
    AttentionGradients<T> grad;
    grad.dV = detail::matmul(detail::transposed(P), dO);            // m×d_v = Pᵀ·dO
    // n×m = dO·Vᵀ
    const xt::xtensor<T, 2> dP = detail::matmul(dO, detail::transposed(V));
    xt::xtensor<T, 2> dS = softmax_rows_backward(P, dP);                // n×m
    // through S = s·Q·Kᵀ
    dS *= scale;
    grad.dQ = detail::matmul(dS, K);                                  // n×d_k
    grad.dK = detail::matmul(detail::transposed(dS), Q);            // m×d_k
    return grad;
}

// ⟨Describe one attention layer⟩ 04-learning-attention.md:196
/// @brief The parameters of one layer of multi-head self-attention. Head h uses
/// columns [h·d_k, (h+1)·d_k) of Q, K and V, with d_k = d_v = d_model/heads.
template <class T>
struct AttentionLayer {
    std::size_t heads = 1;  ///< h
    xt::xtensor<T, 2> W_q;  ///< d_model×d_model
    xt::xtensor<T, 2> W_k;  ///< d_model×d_model
    xt::xtensor<T, 2> W_v;  ///< d_model×d_model
    xt::xtensor<T, 2> W_o;  ///< d_model×d_model, the output projection
};

/// Columns [head·width, (head+1)·width) of X, as a contiguous n×width matrix.
template <class T>
xt::xtensor<T, 2> head_columns(const xt::xtensor<T, 2>& X, std::size_t head,
                               std::size_t width)
{
    return xt::view(X, xt::all(), xt::range(head * width, (head + 1) * width));
}

/// Write `block` (n×width) into columns [head·width, (head+1)·width) of X.
template <class T>
void set_head_columns(xt::xtensor<T, 2>& X, std::size_t head, std::size_t width,
                      const xt::xtensor<T, 2>& block)
{
    xt::view(X, xt::all(), xt::range(head * width, (head + 1) * width)) = block;
}

// ⟨Attend with softmax in every head⟩ 04-learning-attention.md:247
/// @brief The attention inside each head of a layer: softmax(Q·Kᵀ/√d_k) and its
/// backward pass. Layers take it as a parameter so later chapters can swap it.
struct SoftmaxAttention {
    /// @brief One head's weights. @param Q n×d_k; @param K m×d_k @return P, n×m
    template <class T>
    xt::xtensor<T, 2> weights(const xt::xtensor<T, 2>& Q,
                              const xt::xtensor<T, 2>& K) const
    {
        return attention_weights(Q, K);
    }
    /// @brief Backward pass of O = P·V for one head, P = weights(Q, K).
    template <class T>
    AttentionGradients<T> backward(const xt::xtensor<T, 2>& Q,
                                   const xt::xtensor<T, 2>& K,
                                   const xt::xtensor<T, 2>& V,
                                   const xt::xtensor<T, 2>& P,
                                   const xt::xtensor<T, 2>& dO) const
    {
        return attention_backward(Q, K, V, P, dO);
    }
};

// ⟨Run an attention layer forward and keep what the backward pass needs⟩ 04-learning-attention.md:230
/// @brief Everything one attention layer computed:
/// its output and the values its backward pass needs.
template <class T>
struct AttentionLayerForward {
    xt::xtensor<T, 2> Q, K, V;               ///< each n×d_model (h heads side by side)
    std::vector<xt::xtensor<T, 2>> weights;  ///< h matrices n×n, one per head
    xt::xtensor<T, 2> concat;  ///< the heads' outputs side by side, n×d_model
    xt::xtensor<T, 2> output;                ///< Y = concat·W_o, n×d_model
};
// ⟨Run an attention layer forward and keep what the backward pass needs⟩ +≡ 04-learning-attention.md:274
/// @brief Forward pass of multi-head self-attention, keeping the intermediate values.
/// @param layer the parameters; @param X the layer's input, n×d_model
/// @param attention what each head computes (softmax attention unless given)
/// @return the output (n×d_model) with everything the backward pass needs
template <class T, class Attention = SoftmaxAttention>
AttentionLayerForward<T> attention_layer_forward(const AttentionLayer<T>& layer,
                                                 const xt::xtensor<T, 2>& X,
                                                 const Attention& attention = {})
{
    const std::size_t n = X.shape(0), d_model = X.shape(1), h = layer.heads;
    if (h == 0 || d_model % h != 0 || layer.W_q.shape(0) != d_model ||
        layer.W_q.shape(1) != d_model)
        throw std::invalid_argument("attention_layer_forward: need d_model×d_model "
                                    "weights and h dividing d_model");
    const std::size_t d_k = d_model / h;
    AttentionLayerForward<T> f;
    f.Q = detail::matmul(X, layer.W_q);  // n×d_model
    f.K = detail::matmul(X, layer.W_k);  // n×d_model
    f.V = detail::matmul(X, layer.W_v);  // n×d_model
    f.concat = xt::zeros<T>({n, d_model});
    for (std::size_t head = 0; head < h; ++head) {
        const xt::xtensor<T, 2> Q_h = head_columns(f.Q, head, d_k);  // n×d_k
        const xt::xtensor<T, 2> K_h = head_columns(f.K, head, d_k);  // n×d_k
        const xt::xtensor<T, 2> V_h = head_columns(f.V, head, d_k);  // n×d_v
        f.weights.push_back(attention.weights(Q_h, K_h));            // n×n
        // n×d_v
        set_head_columns(f.concat, head, d_k, detail::matmul(f.weights.back(), V_h));
    }
    f.output = detail::matmul(f.concat, layer.W_o);  // n×d_model
    return f;
}

// ⟨Backpropagate through an attention layer⟩ 04-learning-attention.md:325
/// @brief Gradients of a loss with respect to
/// one attention layer's parameters and input.
template <class T>
struct AttentionLayerGradients {
    xt::xtensor<T, 2> dW_q, dW_k, dW_v, dW_o;  ///< each d_model×d_model
    xt::xtensor<T, 2> dX;                      ///< n×d_model
};

/// @brief Backward pass of attention_layer_forward.
/// @param layer the parameters; @param X the layer's input, n×d_model
/// @param f  what the forward pass computed on X
/// @param dY the gradient of the loss with respect to the layer's output, n×d_model
/// @param attention what each head computed, as in the forward pass
/// @return the gradients of the four weight matrices and of X
template <class T, class Attention = SoftmaxAttention>
AttentionLayerGradients<T> attention_layer_backward(const AttentionLayer<T>& layer,
                                                    const xt::xtensor<T, 2>& X,
                                                    const AttentionLayerForward<T>& f,
                                                    const xt::xtensor<T, 2>& dY,
                                                    const Attention& attention = {})
{
    using detail::matmul, detail::transposed;
    const std::size_t h = layer.heads, d_k = X.shape(1) / h;
    AttentionLayerGradients<T> grad;
    grad.dW_o = matmul(transposed(f.concat), dY);                   // d_model×d_model
    const xt::xtensor<T, 2> d_concat = matmul(dY, transposed(layer.W_o));  // n×d_model
    xt::xtensor<T, 2> dQ = xt::zeros<T>(f.Q.shape()), dK = xt::zeros<T>(f.K.shape()),
                      dV = xt::zeros<T>(f.V.shape());
    for (std::size_t head = 0; head < h; ++head) {
        const AttentionGradients<T> g = attention.backward(
            head_columns(f.Q, head, d_k), head_columns(f.K, head, d_k),
            head_columns(f.V, head, d_k), f.weights[head],
            head_columns(d_concat, head, d_k));
        set_head_columns(dQ, head, d_k, g.dQ);  // n×d_k
        set_head_columns(dK, head, d_k, g.dK);  // n×d_k
        set_head_columns(dV, head, d_k, g.dV);  // n×d_v
    }
    const xt::xtensor<T, 2> X_t = transposed(X);  // d_model×n
    grad.dW_q = matmul(X_t, dQ);
    grad.dW_k = matmul(X_t, dK);
    grad.dW_v = matmul(X_t, dV);
    grad.dX = matmul(dQ, transposed(layer.W_q));
    grad.dX += matmul(dK, transposed(layer.W_k));
    grad.dX += matmul(dV, transposed(layer.W_v));
    return grad;
}

// ⟨Differentiate numerically⟩ 04-learning-attention.md:393
/// @brief Central finite differences of `loss()` with respect to every entry of `x`.
/// Perturbs x in place (and restores it): (L(x + ε) − L(x − ε)) / 2ε.
/// @param x    the matrix to differentiate with respect to, rows×cols
/// @param loss a callable returning the loss as a double, reading x
/// @return the numerical gradient, rows×cols
template <class Loss>
xt::xtensor<double, 2> numerical_gradient(xt::xtensor<double, 2>& x, Loss&& loss,
                                          double epsilon = 1e-5)
{
    xt::xtensor<double, 2> grad = xt::zeros<double>(x.shape());
    for (std::size_t k = 0; k < x.size(); ++k) {
        const double saved = x.data()[k];
        x.data()[k] = saved + epsilon;
        const double above = loss();
        x.data()[k] = saved - epsilon;
        const double below = loss();
        x.data()[k] = saved;
        grad.data()[k] = (above - below) / (2 * epsilon);
    }
    return grad;
}

// ⟨Compare two gradients⟩ 04-learning-attention.md:422
/// @brief ‖a − b‖ / max(‖a‖, ‖b‖) (Euclidean norms); 0 when both are zero.
inline double relative_error(const xt::xtensor<double, 2>& a,
                             const xt::xtensor<double, 2>& b)
{
    if (a.shape() != b.shape())
        throw std::invalid_argument("relative_error: shapes differ");
    double diff = 0, norm_a = 0, norm_b = 0;
    for (std::size_t k = 0; k < a.size(); ++k) {
        diff += (a.data()[k] - b.data()[k]) * (a.data()[k] - b.data()[k]);
        norm_a += a.data()[k] * a.data()[k];
        norm_b += b.data()[k] * b.data()[k];
    }
    const double scale = std::sqrt(std::max(norm_a, norm_b));
    return scale == 0 ? 0.0 : std::sqrt(diff) / scale;
}

// ⟨Check the gradients of one attention call⟩ 04-learning-attention.md:448
/// Named gradients and their relative errors against central differences.
using GradientErrors = std::vector<std::pair<std::string, double>>;

/// @brief Check attention_backward against central differences of
/// L = Σ G ⊙ O, O = masked attention (chapter 2), whose gradient dO is G.
/// @param Q n×d_k; @param K m×d_k; @param V m×d_v (copies: they are perturbed)
/// @param G n×d_v; @param mask n×m, true where query i may attend key j
/// @return the relative errors of "dQ", "dK" and "dV"
inline GradientErrors check_attention_gradients(xt::xtensor<double, 2> Q,
                                                xt::xtensor<double, 2> K,
                                                xt::xtensor<double, 2> V,
                                                const xt::xtensor<double, 2>& G,
                                                const Mask& mask)
{
    auto loss = [&] {
        return double(xt::sum(G * scaled_dot_product_attention(Q, K, V, mask))());
    };
    const AttentionGradients<double> grad =
        attention_backward(Q, K, V, attention_weights(Q, K, mask), G);
    return {{"dQ", relative_error(grad.dQ, numerical_gradient(Q, loss))},
            {"dK", relative_error(grad.dK, numerical_gradient(K, loss))},
            {"dV", relative_error(grad.dV, numerical_gradient(V, loss))}};
}

// ⟨Check the gradients of an attention layer⟩ 04-learning-attention.md:476
/// @brief Check attention_layer_backward against central differences of
/// L = Σ G ⊙ Y, Y the layer's output on X.
/// @param layer and @param X copies (they are perturbed); X n×d_model
/// @param G n×d_model
/// @return the relative errors of "dW_q", "dW_k", "dW_v", "dW_o" and "dX"
inline GradientErrors check_layer_gradients(AttentionLayer<double> layer,
                                            xt::xtensor<double, 2> X,
                                            const xt::xtensor<double, 2>& G)
{
    auto loss = [&] {
        return double(xt::sum(G * attention_layer_forward(layer, X).output)());
    };
    const AttentionLayerGradients<double> grad =
        attention_layer_backward(layer, X, attention_layer_forward(layer, X), G);
    return {{"dW_q", relative_error(grad.dW_q, numerical_gradient(layer.W_q, loss))},
            {"dW_k", relative_error(grad.dW_k, numerical_gradient(layer.W_k, loss))},
            {"dW_v", relative_error(grad.dW_v, numerical_gradient(layer.W_v, loss))},
            {"dW_o", relative_error(grad.dW_o, numerical_gradient(layer.W_o, loss))},
            {"dX", relative_error(grad.dX, numerical_gradient(X, loss))}};
}

}  // namespace attn
