// Generated from chapters/17-grouped-query.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 17: grouped-query and multi-query attention, the grouped KV-cache
/// read, and causal models whose heads share keys and values.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/causal_decoder.hpp"
#include "attn/kv_cache.hpp"
#include "attn/masked_attention.hpp"
#include "attn/multi_head_attention.hpp"
#include "attn/tiny_model.hpp"

namespace attn {

// ⟨Check the numbers of heads and groups⟩ 17-grouped-query.md:63
/// @brief Throw std::invalid_argument unless h divides d_model and g ≥ 1 divides h.
inline void check_grouping(std::size_t d_model, std::size_t heads, std::size_t kv_heads)
{
    check_head_count(d_model, heads);
    if (kv_heads == 0 || heads % kv_heads != 0)
        throw std::invalid_argument(
            "grouped-query attention: " + std::to_string(kv_heads) +
            " key/value heads do not divide h = " + std::to_string(heads));
}

/// @brief The key/value head that query head t reads: ⌊t / (h/g)⌋.
inline std::size_t kv_head_of(std::size_t t, std::size_t heads, std::size_t kv_heads)
{
    return t / (heads / kv_heads);
}

// ⟨Check the shapes of grouped-query attention⟩ 17-grouped-query.md:83
/// @brief Throw std::invalid_argument unless X_q is n×d_model, X_kv m×d_model (m ≥ 1),
/// W_q and W_o d_model×d_model, W_k and W_v d_model×(g·d_k).
template <class T>
void check_grouped_shapes(const xt::xtensor<T, 2>& X_q, const xt::xtensor<T, 2>& X_kv,
                          const xt::xtensor<T, 2>& W_q, const xt::xtensor<T, 2>& W_k,
                          const xt::xtensor<T, 2>& W_v, const xt::xtensor<T, 2>& W_o,
                          std::size_t heads, std::size_t kv_heads)
{
    const std::size_t d_model = X_q.shape(1);
    if (X_kv.shape(1) != d_model)
        throw std::invalid_argument("grouped-query attention: X_q has width " +
                                    std::to_string(d_model) + " but X_kv has width " +
                                    std::to_string(X_kv.shape(1)));
    if (X_kv.shape(0) == 0)
        throw std::invalid_argument(
            "grouped-query attention: there are no keys (m = 0)");
    check_grouping(d_model, heads, kv_heads);
    const std::size_t d_kv = kv_heads * (d_model / heads);
    const auto check = [&](const xt::xtensor<T, 2>& W, const char* name,
                           std::size_t cols) {
        if (W.shape(0) != d_model || W.shape(1) != cols)
            throw std::invalid_argument(
                std::string("grouped-query attention: ") + name + " is " +
                std::to_string(W.shape(0)) + "×" + std::to_string(W.shape(1)) +
                ", expected " + std::to_string(d_model) + "×" + std::to_string(cols));
    };
    check(W_q, "W_q", d_model);
    check(W_k, "W_k", d_kv);
    check(W_v, "W_v", d_kv);
    check(W_o, "W_o", d_model);
}

// ⟨Compute grouped-query attention⟩ 17-grouped-query.md:122
/// @brief Grouped-query attention: h query heads in g groups, each group sharing one
/// key head and one value head (g = h: multi-head attention; g = 1: multi-query).
/// Query head t uses columns [t·d_k, (t+1)·d_k) of Q and key/value head ⌊t/(h/g)⌋,
/// columns [j·d_k, (j+1)·d_k) of K and V (chapter 3's layout), d_k = d_model/h.
/// @param X_q  n×d_model; @param X_kv m×d_model
/// @param W_q, W_o d_model×d_model; @param W_k, W_v d_model×(g·d_k)
/// @param heads h, dividing d_model; @param kv_heads g, dividing h
/// @param mask n×m, true where query i may attend key j (the same for every head)
/// @return outputs, n×d_model
template <class T>
xt::xtensor<T, 2> grouped_query_attention(
    const xt::xtensor<T, 2>& X_q, const xt::xtensor<T, 2>& X_kv,
    const xt::xtensor<T, 2>& W_q, const xt::xtensor<T, 2>& W_k,
    const xt::xtensor<T, 2>& W_v, const xt::xtensor<T, 2>& W_o, std::size_t heads,
    std::size_t kv_heads, const Mask& mask)
{
    check_grouped_shapes(X_q, X_kv, W_q, W_k, W_v, W_o, heads, kv_heads);
    check_mask_shape(mask, X_q.shape(0), X_kv.shape(0));
    const xt::xtensor<T, 2> Q = xt::linalg::dot(X_q, W_q);  // n×(h·d_k)
    const xt::xtensor<T, 2> K = xt::linalg::dot(X_kv, W_k);  // m×(g·d_k)
    const xt::xtensor<T, 2> V = xt::linalg::dot(X_kv, W_v);  // m×(g·d_k)
    const auto Q_heads = split_heads(Q, heads);  // h × n×d_k
    const auto K_heads = split_heads(K, kv_heads);  // g × m×d_k
    const auto V_heads = split_heads(V, kv_heads);  // g × m×d_k
    std::vector<xt::xtensor<T, 2>> O_heads;  // h × n×d_k
    for (std::size_t t = 0; t < heads; ++t) {
        const std::size_t j = kv_head_of(t, heads, kv_heads);
        O_heads.push_back(
            scaled_dot_product_attention(Q_heads[t], K_heads[j], V_heads[j], mask));
    }
    const xt::xtensor<T, 2> O = merge_heads(O_heads);  // n×d_model
    return xt::linalg::dot(O, W_o);  // n×d_model
}

/// @brief Grouped-query attention without a mask (every query attends every key).
template <class T>
xt::xtensor<T, 2> grouped_query_attention(const xt::xtensor<T, 2>& X_q,
                                          const xt::xtensor<T, 2>& X_kv,
                                          const xt::xtensor<T, 2>& W_q,
                                          const xt::xtensor<T, 2>& W_k,
                                          const xt::xtensor<T, 2>& W_v,
                                          const xt::xtensor<T, 2>& W_o,
                                          std::size_t heads, std::size_t kv_heads)
{
    const Mask everything = xt::ones<bool>({X_q.shape(0), X_kv.shape(0)});  // n×m
    return grouped_query_attention(X_q, X_kv, W_q, W_k, W_v, W_o, heads, kv_heads,
                                   everything);
}

// ⟨Move between shared and per-head key columns⟩ 17-grouped-query.md:182
/// @brief Per-head weights from shared ones: key/value head j's columns copied into
/// every query head of its group. @param W d_model×(g·d_k) @return d_model×(h·d_k)
template <class T>
xt::xtensor<T, 2> repeat_kv_columns(const xt::xtensor<T, 2>& W, std::size_t heads,
                                    std::size_t kv_heads)
{
    if (kv_heads == 0 || heads % kv_heads != 0 || W.shape(1) % kv_heads != 0)
        throw std::invalid_argument("repeat_kv_columns: g must divide h and W's width");
    const std::size_t d_k = W.shape(1) / kv_heads;
    xt::xtensor<T, 2> out = xt::zeros<T>({W.shape(0), heads * d_k});  // d_model×(h·d_k)
    for (std::size_t t = 0; t < heads; ++t) {
        const std::size_t j = kv_head_of(t, heads, kv_heads);
        xt::view(out, xt::all(), xt::range(t * d_k, (t + 1) * d_k)) =
            xt::view(W, xt::all(), xt::range(j * d_k, (j + 1) * d_k));
    }
    return out;
}

/// @brief Shared weights from per-head ones: the mean of each group's columns
/// (Ainslie et al.'s conversion). @param W d_model×(h·d_k) @return d_model×(g·d_k)
template <class T>
xt::xtensor<T, 2> mean_pool_kv_columns(const xt::xtensor<T, 2>& W, std::size_t heads,
                                       std::size_t kv_heads)
{
    if (heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || W.shape(1) % heads != 0)
        throw std::invalid_argument(
            "mean_pool_kv_columns: g must divide h, h W's width");
    const std::size_t d_k = W.shape(1) / heads, size = heads / kv_heads;
    xt::xtensor<T, 2> out =
        xt::zeros<T>({W.shape(0), kv_heads * d_k});  // d_model×(g·d_k)
    for (std::size_t t = 0; t < heads; ++t) {
        const std::size_t j = kv_head_of(t, heads, kv_heads);
        xt::view(out, xt::all(), xt::range(j * d_k, (j + 1) * d_k)) +=
            xt::view(W, xt::all(), xt::range(t * d_k, (t + 1) * d_k));
    }
    out /= T(size);
    return out;
}

// ⟨Attend with every query of a group in one pass over its cache⟩ 17-grouped-query.md:242
/// @brief The outputs of `queries` (r×d_k, the query heads of one group) over every
/// token in `cache`, reading each key and value once. Row s equals cache.attend(row s).
/// @return r×d_v
template <class T>
xt::xtensor<T, 2> attend_group(const KVCache<T>& cache,
                               const xt::xtensor<T, 2>& queries)
{
    const std::size_t r = queries.shape(0), d_k = cache.d_k(), d_v = cache.d_v();
    const std::size_t m = cache.size();
    if (queries.shape(1) != d_k)
        throw std::invalid_argument("attend_group: queries of width " +
                                    std::to_string(queries.shape(1)) + ", keys of " +
                                    std::to_string(d_k));
    if (m == 0) throw std::invalid_argument("attend_group: the cache is empty");
    const T scale = T(1) / std::sqrt(T(d_k));
    std::vector<T> scores(r * m);  // r×m
    std::vector<T> max(r, -std::numeric_limits<T>::infinity()), sum(r, T(0));
    for (std::size_t j = 0; j < m; ++j) {  // pass 1: each key once, against every query
        const T* key_j = cache.key_data() + j * d_k;
        for (std::size_t s = 0; s < r; ++s) {
            const T score = detail::dot_in_lanes(&queries(s, 0), key_j, d_k) * scale;
            scores[s * m + j] = score;
            max[s] = std::max(max[s], score);
        }
    }
    xt::xtensor<T, 2> acc = xt::zeros<T>({r, d_v});  // r×d_v
    for (std::size_t j = 0; j < m; ++j) {  // pass 2: each value once, for every query
        const T* value_j = cache.value_data() + j * d_v;
        for (std::size_t s = 0; s < r; ++s) {
            const T weight = std::exp(scores[s * m + j] - max[s]);
            sum[s] += weight;
            T* acc_s = &acc(s, 0);
            for (std::size_t c = 0; c < d_v; ++c) acc_s[c] += weight * value_j[c];
        }
    }
    for (std::size_t s = 0; s < r; ++s)
        for (std::size_t c = 0; c < d_v; ++c) acc(s, c) = acc(s, c) / sum[s];
    return acc;
}

// ⟨Tie each group's key and value columns⟩ 17-grouped-query.md:295
namespace detail {
/// Set every query head's columns of W (d_model×(h·d_k)) to the first or the sum of
/// its group's columns.
template <class T>
void tie_columns(xt::xtensor<T, 2>& W, std::size_t heads, std::size_t kv_heads,
                 bool sum)
{
    const std::size_t d_k = W.shape(1) / heads, size = heads / kv_heads;
    for (std::size_t j = 0; j < kv_heads; ++j) {
        const std::size_t first = j * size;
        xt::xtensor<T, 2> shared =
            xt::view(W, xt::all(), xt::range(first * d_k, (first + 1) * d_k));
        for (std::size_t t = first + 1; sum && t < first + size; ++t)
            shared += xt::view(W, xt::all(), xt::range(t * d_k, (t + 1) * d_k));
        for (std::size_t t = first; t < first + size; ++t)
            xt::view(W, xt::all(), xt::range(t * d_k, (t + 1) * d_k)) = shared;
    }
}
}  // namespace detail

/// @brief Make each group's key and value columns equal to its first head's, in every
/// layer: the model then computes grouped-query attention with g = kv_heads.
template <class T>
void share_keys_and_values(TinyModel<T>& model, std::size_t kv_heads)
{
    check_grouping(model.shape.d_model, model.shape.heads, kv_heads);
    for (AttentionLayer<T>& layer : model.layers) {
        detail::tie_columns(layer.W_k, layer.heads, kv_heads, false);
        detail::tie_columns(layer.W_v, layer.heads, kv_heads, false);
    }
}

/// @brief Replace the gradient of every tied column by the sum over its group, so the
/// tied columns receive one shared gradient (and stay equal under Adam).
template <class T>
void sum_shared_gradients(TinyModel<T>& grad, std::size_t kv_heads)
{
    for (AttentionLayer<T>& layer : grad.layers) {
        detail::tie_columns(layer.W_k, layer.heads, kv_heads, true);
        detail::tie_columns(layer.W_v, layer.heads, kv_heads, true);
    }
}

// ⟨Run a model with grouped-query attention⟩ 17-grouped-query.md:344
/// @brief A causal TinyModel whose layers share keys and values in g groups.
template <class T>
struct GroupedModel {
    TinyModel<T> model;  ///< embeddings, W_q, W_o, W_out (its W_k, W_v unused)
    std::size_t kv_heads = 1;  ///< g
    std::vector<xt::xtensor<T, 2>> W_k, W_v;  ///< per layer, d_model×(g·d_k)
};

/// @brief The compact model of a multi-head model: each group's key and value columns
/// mean-pooled (for a model trained with tied columns, those columns themselves).
template <class T>
GroupedModel<T> group_model(const TinyModel<T>& model, std::size_t kv_heads)
{
    check_grouping(model.shape.d_model, model.shape.heads, kv_heads);
    GroupedModel<T> grouped{model, kv_heads, {}, {}};
    for (const AttentionLayer<T>& layer : model.layers) {
        grouped.W_k.push_back(mean_pool_kv_columns(layer.W_k, layer.heads, kv_heads));
        grouped.W_v.push_back(mean_pool_kv_columns(layer.W_v, layer.heads, kv_heads));
    }
    return grouped;
}

/// @brief The logits (n×vocab) of a grouped model on a prefix of tokens, causally.
template <class T>
xt::xtensor<T, 2> grouped_model_logits(const GroupedModel<T>& grouped,
                                       const std::vector<std::size_t>& tokens)
{
    xt::xtensor<T, 2> X = embed_tokens(grouped.model, tokens);  // n×d_model
    const Mask causal = causal_mask(tokens.size());  // n×n
    for (std::size_t l = 0; l < grouped.model.layers.size(); ++l) {
        const AttentionLayer<T>& layer = grouped.model.layers[l];
        X += grouped_query_attention(X, X, layer.W_q, grouped.W_k[l], grouped.W_v[l],
                                     layer.W_o, layer.heads, grouped.kv_heads, causal);
    }
    return detail::matmul(X, grouped.model.W_out);  // n×vocab
}

}  // namespace attn
