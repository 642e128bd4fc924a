// Generated from chapters/16-decoding.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 16: one query's attention over a run of keys, the KV cache of one
/// head, and split-KV attention of one query merged by chapter 13's rule.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "attn/flash_attention.hpp"
#include "attn/sliding_window.hpp"

namespace attn {

// ⟨Take a dot product in eight lanes⟩ 16-decoding.md:63
namespace detail {
/// Σ_c a_c b_c over d numbers, in eight interleaved partial sums added at the end
/// (a fixed order, so every caller gets the same bits).
template <class T>
T dot_in_lanes(const T* a, const T* b, std::size_t d)
{
    T lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::size_t c = 0;
    for (; c + 8 <= d; c += 8)
        for (std::size_t u = 0; u < 8; ++u) lane[u] += a[c + u] * b[c + u];
    for (std::size_t u = 0; c < d; ++c, ++u) lane[u] += a[c] * b[c];
    const T low = (lane[0] + lane[1]) + (lane[2] + lane[3]);
    const T high = (lane[4] + lane[5]) + (lane[6] + lane[7]);
    return low + high;
}
}  // namespace detail

// ⟨Attend over a run of keys⟩ 16-decoding.md:91
/// @brief The state of query `q` over keys [begin, end) of `keys` and `values`.
/// @param q      d_k numbers
/// @param keys   m×d_k, row-major; @param values m×d_v, row-major
/// @return the state; empty (max −∞, sum 0, acc zeros) when begin ≥ end
template <class T>
QueryState<T> attend_keys(const T* q, const T* keys, const T* values, std::size_t begin,
                          std::size_t end, std::size_t d_k, std::size_t d_v)
{
    QueryState<T> state;
    state.acc.assign(d_v, T(0));
    if (begin >= end) return state;
    const T scale = T(1) / std::sqrt(T(d_k));
    std::vector<T> scores(end - begin);
    for (std::size_t j = begin; j < end; ++j)  // pass 1: the scores
        scores[j - begin] = detail::dot_in_lanes(q, keys + j * d_k, d_k) * scale;
    // pass 2: weights and weighted values (chapter 6)
    add_scored_keys(state.row(), scores.data(), values + begin * d_v, d_v, end - begin);
    return state;
}

// ⟨Finish a state into an output row⟩ 16-decoding.md:117
/// @brief The output of a state: o / ℓ (d_v numbers); zeros if no key was seen.
template <class T>
xt::xtensor<T, 1> finish_state(const QueryState<T>& state)
{
    xt::xtensor<T, 1> out = xt::zeros<T>({state.acc.size()});  // d_v
    finish_row(state.row(), out.data());
    return out;
}

// ⟨Merge two states of one query⟩ 16-decoding.md:808
/// @brief The state of one query over the keys of both `a` and `b` (disjoint sets).
template <class T>
QueryState<T> merge_states(const QueryState<T>& a, const QueryState<T>& b)
{
    if (a.acc.size() != b.acc.size())
        throw std::invalid_argument("merge_states: values of width " +
                                    std::to_string(a.acc.size()) + " and " +
                                    std::to_string(b.acc.size()));
    QueryState<T> merged = a;
    merge_state_into(merged.row(), b.row());
    return merged;
}

// ⟨Keep the keys and values of one head⟩ 16-decoding.md:138
/// @brief The keys and values of one attention head, one row per token seen so far.
template <class T>
class KVCache {
public:
    /// @brief An empty cache for keys of width d_k and values of width d_v (both ≥ 1).
    KVCache(std::size_t d_k, std::size_t d_v) : d_k_(d_k), d_v_(d_v)
    {
        if (d_k == 0 || d_v == 0)
            throw std::invalid_argument("KVCache: d_k = " + std::to_string(d_k) +
                                        " and d_v = " + std::to_string(d_v) +
                                        " must both be at least 1");
    }

    /// @brief Append one token's key (d_k numbers) and value (d_v numbers).
    void append(const xt::xtensor<T, 1>& k, const xt::xtensor<T, 1>& v)
    {
        if (k.size() != d_k_ || v.size() != d_v_)
            throw std::invalid_argument(
                "KVCache::append: got a key of " + std::to_string(k.size()) +
                " and a value of " + std::to_string(v.size()) +
                " numbers, the cache holds " + std::to_string(d_k_) + " and " +
                std::to_string(d_v_));
        keys_.insert(keys_.end(), k.begin(), k.end());
        values_.insert(values_.end(), v.begin(), v.end());
    }

    /// @brief The output row (d_v) of query q (d_k) over every token appended so far.
    xt::xtensor<T, 1> attend(const xt::xtensor<T, 1>& q) const
    {
        if (q.size() != d_k_)
            throw std::invalid_argument("KVCache::attend: the query has " +
                                        std::to_string(q.size()) +
                                        " numbers, keys have " + std::to_string(d_k_));
        if (size() == 0)
            throw std::invalid_argument("KVCache::attend: the cache is empty");
        return finish_state(
            attend_keys(q.data(), keys_.data(), values_.data(), 0, size(), d_k_, d_v_));
    }

    /// Tokens held, m.
    std::size_t size() const { return keys_.size() / d_k_; }
    /// Width of a key, d_k.
    std::size_t d_k() const { return d_k_; }
    /// Width of a value, d_v.
    std::size_t d_v() const { return d_v_; }
    /// @brief Make room for `tokens` rows without moving the blocks again.
    void reserve(std::size_t tokens)
    {
        keys_.reserve(tokens * d_k_);
        values_.reserve(tokens * d_v_);
    }
    /// @brief Forget every token after the first `tokens` (tokens ≤ size()).
    void truncate(std::size_t tokens)
    {
        if (tokens > size())
            throw std::invalid_argument("KVCache::truncate: cannot keep " +
                                        std::to_string(tokens) + " of " +
                                        std::to_string(size()) + " tokens");
        keys_.resize(tokens * d_k_);
        values_.resize(tokens * d_v_);
    }
    /// Bytes of the keys and values held (not counting spare capacity).
    std::size_t bytes() const { return (keys_.size() + values_.size()) * sizeof(T); }
    /// The keys, m×d_k, row-major; the values, m×d_v.
    const T* key_data() const { return keys_.data(); }
    const T* value_data() const { return values_.data(); }

private:
    std::size_t d_k_, d_v_;
    std::vector<T> keys_, values_;  // m×d_k and m×d_v, row-major, growing by rows
};

// ⟨Split one query's keys into parts and merge them⟩ 16-decoding.md:831
/// @brief One query's attention over K, V computed in `parts` pieces and merged.
/// @param q d_k numbers; @param K m×d_k; @param V m×d_v (m ≥ 1)
/// @param parts P ≥ 1; more parts than keys are clamped to m (one key each)
/// @param threads threads computing the parts (≥ 1); the result does not depend on it
/// @return the output row, d_v
template <class T>
xt::xtensor<T, 1> split_kv_attention(const xt::xtensor<T, 1>& q,
                                     const xt::xtensor<T, 2>& K,
                                     const xt::xtensor<T, 2>& V, std::size_t parts,
                                     std::size_t threads = 1)
{
    const std::size_t m = K.shape(0), d_k = K.shape(1), d_v = V.shape(1);
    if (q.size() != d_k || V.shape(0) != m || m == 0 || d_k == 0)
        throw std::invalid_argument(
            "split_kv_attention: q has " + std::to_string(q.size()) +
            " numbers, K is " + std::to_string(m) + "×" + std::to_string(d_k) +
            ", V is " + std::to_string(V.shape(0)) + "×" + std::to_string(d_v) +
            "; need q of d_k, K m×d_k, V m×d_v, m ≥ 1");
    if (parts == 0 || threads == 0)
        throw std::invalid_argument(
            "split_kv_attention: need parts ≥ 1 and threads ≥ 1");
    parts = std::min(parts, m);
    threads = std::min(threads, parts);
    std::vector<QueryState<T>> states(parts);
    auto work = [&](std::size_t first) {
        for (std::size_t p = first; p < parts; p += threads)
            states[p] = attend_keys(q.data(), K.data(), V.data(), p * m / parts,
                                    (p + 1) * m / parts, d_k, d_v);
    };
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(work, t);
    work(0);
    for (std::thread& thread : pool) thread.join();
    QueryState<T> total = states[0];
    for (std::size_t p = 1; p < parts; ++p) total = merge_states(total, states[p]);
    return finish_state(total);
}

}  // namespace attn
