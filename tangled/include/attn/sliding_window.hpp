// Generated from chapters/06-sliding-window.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 6: sliding-window attention: the pattern, a banded kernel, the online
/// softmax it runs on, and the rolling-buffer KV cache for token-by-token decoding.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "attn/masked_attention.hpp"

namespace attn {

// ⟨Find the first key in a window⟩ 06-sliding-window.md:57
/// First key j that query i may attend under a window of w: max(0, i − w + 1).
inline std::size_t first_key_in_window(std::size_t i, std::size_t window)
{
    return i + 1 > window ? i + 1 - window : 0;
}

/// Throw std::invalid_argument unless w ≥ 1 (a window of 0 would mask every row).
/// A window wider than the sequence is harmless: every kernel clamps it to n.
inline void check_window(std::size_t window)
{
    if (window == 0)
        throw std::invalid_argument("sliding window: the window w must be at least 1");
}

/// Throw std::invalid_argument unless w ≥ 1 and w·(d_k + d_v) numbers fit in a size.
inline void check_cache_size(std::size_t window, std::size_t d_k, std::size_t d_v)
{
    check_window(window);
    const std::size_t most = std::numeric_limits<std::size_t>::max() / 2;
    if (d_k > most || d_v > most || d_k + d_v > most / window)
        throw std::invalid_argument("rolling cache: " + std::to_string(window) +
                                    " slots of " + std::to_string(d_k) + " + " +
                                    std::to_string(d_v) + " numbers overflow a size");
}

// ⟨Build the sliding-window mask⟩ 06-sliding-window.md:38
/// @brief The sliding-window pattern as a dense mask (for figures and tests only).
/// @param n      sequence length
/// @param window w ≥ 1: query i attends key j when i − w < j ≤ i
/// @return mask, n×n, true where query i may attend key j
inline Mask sliding_window_mask(std::size_t n, std::size_t window)
{
    check_window(window);
    Mask mask = xt::zeros<bool>({n, n});  // n×n
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = first_key_in_window(i, window); j <= i; ++j)
            mask(i, j) = true;
    return mask;
}

// ⟨Check the inputs of self-attention over one sequence⟩ 06-sliding-window.md:126
/// Throw std::invalid_argument unless Q, K, V have
/// valid shapes and as many keys as queries (m = n).
template <class T>
void check_self_attention_inputs(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                                 const xt::xtensor<T, 2>& V)
{
    check_attention_shapes(Q, K, V);
    if (Q.shape(0) != K.shape(0))
        throw std::invalid_argument(
            "positional attention pattern: " + std::to_string(Q.shape(0)) +
            " queries but " + std::to_string(K.shape(0)) +
            " keys; the pattern needs one key per query position (m = n)");
}

// ⟨Attend within the window, one query at a time⟩ 06-sliding-window.md:105
/// @brief Sliding-window attention by chapter 2's row-by-row reference with the
/// window's mask (the reference; it builds the n×n mask).
/// @param Q queries, n×d_k; @param K keys, n×d_k;
/// @param V values, n×d_v; @param window w ≥ 1
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> sliding_window_attention_by_rows(const xt::xtensor<T, 2>& Q,
                                                   const xt::xtensor<T, 2>& K,
                                                   const xt::xtensor<T, 2>& V,
                                                   std::size_t window)
{
    check_self_attention_inputs(Q, K, V);
    check_window(window);
    return masked_attention_by_rows(Q, K, V, sliding_window_mask(Q.shape(0), window));
}

// ⟨Count the scores a kernel computes⟩ 06-sliding-window.md:405
/// @brief The work a sparse kernel did, counted where it is done. Pass a pointer as a
/// kernel's last argument (the default, nullptr, counts nothing); counts add up over
/// calls.
struct KeyVisits {
    std::size_t scores = 0;  ///< query–key scores q_i·k_j computed (keys visited)
};

// ⟨Point at one row's state⟩ 06-sliding-window.md:214
/// @brief One query row's online-softmax state (m, ℓ, o), wherever it is stored.
template <class T>
struct SoftmaxRow {
    T& max;           ///< m, the largest score seen (−∞ before any key)
    T& sum;           ///< ℓ = Σ_j exp(s_j − m) over the keys seen
    T* acc;           ///< o = Σ_j exp(s_j − m)·v_j, d_v numbers (not yet / ℓ)
    std::size_t d_v;  ///< width of a value
};

// ⟨Keep the online softmax's state of one row⟩ 06-sliding-window.md:196
/// @brief The online softmax's state of one query row over the keys seen so far.
template <class T>
struct QueryState {
    T max = -std::numeric_limits<T>::infinity();  ///< m, −∞ while no key was seen
    T sum = 0;                                     ///< ℓ = Σ_j exp(s_j − m)
    std::vector<T> acc;  ///< o = Σ_j exp(s_j − m)·v_j, d_v numbers (not yet / ℓ)

    /// The state where it is stored, for the functions below.
    SoftmaxRow<T> row() { return {max, sum, acc.data(), acc.size()}; }
    SoftmaxRow<const T> row() const { return {max, sum, acc.data(), acc.size()}; }
};

// ⟨Rescale a state to a new maximum⟩ 06-sliding-window.md:229
/// @brief The online softmax's rule: move ℓ and o from the maximum m to a new maximum
/// m' ≥ m, multiplying both by α = e^(m − m'). α = 0 on a row that saw no key
/// (m = −∞); a NaN m' makes every sum NaN.
template <class T>
void rescale_state(SoftmaxRow<T> row, T new_max)
{
    const T alpha = std::exp(row.max - new_max);  // ≤ 1
    row.sum *= alpha;
    for (std::size_t c = 0; c < row.d_v; ++c) row.acc[c] *= alpha;
    row.max = new_max;
}

// ⟨Add a run of scored keys to a state⟩ 06-sliding-window.md:250
/// @brief Add `count` keys to a row's state, given their scaled scores (count) and
/// their values (value j: d_v numbers at values + j·value_stride): the online-softmax
/// update.
template <class T>
void add_scored_keys(SoftmaxRow<T> row, const T* scores, const T* values,
                     std::size_t value_stride, std::size_t count)
{
    T run_max = -std::numeric_limits<T>::infinity();
    for (std::size_t j = 0; j < count; ++j)
        if (std::isnan(scores[j]) || scores[j] > run_max) run_max = scores[j];
    if (run_max == -std::numeric_limits<T>::infinity()) return;  // every key hidden
    if (run_max > row.max || std::isnan(run_max)) rescale_state(row, run_max);
    for (std::size_t j = 0; j < count; ++j) {
        const T p = std::exp(scores[j] - row.max);  // ≤ 1: no overflow
        const T* value = values + j * value_stride;
        row.sum += p;
        for (std::size_t c = 0; c < row.d_v; ++c) row.acc[c] += p * value[c];
    }
}

/// @brief Write o / ℓ (d_v numbers) to `out`: zeros if no key was seen (a fully
/// masked row), NaN where a NaN or an infinity reached the sums.
template <class T>
void finish_row(SoftmaxRow<T> row, std::remove_const_t<T>* out)
{
    for (std::size_t c = 0; c < row.d_v; ++c)
        out[c] = row.sum == 0 ? T(0) : row.acc[c] / row.sum;  // a NaN ℓ stays NaN
}

// ⟨Accumulate a softmax over runs of keys⟩ 06-sliding-window.md:285
/// @brief One query's softmax-weighted average of values, built up from runs of
/// consecutive keys (the online softmax).
template <class T>
class OnlineSoftmax {
public:
    /// @param d_k width of queries and keys; @param d_v width of values
    OnlineSoftmax(std::size_t d_k, std::size_t d_v)
        : d_k_(d_k), scale_(T(1) / std::sqrt(T(d_k))), state_{}
    {
        state_.acc.assign(d_v, T(0));
    }

    /// Forget every key: start a new query row.
    void reset()
    {
        state_.max = -std::numeric_limits<T>::infinity();
        state_.sum = 0;
        std::fill(state_.acc.begin(), state_.acc.end(), T(0));
    }

    // ⟨Attend the query to a run of keys⟩ 06-sliding-window.md:331
    /// Attend `query` (d_k numbers) to `count` consecutive key rows at `keys` (count×d_k)
    /// and value rows at `values` (count×d_v), adding them to the running softmax.
    void add_run(const T* query, const T* keys, const T* values, std::size_t count)
    {
        scores_.resize(count);
        scores_computed_ += count;
        for (std::size_t j = 0; j < count; ++j) {
            const T* key = keys + j * d_k_;
            T dot = 0;
            for (std::size_t c = 0; c < d_k_; ++c) dot += query[c] * key[c];
            scores_[j] = dot * scale_;
        }
        add_scored_keys(state_.row(), scores_.data(), values, state_.acc.size(), count);
    }

    /// Write the average, d_v numbers, to `out`; zeros if no key was added (a fully
    /// masked row); NaN where a NaN or an infinity reached the sums.
    void write(T* out) const { finish_row(state_.row(), out); }

    /// The state (m, ℓ, o) over the keys added since the last reset().
    const QueryState<T>& state() const { return state_; }

    /// Query–key scores computed since construction, over every row (reset() keeps it).
    std::size_t scores_computed() const { return scores_computed_; }

private:
    std::size_t d_k_;
    T scale_;                // 1/√d_k
    QueryState<T> state_;    // m, ℓ, o (d_v)
    std::vector<T> scores_;  // the current run's scores
    std::size_t scores_computed_ = 0;  // dot products q·k_j done, for KeyVisits
};

// ⟨Compute sliding-window attention with a banded kernel⟩ 06-sliding-window.md:361
/// @brief Sliding-window attention: query i attends keys i − w < j ≤ i (Mistral's
/// causal window). Equals scaled_dot_product_attention(Q, K, V,
/// sliding_window_mask(n, w)) in O(n·w) time and O(n·d_v) memory: it never builds an
/// n×n matrix.
/// @param Q queries, n×d_k; @param K keys, n×d_k; @param V values, n×d_v
/// @param window w ≥ 1
/// @param visits optional: adds the query–key scores computed (the allowed pairs)
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> sliding_window_attention(const xt::xtensor<T, 2>& Q,
                                           const xt::xtensor<T, 2>& K,
                                           const xt::xtensor<T, 2>& V,
                                           std::size_t window,
                                           KeyVisits* visits = nullptr)
{
    check_self_attention_inputs(Q, K, V);
    check_window(window);
    const std::size_t n = Q.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    OnlineSoftmax<T> row(d_k, d_v);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t first = first_key_in_window(i, window);
        row.reset();
        row.add_run(Q.data() + i * d_k, K.data() + first * d_k, V.data() + first * d_v,
                    i + 1 - first);
        row.write(O.data() + i * d_v);
    }
    if (visits) visits->scores += row.scores_computed();
    return O;
}

// ⟨Keep the last w keys and values in a rolling buffer⟩ 06-sliding-window.md:482
/// @brief The keys and values of the last w tokens, in a ring of w slots (Mistral's
/// rolling buffer): memory w·(d_k + d_v) numbers, however many tokens have passed.
template <class T>
class RollingKVCache {
public:
    /// @param window w ≥ 1 tokens kept; @param d_k key width; @param d_v value width
    /// @throws std::invalid_argument if w = 0 or w·(d_k + d_v) numbers overflow a size
    RollingKVCache(std::size_t window, std::size_t d_k, std::size_t d_v)
        : window_((check_cache_size(window, d_k, d_v), window)), d_k_(d_k), d_v_(d_v),
          keys_(window * d_k), values_(window * d_v), softmax_(d_k, d_v)
    {
    }

    /// Store the next token's key (d_k numbers) and value
    /// (d_v numbers), overwriting the token w back.
    void append(const T* key, const T* value)
    {
        std::copy(key, key + d_k_, keys_.begin() + next_ * d_k_);
        std::copy(value, value + d_v_, values_.begin() + next_ * d_v_);
        next_ = (next_ + 1) % window_;
        size_ = std::min(size_ + 1, window_);
    }

    /// Attend `query` (d_k numbers) to the cached
    /// tokens; write the output (d_v numbers) to `out`.
    void attend(const T* query, T* out)
    {
        softmax_.reset();
        // slot of the oldest cached token
        const std::size_t oldest = size_ < window_ ? 0 : next_;
        const std::size_t tail = size_ < window_ ? size_ : window_ - oldest;
        softmax_.add_run(query, keys_.data() + oldest * d_k_,  // oldest…end (.data():
                         values_.data() + oldest * d_v_, tail);  // empty if d_v = 0)
        // 0…newest
        softmax_.add_run(query, keys_.data(), values_.data(), size_ - tail);
        softmax_.write(out);
    }

    /// Tokens currently cached: min(tokens appended, w).
    std::size_t size() const { return size_; }
    /// Bytes held for keys and values: w·(d_k +
    /// d_v)·sizeof(T), whatever the number of tokens.
    std::size_t bytes() const { return (keys_.size() + values_.size()) * sizeof(T); }

private:
    std::size_t window_, d_k_, d_v_;
    // the slot the next token overwrites: (tokens appended) mod w
    std::size_t next_ = 0;
    std::size_t size_ = 0;
    std::vector<T> keys_, values_;  // w×d_k, w×d_v
    OnlineSoftmax<T> softmax_;
};

// ⟨Decode token by token with the rolling buffer⟩ 06-sliding-window.md:542
/// @brief Sliding-window attention computed as a decoder would: token by token
/// through a RollingKVCache. Equals sliding_window_attention(Q, K, V, window).
/// @param Q queries, n×d_k; @param K keys, n×d_k; @param V values, n×d_v
/// @param window w ≥ 1 (0 throws std::invalid_argument); a window wider than n is
/// clamped to n, so the cache never holds more slots than there are tokens
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> decode_with_rolling_cache(const xt::xtensor<T, 2>& Q,
                                            const xt::xtensor<T, 2>& K,
                                            const xt::xtensor<T, 2>& V,
                                            std::size_t window)
{
    check_self_attention_inputs(Q, K, V);
    check_window(window);
    const std::size_t n = Q.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    RollingKVCache<T> cache(std::min(window, std::max<std::size_t>(n, 1)), d_k, d_v);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    for (std::size_t t = 0; t < n; ++t) {
        cache.append(K.data() + t * d_k, V.data() + t * d_v);
        cache.attend(Q.data() + t * d_k, O.data() + t * d_v);
    }
    return O;
}

// ⟨Compose two masks⟩ 06-sliding-window.md:679
/// @brief Boolean product of two patterns: (A∘B)(i, j) is true
/// when some k has A(i, k) and B(k, j), i.e. when i reaches j
/// by one step of A and then one step of B (two layers).
/// @param A n×p; @param B p×m
/// @return n×m
inline Mask compose_masks(const Mask& A, const Mask& B)
{
    if (A.shape(1) != B.shape(0))
        throw std::invalid_argument("compose_masks: inner sizes differ");
    const std::size_t n = A.shape(0), m = B.shape(1);
    Mask C = xt::zeros<bool>({n, m});  // n×m
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t k = 0; k < A.shape(1); ++k)
            if (A(i, k))
                for (std::size_t j = 0; j < m; ++j) C(i, j) = C(i, j) || B(k, j);
    return C;
}

}  // namespace attn
