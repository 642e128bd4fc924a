// Generated from chapters/03-multi-head-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 3: multi-head attention in
/// PyTorch's head layout, with and without a mask.

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/masked_attention.hpp"

namespace attn {

// ⟨Check the number of heads and the weights' shapes⟩ 03-multi-head-attention.md:208
/// @brief Throw std::invalid_argument unless num_heads ≥ 1 divides d_model.
inline void check_head_count(std::size_t d_model, std::size_t num_heads)
{
    if (num_heads == 0 || d_model % num_heads != 0)
        throw std::invalid_argument(
            "multi-head attention: " + std::to_string(num_heads) +
            " heads do not divide d_model = " + std::to_string(d_model));
}

/// @brief Throw std::invalid_argument unless X_q and X_kv
/// have width d_model and every W is d_model×d_model.
template <class T>
void check_multi_head_shapes(const xt::xtensor<T, 2>& X_q,
                             const xt::xtensor<T, 2>& X_kv,
                             const std::vector<const xt::xtensor<T, 2>*>& weights,
                             std::size_t num_heads)
{
    const std::size_t d_model = X_q.shape(1);
    if (d_model == 0)
        throw std::invalid_argument("multi-head attention: the tokens are " +
                                    std::to_string(X_q.shape(0)) +
                                    "×0; d_model must be ≥ 1");
    if (X_kv.shape(1) != d_model)
        throw std::invalid_argument("multi-head attention: X_q has width " +
                                    std::to_string(d_model) + " but X_kv has width " +
                                    std::to_string(X_kv.shape(1)));
    if (X_kv.shape(0) == 0)
        throw std::invalid_argument("multi-head attention: there are no keys (m = 0)");
    for (const xt::xtensor<T, 2>* W : weights)
        if (W->shape(0) != d_model || W->shape(1) != d_model)
            throw std::invalid_argument(
                "multi-head attention: a weight matrix is " +
                std::to_string(W->shape(0)) + "×" + std::to_string(W->shape(1)) +
                ", expected d_model×d_model = " + std::to_string(d_model) + "×" +
                std::to_string(d_model));
    check_head_count(d_model, num_heads);
}

// ⟨Split the columns into heads⟩ 03-multi-head-attention.md:58
/// @brief Cut the columns of X into `num_heads` consecutive
/// blocks: head t is columns [t·d_k, (t+1)·d_k).
/// @param X n×d_model; @param num_heads h, which must divide d_model
/// @return h matrices, each n×d_k with d_k = d_model/h; row i of each is token i
template <class T>
std::vector<xt::xtensor<T, 2>> split_heads(const xt::xtensor<T, 2>& X,
                                           std::size_t num_heads)
{
    check_head_count(X.shape(1), num_heads);
    const std::size_t d_k = X.shape(1) / num_heads;
    std::vector<xt::xtensor<T, 2>> heads;
    for (std::size_t t = 0; t < num_heads; ++t)
        // n×d_k
        heads.emplace_back(xt::view(X, xt::all(), xt::range(t * d_k, (t + 1) * d_k)));
    return heads;
}

// ⟨Merge the heads back into one matrix⟩ 03-multi-head-attention.md:80
/// @brief Put the heads side by side: the inverse of split_heads.
/// @param heads h matrices, each n×d_k
/// @return n×(h·d_k), whose row i is token i's rows of every head, head 0 first
template <class T>
xt::xtensor<T, 2> merge_heads(const std::vector<xt::xtensor<T, 2>>& heads)
{
    if (heads.empty()) throw std::invalid_argument("merge_heads: there are no heads");
    const std::size_t n = heads[0].shape(0), d_k = heads[0].shape(1);
    xt::xtensor<T, 2> merged = xt::zeros<T>({n, heads.size() * d_k});  // n×d_model
    for (std::size_t t = 0; t < heads.size(); ++t) {
        if (heads[t].shape(0) != n || heads[t].shape(1) != d_k)
            throw std::invalid_argument("merge_heads: the heads have different shapes");
        xt::view(merged, xt::all(), xt::range(t * d_k, (t + 1) * d_k)) = heads[t];
    }
    return merged;
}

// ⟨Compute masked multi-head attention⟩ 03-multi-head-attention.md:250
/// @brief Multi-head attention with a mask: project, split into heads,
/// attend per head, merge, project. Head t uses columns [t·d_k, (t+1)·d_k)
/// of Q, K and V (PyTorch's layout), d_k = d_model/h. A query whose mask
/// row is all false gets a zero row before W_o, so a zero output row.
/// @param X_q  tokens that ask, n×d_model
/// @param X_kv tokens that answer, m×d_model (X_q itself for self-attention)
/// @param W_q, W_k, W_v, W_o projections, each
/// d_model×d_model, multiplying on the right
/// @param num_heads h, dividing d_model
/// @param mask n×m, true where query i may attend key j (the same for every head)
/// @return outputs, n×d_model
template <class T>
xt::xtensor<T, 2> multi_head_attention(const xt::xtensor<T, 2>& X_q,
                                       const xt::xtensor<T, 2>& X_kv,
                                       const xt::xtensor<T, 2>& W_q,
                                       const xt::xtensor<T, 2>& W_k,
                                       const xt::xtensor<T, 2>& W_v,
                                       const xt::xtensor<T, 2>& W_o,
                                       std::size_t num_heads, const Mask& mask)
{
    check_multi_head_shapes(X_q, X_kv, {&W_q, &W_k, &W_v, &W_o}, num_heads);
    check_mask_shape(mask, X_q.shape(0), X_kv.shape(0));
    // ⟨Project the tokens to queries, keys and values⟩ 03-multi-head-attention.md:279
    const xt::xtensor<T, 2> Q = xt::linalg::dot(X_q, W_q);   // n×d_model
    const xt::xtensor<T, 2> K = xt::linalg::dot(X_kv, W_k);  // m×d_model
    const xt::xtensor<T, 2> V = xt::linalg::dot(X_kv, W_v);  // m×d_model
    // ⟨Attend in every head⟩ 03-multi-head-attention.md:288
    const auto Q_heads = split_heads(Q, num_heads), K_heads = split_heads(K, num_heads),
               V_heads = split_heads(V, num_heads);  // h × (n×d_k, m×d_k, m×d_k)
    std::vector<xt::xtensor<T, 2>> O_heads;           // h × n×d_k
    for (std::size_t t = 0; t < num_heads; ++t)
        O_heads.push_back(scaled_dot_product_attention(Q_heads[t], K_heads[t], V_heads[t],
                                                       mask));
    // ⟨Merge the heads and mix them with W_o⟩ 03-multi-head-attention.md:297
    const xt::xtensor<T, 2> O = merge_heads(O_heads);  // n×d_model
    return xt::linalg::dot(O, W_o);                    // n×d_model
}

// ⟨Compute multi-head attention⟩ 03-multi-head-attention.md:306
/// @brief Multi-head attention without a mask (every query attends every key).
/// @param X_q n×d_model; @param X_kv m×d_model;
/// @param W_q, W_k, W_v, W_o each d_model×d_model
/// @param num_heads h, dividing d_model
/// @return outputs, n×d_model
template <class T>
xt::xtensor<T, 2> multi_head_attention(
    const xt::xtensor<T, 2>& X_q, const xt::xtensor<T, 2>& X_kv,
    const xt::xtensor<T, 2>& W_q, const xt::xtensor<T, 2>& W_k,
    const xt::xtensor<T, 2>& W_v, const xt::xtensor<T, 2>& W_o, std::size_t num_heads)
{
    const Mask everything = xt::ones<bool>({X_q.shape(0), X_kv.shape(0)});  // n×m
    return multi_head_attention(X_q, X_kv, W_q, W_k, W_v, W_o, num_heads, everything);
}

// ⟨Compute each head's attention weights⟩ 03-multi-head-attention.md:325
/// @brief The attention weights of every head, for plotting and tests.
/// @param X_q n×d_model; @param X_kv m×d_model; @param W_q, W_k each d_model×d_model
/// @param num_heads h; @param mask n×m, true where query i may attend key j
/// @return h matrices of weights, each n×m
template <class T>
std::vector<xt::xtensor<T, 2>> multi_head_attention_weights(
    const xt::xtensor<T, 2>& X_q, const xt::xtensor<T, 2>& X_kv,
    const xt::xtensor<T, 2>& W_q, const xt::xtensor<T, 2>& W_k, std::size_t num_heads,
    const Mask& mask)
{
    check_multi_head_shapes(X_q, X_kv, {&W_q, &W_k}, num_heads);
    const auto Q_heads = split_heads(xt::xtensor<T, 2>(xt::linalg::dot(X_q, W_q)),
                                     num_heads);  // h × n×d_k
    const auto K_heads = split_heads(xt::xtensor<T, 2>(xt::linalg::dot(X_kv, W_k)),
                                     num_heads);  // h × m×d_k
    std::vector<xt::xtensor<T, 2>> weights;
    for (std::size_t t = 0; t < num_heads; ++t)
        weights.push_back(attention_weights(Q_heads[t], K_heads[t], mask));
    return weights;
}

}  // namespace attn
