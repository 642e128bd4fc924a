// Generated from chapters/18-streaming.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 18: streaming attention: a sliding window that keeps the first
/// tokens (attention sinks), its cache for decoding, and a model run with it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/masked_attention.hpp"
#include "attn/position_model.hpp"
#include "attn/positions.hpp"
#include "attn/sliding_window.hpp"

namespace attn {

// ⟨Find the keys a streaming query sees⟩ 18-streaming.md:45
/// @brief The keys query i sees under a window of w with s sinks: the sinks
/// [0, sink_end) and the window [window_begin, i]; the two never overlap.
struct StreamingKeys {
    std::size_t sink_end = 0;      ///< min(s, i + 1)
    std::size_t window_begin = 0;  ///< max(i − w + 1, sink_end)
};

/// The keys query i sees: the first s tokens and the last w (w ≥ 1).
inline StreamingKeys streaming_keys(std::size_t i, std::size_t window,
                                    std::size_t sinks)
{
    const std::size_t sink_end = std::min(sinks, i + 1);
    return {sink_end, std::max(first_key_in_window(i, window), sink_end)};
}

// ⟨Build the sink-window mask⟩ 18-streaming.md:64
/// @brief The streaming pattern as a dense mask (for figures and tests only).
/// @param n      sequence length
/// @param window w ≥ 1: the last w tokens, i − w < j ≤ i
/// @param sinks  s ≥ 0: the first s tokens, j < s, kept for every later query
/// @return mask, n×n, true where query i may attend key j: j ≤ i and
///         (i − w < j or j < s)
inline Mask sink_window_mask(std::size_t n, std::size_t window, std::size_t sinks)
{
    check_window(window);
    Mask mask = xt::zeros<bool>({n, n});  // n×n
    for (std::size_t i = 0; i < n; ++i) {
        const StreamingKeys keys = streaming_keys(i, window, sinks);
        for (std::size_t j = 0; j < keys.sink_end; ++j) mask(i, j) = true;
        for (std::size_t j = keys.window_begin; j <= i; ++j) mask(i, j) = true;
    }
    return mask;
}

// ⟨Compute streaming attention with separate sink queries⟩ 18-streaming.md:107
/// @brief streaming_attention where row i of `Q_sink` meets the sinks and row i of `Q`
/// the window: how a model with rotary positions gives the sinks their place in the
/// cache. With Q_sink = Q it is streaming_attention.
/// @param Q queries for the window, n×d_k; @param Q_sink queries for the sinks, n×d_k
/// @param K keys, n×d_k; @param V values, n×d_v; @param window w ≥ 1; @param sinks s
/// @param visits optional: adds the query–key scores computed
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> streaming_attention(const xt::xtensor<T, 2>& Q,
                                      const xt::xtensor<T, 2>& Q_sink,
                                      const xt::xtensor<T, 2>& K,
                                      const xt::xtensor<T, 2>& V, std::size_t window,
                                      std::size_t sinks, KeyVisits* visits = nullptr)
{
    check_self_attention_inputs(Q, K, V);
    if (Q_sink.shape() != Q.shape())
        throw std::invalid_argument("streaming_attention: Q_sink must have Q's shape");
    check_window(window);
    const std::size_t n = Q.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    OnlineSoftmax<T> row(d_k, d_v);
    for (std::size_t i = 0; i < n; ++i) {
        const StreamingKeys keys = streaming_keys(i, window, sinks);
        row.reset();
        row.add_run(Q_sink.data() + i * d_k, K.data(), V.data(), keys.sink_end);
        row.add_run(Q.data() + i * d_k, K.data() + keys.window_begin * d_k,
                    V.data() + keys.window_begin * d_v, i + 1 - keys.window_begin);
        row.write(O.data() + i * d_v);
    }
    if (visits) visits->scores += row.scores_computed();
    return O;
}

// ⟨Compute streaming attention⟩ 18-streaming.md:142
/// @brief Attention with a window of w and s sinks: query i attends keys j ≤ i with
/// i − w < j or j < s. Equals scaled_dot_product_attention(Q, K, V,
/// sink_window_mask(n, w, s)) in O(n·(w + s)) time; it never builds an n×n matrix.
/// @param Q queries, n×d_k; @param K keys, n×d_k; @param V values, n×d_v
/// @param window w ≥ 1; @param sinks s ≥ 0 (s = 0 is chapter 6's window)
/// @param visits optional: adds the query–key scores computed (the allowed pairs)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> streaming_attention(const xt::xtensor<T, 2>& Q,
                                      const xt::xtensor<T, 2>& K,
                                      const xt::xtensor<T, 2>& V, std::size_t window,
                                      std::size_t sinks, KeyVisits* visits = nullptr)
{
    return streaming_attention(Q, Q, K, V, window, sinks, visits);
}

// ⟨Keep the sinks and a rolling window of keys and values⟩ 18-streaming.md:178
/// @brief The keys and values a streaming decoder keeps: the first s tokens for good
/// (the sinks) and the last w of the others in a ring of w slots. Memory
/// (s + w)·(d_k + d_v) numbers, however many tokens have passed.
template <class T>
class StreamingKVCache {
public:
    /// @param window w ≥ 1; @param sinks s ≥ 0; @param d_k key width; @param d_v value
    /// width
    /// @throws std::invalid_argument if w = 0 or (s + w)·(d_k + d_v) numbers overflow
    StreamingKVCache(std::size_t window, std::size_t sinks, std::size_t d_k,
                     std::size_t d_v)
        : window_(window), sinks_(sinks), d_k_(d_k), d_v_(d_v), softmax_(d_k, d_v)
    {
        check_window(window);
        if (sinks > std::numeric_limits<std::size_t>::max() - window)
            throw std::invalid_argument("streaming cache: s + w overflows a size");
        check_cache_size(window + sinks, d_k, d_v);
        sink_keys_.reserve(sinks * d_k);
        sink_values_.reserve(sinks * d_v);
        ring_keys_.resize(window * d_k);
        ring_values_.resize(window * d_v);
    }

    /// Store the next token's key (d_k numbers) and value (d_v numbers): as a sink
    /// while fewer than s tokens came, else in the ring over the token w back.
    void append(const T* key, const T* value)
    {
        if (seen_ < sinks_) {
            sink_keys_.insert(sink_keys_.end(), key, key + d_k_);
            sink_values_.insert(sink_values_.end(), value, value + d_v_);
        } else {
            std::copy(key, key + d_k_, ring_keys_.begin() + next_ * d_k_);
            std::copy(value, value + d_v_, ring_values_.begin() + next_ * d_v_);
            next_ = (next_ + 1) % window_;
            in_ring_ = std::min(in_ring_ + 1, window_);
        }
        ++seen_;
    }

    /// Attend `query` (d_k numbers) to the sinks and the window; write the output (d_v
    /// numbers) to `out`: row t of streaming_attention after t + 1 appends.
    void attend(const T* query, T* out) { attend(query, query, out); }

    /// attend with `sink_query` (d_k numbers) meeting the sinks and `query` the window.
    void attend(const T* query, const T* sink_query, T* out)
    {
        softmax_.reset();
        softmax_.add_run(sink_query, sink_keys_.data(), sink_values_.data(),
                         sinks_held());
        // the window, oldest first: slots next…end, then 0…next − 1
        const std::size_t oldest = in_ring_ < window_ ? 0 : next_;
        const std::size_t tail = in_ring_ - oldest;
        softmax_.add_run(query, ring_keys_.data() + oldest * d_k_,
                         ring_values_.data() + oldest * d_v_, tail);
        softmax_.add_run(query, ring_keys_.data(), ring_values_.data(),
                         in_ring_ - tail);
        softmax_.write(out);
    }

    /// Tokens appended so far (the position of the next one).
    std::size_t seen() const { return seen_; }
    /// Tokens held: min(seen, s) sinks and at most w in the window.
    std::size_t size() const { return sinks_held() + in_ring_; }
    /// Bytes reserved for keys and values: (s + w)·(d_k + d_v)·sizeof(T).
    std::size_t bytes() const
    {
        return (sink_keys_.capacity() + sink_values_.capacity() + ring_keys_.size() +
                ring_values_.size()) *
               sizeof(T);
    }

private:
    std::size_t sinks_held() const { return std::min(seen_, sinks_); }

    std::size_t window_, sinks_, d_k_, d_v_;
    std::size_t seen_ = 0, in_ring_ = 0;
    std::size_t next_ = 0;                    // the ring slot the next token overwrites
    std::vector<T> sink_keys_, sink_values_;  // s×d_k, s×d_v: the first tokens
    std::vector<T> ring_keys_, ring_values_;  // w×d_k, w×d_v
    OnlineSoftmax<T> softmax_;
};

// ⟨Decode token by token with the streaming cache⟩ 18-streaming.md:266
/// @brief Streaming attention computed as a decoder would: token by token through a
/// StreamingKVCache. Equals streaming_attention(Q, K, V, window, sinks).
/// @param Q queries, n×d_k; @param K keys, n×d_k; @param V values, n×d_v
/// @param window w ≥ 1; @param sinks s ≥ 0 (both clamped to n, so the cache never
/// holds more slots than there are tokens)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> decode_with_streaming_cache(const xt::xtensor<T, 2>& Q,
                                              const xt::xtensor<T, 2>& K,
                                              const xt::xtensor<T, 2>& V,
                                              std::size_t window, std::size_t sinks)
{
    check_self_attention_inputs(Q, K, V);
    check_window(window);
    const std::size_t n = Q.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    StreamingKVCache<T> cache(std::min(window, n), std::min(sinks, n), d_k, d_v);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    for (std::size_t t = 0; t < n; ++t) {
        cache.append(K.data() + t * d_k, V.data() + t * d_v);
        cache.attend(Q.data() + t * d_k, O.data() + t * d_v);
    }
    return O;
}

// ⟨Say where the sinks sit⟩ 18-streaming.md:312
/// @brief The position a sink has for a query of a RoPE model: its place in the text
/// (absolute), or its place in the cache (in_cache, as StreamingLLM does): once the
/// cache is full, query i sits at s + w − 1, not at i, so no distance to a sink
/// exceeds s + w − 1.
enum class SinkPositions { absolute, in_cache };

// ⟨Run a position model with the streaming pattern⟩ 18-streaming.md:325
/// @brief Logits of chapter 15's model on `tokens` when every head attends with a
/// window of w and s sinks (w ≥ n gives the model's own causal attention).
/// @param model a model whose positions are in its embeddings or its rotations (none,
///              sinusoidal, learned, RoPE); a score bias (T5, ALiBi) throws
/// @param positions where the sinks sit; in_cache needs a RoPE model
/// @return logits, n×vocab (row i predicts the target at i)
template <class T>
xt::xtensor<T, 2> streaming_model_logits(const PositionModel<T>& model,
                                         const std::vector<std::size_t>& tokens,
                                         std::size_t window, std::size_t sinks,
                                         SinkPositions positions =
                                             SinkPositions::absolute)
{
    const PositionScheme scheme = model.shape.scheme;
    if (scheme == PositionScheme::t5_bias || scheme == PositionScheme::alibi)
        throw std::invalid_argument("streaming_model_logits: " + scheme_name(scheme) +
                                    " biases the scores; this kernel adds no bias");
    if (positions == SinkPositions::in_cache && scheme != PositionScheme::rope)
        throw std::invalid_argument(
            "streaming_model_logits: sinks placed in the cache need RoPE");
    check_window(window);
    using detail::matmul;
    const std::size_t n = tokens.size(), d = model.shape.d_model;
    const std::size_t cache_end = sinks + std::min(window, n);  // s + w, clamped
    xt::xtensor<T, 2> X = embed_positions(model, tokens);  // n×d_model
    for (const AttentionLayer<T>& layer : model.layers) {
        const std::size_t d_k = d / layer.heads;
        const xt::xtensor<T, 2> Q = matmul(X, layer.W_q);  // n×d_model
        const xt::xtensor<T, 2> K = matmul(X, layer.W_k);  // n×d_model
        const xt::xtensor<T, 2> V = matmul(X, layer.W_v);  // n×d_model
        xt::xtensor<T, 2> concat = xt::zeros<T>({n, d});   // n×d_model
        for (std::size_t head = 0; head < layer.heads; ++head) {
            xt::xtensor<T, 2> q = head_columns(Q, head, d_k);  // n×d_k
            xt::xtensor<T, 2> k = head_columns(K, head, d_k);  // n×d_k
            xt::xtensor<T, 2> q_sink = q;  // n×d_k: the queries the sinks meet
            if (scheme == PositionScheme::rope) {
                for (std::size_t i = 0; i < n; ++i) {  // query i at min(i, s + w − 1)
                    const std::size_t at = positions == SinkPositions::in_cache
                                               ? std::min(i, cache_end - 1)
                                               : i;
                    xt::row(q_sink, i) = xt::row(rope(xt::xtensor<T, 2>(xt::view(
                                                          q, xt::range(i, i + 1))),
                                                      std::int64_t(at)),
                                                 0);
                }
                q = rope(q, 0), k = rope(k, 0);
            }
            const xt::xtensor<T, 2> v = head_columns(V, head, d_k);  // n×d_v
            set_head_columns(concat, head, d_k,
                             streaming_attention(q, q_sink, k, v, window, sinks));
        }
        X += matmul(concat, layer.W_o);  // the residual connection
    }
    return matmul(X, model.W_out);  // n×vocab
}

}  // namespace attn
