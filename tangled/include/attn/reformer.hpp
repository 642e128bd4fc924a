// Generated from chapters/12-reformer.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 12: Reformer LSH attention with
/// shared QK, its angular hash and its dense reference.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/random.hpp"
#include "attn/self_attention.hpp"

namespace attn {

// ⟨Normalise the queries into keys⟩ 12-reformer.md:55
/// @brief The shared-QK keys: every row of QK
/// scaled to unit length (a zero row stays zero).
/// @param QK shared queries/keys, n×d_k
/// @return   keys k̂_j = q_j/‖q_j‖, n×d_k
template <class T>
xt::xtensor<T, 2> unit_keys(const xt::xtensor<T, 2>& QK)
{
    const std::size_t n = QK.shape(0), d_k = QK.shape(1);
    xt::xtensor<T, 2> K = QK;  // n×d_k
    for (std::size_t j = 0; j < n; ++j) {
        T* k_j = K.data() + j * d_k;
        double norm_sq = 0;
        for (std::size_t c = 0; c < d_k; ++c)
            norm_sq += double(k_j[c]) * double(k_j[c]);
        if (norm_sq == 0) continue;  // no direction: leave the zero key
        const T inverse_norm = T(1 / std::sqrt(norm_sq));
        for (std::size_t c = 0; c < d_k; ++c) k_j[c] *= inverse_norm;
    }
    return K;
}

// ⟨Compute dense shared-QK attention row by row⟩ 12-reformer.md:81
/// @brief Dense shared-QK attention one query at a time with
/// attend_one_query (chapter 1), each query attending to every key
/// but its own (its own only when n = 1). The naive reference.
/// @param QK shared queries/keys, n×d_k
/// @param V  values, n×d_v
/// @return   outputs, n×d_v
template <class T>
xt::xtensor<T, 2> shared_qk_attention_by_rows(const xt::xtensor<T, 2>& QK,
                                              const xt::xtensor<T, 2>& V)
{
    check_attention_shapes(QK, QK, V);
    const std::size_t n = QK.shape(0), d_k = QK.shape(1), d_v = V.shape(1);
    const xt::xtensor<T, 2> K = unit_keys(QK);  // n×d_k
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t m = n > 1 ? n - 1 : 1;  // keys in view: all but i, or i alone
        xt::xtensor<T, 2> K_i = xt::zeros<T>({m, d_k}), V_i = xt::zeros<T>({m, d_v});
        for (std::size_t j = 0, row = 0; j < n; ++j) {
            if (j == i && n > 1) continue;
            xt::row(K_i, row) = xt::row(K, j);
            xt::row(V_i, row++) = xt::row(V, j);
        }
        const xt::xtensor<T, 1> q = xt::row(QK, i);
        xt::row(O, i) = attend_one_query(q, K_i, V_i);
    }
    return O;
}

// ⟨Compute dense shared-QK attention⟩ 12-reformer.md:116
/// @brief Dense shared-QK attention weights: softmax of
/// q_i·k̂_j/√d_k with the diagonal masked (a token attends to itself
/// only when it is the only token, n = 1). The reference; O(n²).
/// @param QK shared queries/keys, n×d_k
/// @return   weights, n×n, rows summing to 1, zero diagonal when n > 1
template <class T>
xt::xtensor<T, 2> shared_qk_weights(const xt::xtensor<T, 2>& QK)
{
    const std::size_t n = QK.shape(0);
    const xt::xtensor<T, 2> K = unit_keys(QK);        // n×d_k
    const xt::xtensor<T, 2> K_t = xt::transpose(K);   // d_k×n, contiguous for BLAS
    xt::xtensor<T, 2> scores = xt::linalg::dot(QK, K_t);  // n×n
    scores *= T(1) / std::sqrt(T(QK.shape(1)));
    if (n > 1)
        for (std::size_t i = 0; i < n; ++i)
            scores(i, i) = -std::numeric_limits<T>::infinity();
    return softmax_rows(scores);
}

/// @brief Dense shared-QK attention, the reference
/// for lsh_attention. O(n²) time and memory.
/// @param QK shared queries/keys, n×d_k
/// @param V  values, n×d_v
/// @return   outputs, n×d_v
template <class T>
xt::xtensor<T, 2> shared_qk_attention(const xt::xtensor<T, 2>& QK,
                                      const xt::xtensor<T, 2>& V)
{
    check_attention_shapes(QK, QK, V);
    const xt::xtensor<T, 2> weights = shared_qk_weights(QK);  // n×n
    return xt::linalg::dot(weights, V);                       // n×d_v
}

// ⟨Hash every row with one random rotation⟩ 12-reformer.md:180
/// @brief Bucket of every row of X under the rotation R: argmax of [xR ; −xR].
/// @param X rows to hash, n×d_k
/// @param R random rotation, d_k×b/2
/// @return  n buckets in [0, b); a row of zeros goes to bucket 0
template <class T>
std::vector<std::size_t> hash_rows(const xt::xtensor<T, 2>& X,
                                   const xt::xtensor<T, 2>& R)
{
    const std::size_t n = X.shape(0), half = R.shape(1);
    const xt::xtensor<T, 2> projected = xt::linalg::dot(X, R);  // n×b/2
    std::vector<std::size_t> bucket(n);
    for (std::size_t i = 0; i < n; ++i) {
        const T* xR = projected.data() + i * half;
        std::size_t best = 0;
        T best_value = xR[0];
        for (std::size_t c = 0; c < half; ++c) {
            if (xR[c] > best_value) best = c, best_value = xR[c];
            if (-xR[c] > best_value) best = half + c, best_value = -xR[c];
        }
        bucket[i] = best;
    }
    return bucket;
}

// ⟨Check the options of the hash⟩ 12-reformer.md:216
/// @brief Throw std::invalid_argument unless b is even with 2 ≤ b ≤ 2²⁰ and
/// 1 ≤ n_hashes ≤ 2²⁴: the largest arrays, R (d_k×b/2) and the buckets
/// (n_hashes×n), then stay far from overflowing a size_t.
inline void check_hash_options(std::size_t n, std::size_t d_k, std::size_t n_buckets,
                               std::size_t n_hashes)
{
    if (n_buckets < 2 || n_buckets % 2 != 0 || n_buckets > (std::size_t(1) << 20))
        throw std::invalid_argument(
            "lsh: the number of buckets must be even and in [2, 2^20], not " +
            std::to_string(n_buckets));
    if (n_hashes == 0 || n_hashes > (std::size_t(1) << 24))
        throw std::invalid_argument("lsh: the number of hash rounds must be in "
                                    "[1, 2^24], not " + std::to_string(n_hashes));
    if (n > 0 && n_hashes > std::numeric_limits<std::size_t>::max() / n / 8)
        throw std::invalid_argument("lsh: " + std::to_string(n_hashes) + " rounds of " +
                                    std::to_string(n) + " rows are too many");
    if (d_k > 0 && n_buckets / 2 > std::numeric_limits<std::size_t>::max() / d_k / 8)
        throw std::invalid_argument("lsh: R of " + std::to_string(d_k) + "×" +
                                    std::to_string(n_buckets / 2) + " is too large");
}

// ⟨Hash every row in several rounds⟩ 12-reformer.md:239
/// @brief Buckets of every row of X in each of `n_hashes` independent hash rounds.
/// Round r uses the r-th d_k×b/2 standard normal matrix drawn from a generator seeded
/// by `seed`. Throws std::invalid_argument unless b is even with 2 ≤ b ≤ 2²⁰ and 1 ≤
/// n_hashes ≤ 2²⁴ (so that neither R nor the n_hashes×n result can overflow).
/// @param X rows to hash, n×d_k
/// @return  buckets, n_hashes×n, entries in [0, n_buckets)
template <class T>
xt::xtensor<std::size_t, 2> lsh_buckets(const xt::xtensor<T, 2>& X,
                                        std::size_t n_buckets, std::size_t n_hashes,
                                        std::uint64_t seed)
{
    check_hash_options(X.shape(0), X.shape(1), n_buckets, n_hashes);
    std::mt19937_64 rng(seed);
    xt::xtensor<std::size_t, 2> buckets =
        xt::zeros<std::size_t>({n_hashes, X.shape(0)});  // n_hashes×n
    for (std::size_t r = 0; r < n_hashes; ++r) {
        const xt::xtensor<T, 2> R =
            random_normal<T>(X.shape(1), n_buckets / 2, 1.0, rng);  // d_k×b/2
        const std::vector<std::size_t> bucket = hash_rows(X, R);
        std::copy(bucket.begin(), bucket.end(), buckets.data() + r * X.shape(0));
    }
    return buckets;
}

// ⟨Estimate the collision probability from the model⟩ 12-reformer.md:298
/// @brief Collision probability of the b-bucket rotation hash for
/// two vectors at angle θ. b = 2: the exact 1 − θ/π. b > 2: a Monte
/// Carlo estimate from `samples` draws of the b/2 correlated normal
/// pairs (u_c, w_c) with correlation cos θ (no hashing involved).
/// @return {probability, its standard error} (the error is 0 for the exact b = 2 case)
inline std::pair<double, double> collision_probability(double theta,
                                                       std::size_t n_buckets,
                                                       std::size_t samples,
                                                       std::uint64_t seed)
{
    const double pi = std::acos(-1.0);
    if (n_buckets < 2 || n_buckets % 2 != 0)
        throw std::invalid_argument(
            "collision_probability: the number of buckets must be even and at least 2");
    if (n_buckets == 2) return {1 - theta / pi, 0.0};
    if (samples == 0)
        throw std::invalid_argument("collision_probability: need at least one sample");
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    const double c = std::cos(theta), s = std::sin(theta);
    auto bucket_of = [](const std::vector<double>& u) {
        std::size_t best = 0;
        double best_value = u[0];
        for (std::size_t k = 0; k < u.size(); ++k) {
            if (u[k] > best_value) best = k, best_value = u[k];
            if (-u[k] > best_value) best = u.size() + k, best_value = -u[k];
        }
        return best;
    };
    std::vector<double> u(n_buckets / 2), w(n_buckets / 2);
    std::size_t collisions = 0;
    for (std::size_t t = 0; t < samples; ++t) {
        for (std::size_t k = 0; k < u.size(); ++k) {
            const double g = normal(rng), g_perp = normal(rng);
            u[k] = g;
            w[k] = c * g + s * g_perp;  // correlation cos θ with u[k]
        }
        collisions += bucket_of(u) == bucket_of(w);
    }
    const double p = double(collisions) / double(samples);
    return {p, std::sqrt(p * (1 - p) / double(samples))};
}

// ⟨Sort the positions by bucket⟩ 12-reformer.md:481
/// @brief Positions sorted by (bucket, position), by a stable counting sort: O(n + b).
/// @param bucket    bucket of each position, n entries in [0, n_buckets)
/// @return order, n: order[s] is the position at sorted index s
inline std::vector<std::size_t> sort_by_bucket(const std::size_t* bucket, std::size_t n,
                                               std::size_t n_buckets)
{
    // start[b]: first sorted index of bucket b
    std::vector<std::size_t> start(n_buckets + 1, 0);
    for (std::size_t i = 0; i < n; ++i) ++start[bucket[i] + 1];
    for (std::size_t b = 0; b < n_buckets; ++b) start[b + 1] += start[b];
    std::vector<std::size_t> order(n);
    // increasing i: stable
    for (std::size_t i = 0; i < n; ++i) order[start[bucket[i]]++] = i;
    return order;
}

// ⟨Describe one hash round⟩ 12-reformer.md:503
/// @brief One hash round after sorting: the
/// sorted order and each position's chunk in it.
struct LshRound {
    std::vector<std::size_t> order;  ///< n: position at each sorted index
    std::vector<std::size_t>
        chunk;  ///< n: chunk of each position, (sorted index)/chunk_len

    /// True if key j is in view of query i: j's
    /// chunk is i's chunk or the one before it.
    bool in_view(std::size_t i, std::size_t j) const
    {
        return chunk[j] <= chunk[i] && chunk[j] + 1 >= chunk[i];
    }
};

/// @brief Hash QK in `n_hashes` rounds, sort each
/// round by (bucket, position) and cut it into chunks.
/// @param QK shared queries/keys, n×d_k
/// @return   n_hashes rounds
template <class T>
std::vector<LshRound> hash_sort_and_chunk(const xt::xtensor<T, 2>& QK,
                                          std::size_t n_buckets, std::size_t n_hashes,
                                          std::size_t chunk_len, std::uint64_t seed)
{
    const std::size_t n = QK.shape(0);
    const xt::xtensor<std::size_t, 2> buckets =
        lsh_buckets(QK, n_buckets, n_hashes, seed);  // n_hashes×n
    std::vector<LshRound> rounds(n_hashes);
    for (std::size_t r = 0; r < n_hashes; ++r) {
        rounds[r].order = sort_by_bucket(buckets.data() + r * n, n, n_buckets);
        rounds[r].chunk.resize(n);
        for (std::size_t s = 0; s < n; ++s)
            rounds[r].chunk[rounds[r].order[s]] = s / chunk_len;
    }
    return rounds;
}

// ⟨Count the rounds that show key j to query i⟩ 12-reformer.md:577
/// @brief N_ij: the number of rounds in which key j
/// is in view of query i (≥ 1 for a scored pair).
inline std::size_t rounds_showing(const std::vector<LshRound>& rounds, std::size_t i,
                                  std::size_t j)
{
    std::size_t count = 0;
    for (const LshRound& round : rounds) count += round.in_view(i, j);
    return count;
}

// ⟨Check the arguments of LSH attention⟩ 12-reformer.md:769
/// @brief Throw std::invalid_argument unless QK is n×d_k and V is n×d_v with n ≥ 1 and
/// d_k ≥ 1, the number of buckets b is even with 2 ≤ b ≤ max(2, 2n) (more buckets
/// than twice the tokens leave most of them empty and only cost memory), the number
/// of rounds is in [1, 64] and the chunk length is at least 1. A chunk length
/// above n is harmless and is clamped to n (one chunk).
template <class T>
void check_lsh_arguments(const xt::xtensor<T, 2>& QK, const xt::xtensor<T, 2>& V,
                         std::size_t n_buckets, std::size_t n_hashes,
                         std::size_t chunk_len)
{
    check_attention_shapes(QK, QK, V);
    const std::size_t n = QK.shape(0);
    const std::size_t most = std::max<std::size_t>(2, n > SIZE_MAX / 2 ? n : 2 * n);
    if (n_buckets < 2 || n_buckets % 2 != 0 || n_buckets > most)
        throw std::invalid_argument(
            "lsh_attention: the number of buckets must be even and in [2, " +
            std::to_string(most) + "] for n = " + std::to_string(n) + ", not " +
            std::to_string(n_buckets));
    if (n_hashes == 0 || n_hashes > 64)
        throw std::invalid_argument("lsh_attention: the number of hash rounds must be "
                                    "in [1, 64], not " + std::to_string(n_hashes));
    if (chunk_len == 0)
        throw std::invalid_argument("lsh_attention: the chunk length must be ≥ 1");
}

// ⟨Attend with one chunk of one round⟩ 12-reformer.md:650
/// @brief Attend the queries of the chunk starting at sorted index `start` of
/// `round` to the keys of their window, and merge the result into the running
/// output O (n×d_v) and log-sum-exp z (n). Touches O(chunk_len²) scores, never n×n.
template <class T>
void attend_one_chunk(const xt::xtensor<T, 2>& QK, const xt::xtensor<T, 2>& K,
                      const xt::xtensor<T, 2>& V, const std::vector<LshRound>& rounds,
                      const LshRound& round, std::size_t start, std::size_t chunk_len,
                      xt::xtensor<T, 2>& O, std::vector<double>& z)
{
    const std::size_t n = QK.shape(0), d_k = QK.shape(1), d_v = V.shape(1);
    // chunk: [start, stop)
    const std::size_t stop = std::min(start + chunk_len, n);
    // window: [window, stop)
    const std::size_t window = start >= chunk_len ? start - chunk_len : 0;
    const std::size_t n_q = stop - start, n_kv = stop - window;
    // ⟨Gather the chunk's queries and its window's keys and values⟩ 12-reformer.md:674
    xt::xtensor<T, 2> Q_chunk = xt::zeros<T>({n_q, d_k});     // n_q×d_k
    // d_k×n_kv, transposed for BLAS
    xt::xtensor<T, 2> K_window_t = xt::zeros<T>({d_k, n_kv});
    xt::xtensor<T, 2> V_window = xt::zeros<T>({n_kv, d_v});    // n_kv×d_v
    for (std::size_t a = 0; a < n_q; ++a)
        std::copy_n(QK.data() + round.order[start + a] * d_k, d_k,
                    Q_chunk.data() + a * d_k);
    for (std::size_t b = 0; b < n_kv; ++b) {
        const std::size_t j = round.order[window + b];
        for (std::size_t c = 0; c < d_k; ++c) K_window_t(c, b) = K(j, c);
        std::copy_n(V.data() + j * d_v, d_v, V_window.data() + b * d_v);
    }
    // ⟨Score the chunk against its window⟩ 12-reformer.md:692
    xt::xtensor<T, 2> scores = xt::linalg::dot(Q_chunk, K_window_t);  // n_q×n_kv
    scores *= T(1) / std::sqrt(T(d_k));
    // ⟨Hide self and count duplicates⟩ 12-reformer.md:700
    for (std::size_t a = 0; a < n_q; ++a) {
        const std::size_t i = round.order[start + a];
        for (std::size_t b = 0; b < n_kv; ++b) {
            const std::size_t j = round.order[window + b];
            T& s = scores(a, b);
            if (j == i) s = -std::numeric_limits<T>::infinity();
            else if (rounds.size() > 1)
                s -= T(std::log(double(rounds_showing(rounds, i, j))));
        }
    }
    // ⟨Normalise each row and keep its log-sum-exp⟩ 12-reformer.md:720
    std::vector<double> z_chunk(n_q, -std::numeric_limits<double>::infinity());  // n_q
    for (std::size_t a = 0; a < n_q; ++a) {
        T* s = scores.data() + a * n_kv;
        T s_max = -std::numeric_limits<T>::infinity();  // NaN if any score is NaN
        for (std::size_t b = 0; b < n_kv && !std::isnan(s_max); ++b)
            if (!(s[b] <= s_max)) s_max = s[b];
        if (s_max == -std::numeric_limits<T>::infinity()) {  // nothing in view but itself
            std::fill(s, s + n_kv, T(0));
            continue;
        }
        double total = 0;
        for (std::size_t b = 0; b < n_kv; ++b) total += (s[b] = std::exp(s[b] - s_max));
        // scores now hold weights
        for (std::size_t b = 0; b < n_kv; ++b) s[b] = T(s[b] / total);
        z_chunk[a] = double(s_max) + std::log(total);
    }
    const xt::xtensor<T, 2> O_chunk = xt::linalg::dot(scores, V_window);  // n_q×d_v
    // ⟨Merge the chunk's outputs into the running output⟩ 12-reformer.md:747
    for (std::size_t a = 0; a < n_q; ++a) {
        const std::size_t i = round.order[start + a];
        // this round saw nothing
        if (z_chunk[a] == -std::numeric_limits<double>::infinity()) continue;
        const double z_max = std::max(z[i], z_chunk[a]);
        const double z_new =
            z_max + std::log(std::exp(z[i] - z_max) + std::exp(z_chunk[a] - z_max));
        const T keep = T(std::exp(z[i] - z_new)), add = T(std::exp(z_chunk[a] - z_new));
        for (std::size_t c = 0; c < d_v; ++c)
            O(i, c) = keep * O(i, c) + add * O_chunk(a, c);
        z[i] = z_new;
    }
}

// ⟨Compute LSH attention⟩ 12-reformer.md:593
/// @brief Reformer LSH attention with shared QK (Kitaev et al. 2020): angular
/// LSH by random rotations, sort by (bucket, position), chunks attending to
/// themselves and the previous chunk, `n_hashes` rounds combined by log-sum-exp
/// with duplicates counted once. Scores are q_i·k̂_j/√d_k with k̂_j = q_j/‖q_j‖;
/// a token attends to itself only if no other key is in view. With chunk_len ≥ n
/// the result equals dense shared-QK attention. O(n_hashes·n·chunk_len·(d_k +
/// d_v)) time, O(n·(d_v + n_hashes) + chunk_len²) memory.
/// @param QK        shared queries/keys, n×d_k
/// @param V         values, n×d_v
/// @param n_buckets number of buckets b, even, ≥ 2
/// @param n_hashes  number of hash rounds, ≥ 1
/// @param chunk_len length L of a chunk of the sorted sequence, ≥ 1
/// @param seed      seed of the random rotations
/// @return          outputs, n×d_v
template <class T>
xt::xtensor<T, 2> lsh_attention(const xt::xtensor<T, 2>& QK, const xt::xtensor<T, 2>& V,
                                std::size_t n_buckets, std::size_t n_hashes,
                                std::size_t chunk_len, std::uint64_t seed)
{
    check_lsh_arguments(QK, V, n_buckets, n_hashes, chunk_len);
    chunk_len = std::min(chunk_len, QK.shape(0));  // a longer chunk is one chunk
    const std::size_t n = QK.shape(0), d_v = V.shape(1);
    const xt::xtensor<T, 2> K = unit_keys(QK);  // n×d_k
    const std::vector<LshRound> rounds =
        hash_sort_and_chunk(QK, n_buckets, n_hashes, chunk_len, seed);
    // n×d_v, running output
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});
    // n, running log-sum-exp
    std::vector<double> z(n, -std::numeric_limits<double>::infinity());
    for (const LshRound& round : rounds)
        for (std::size_t start = 0; start < n; start += chunk_len)
            attend_one_chunk(QK, K, V, rounds, round, start, chunk_len, O, z);
    // ⟨Give a query that saw no other key its own value⟩ 12-reformer.md:635
    for (std::size_t i = 0; i < n; ++i) {
        if (z[i] != -std::numeric_limits<double>::infinity()) continue;
        const T* q = QK.data() + i * QK.shape(1);
        const bool finite =
            std::all_of(q, q + QK.shape(1), [](T x) { return std::isfinite(x); });
        if (finite) xt::row(O, i) = xt::row(V, i);
        else xt::row(O, i) = std::numeric_limits<T>::quiet_NaN();  // its own score is NaN
    }
    return O;
}

// ⟨Build the pattern of LSH attention⟩ 12-reformer.md:806
/// @brief Which keys LSH attention lets each query see: the union over rounds of the
/// chunk windows, with the self rule. For plots and tests at small n (it is n×n).
/// @param QK shared queries/keys, n×d_k
/// @return   allowed, n×n: true where query i attends key j
template <class T>
xt::xtensor<bool, 2> lsh_pattern(const xt::xtensor<T, 2>& QK, std::size_t n_buckets,
                                 std::size_t n_hashes, std::size_t chunk_len,
                                 std::uint64_t seed)
{
    check_lsh_arguments(QK, QK, n_buckets, n_hashes, chunk_len);
    chunk_len = std::min(chunk_len, QK.shape(0));  // a longer chunk is one chunk
    const std::size_t n = QK.shape(0);
    const std::vector<LshRound> rounds =
        hash_sort_and_chunk(QK, n_buckets, n_hashes, chunk_len, seed);
    xt::xtensor<bool, 2> allowed = xt::zeros<bool>({n, n});  // n×n
    for (std::size_t i = 0; i < n; ++i) {
        bool sees_another = false;
        for (std::size_t j = 0; j < n; ++j)
            if (j != i && rounds_showing(rounds, i, j) > 0)
                allowed(i, j) = sees_another = true;
        allowed(i, i) = !sees_another;
    }
    return allowed;
}

/// @brief The attention weights of LSH attention as a dense matrix (for plots,
/// small n): softmax of q_i·k̂_j/√d_k over the keys lsh_pattern allows. O(n²).
/// @return weights, n×n, rows summing to 1, zero outside the pattern
template <class T>
xt::xtensor<T, 2> lsh_weights(const xt::xtensor<T, 2>& QK, std::size_t n_buckets,
                              std::size_t n_hashes, std::size_t chunk_len,
                              std::uint64_t seed)
{
    const xt::xtensor<bool, 2> allowed =
        lsh_pattern(QK, n_buckets, n_hashes, chunk_len, seed);  // n×n
    const xt::xtensor<T, 2> K = unit_keys(QK);       // n×d_k
    const xt::xtensor<T, 2> K_t = xt::transpose(K);  // d_k×n
    xt::xtensor<T, 2> scores = xt::linalg::dot(QK, K_t);  // n×n
    scores *= T(1) / std::sqrt(T(QK.shape(1)));
    for (std::size_t k = 0; k < scores.size(); ++k)
        if (!allowed.data()[k]) scores.data()[k] = -std::numeric_limits<T>::infinity();
    return softmax_rows(scores);
}

// ⟨Draw tokens in topics⟩ 12-reformer.md:950
/// @brief Tokens in topics: n rows in d_k dimensions, each pointing near one of
/// `topics` random directions (noise of relative size `spread`), of length
/// sharpness·√d_k, so that a score q_i·k̂_j/√d_k is at most `sharpness`.
/// @param rng draws the directions, the noise and each row's topic
/// @param topic_of if given, receives each row's topic
/// @return the rows, n×d_k (shared queries and keys)
inline xt::xtensor<float, 2> tokens_in_topics(
    std::size_t n, std::size_t d_k, std::size_t topics, double spread, double sharpness,
    std::mt19937_64& rng, std::vector<std::size_t>* topic_of = nullptr)
{
    const double length = sharpness * std::sqrt(double(d_k));
    const xt::xtensor<double, 2> centres =
        random_normal<double>(topics, d_k, 1.0, rng);  // topics×d_k
    // n×d_k
    const xt::xtensor<double, 2> noise = random_normal<double>(n, d_k, 1.0, rng);
    std::uniform_int_distribution<std::size_t> pick(0, topics - 1);
    xt::xtensor<float, 2> QK = xt::zeros<float>({n, d_k});  // n×d_k
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t t = pick(rng);
        if (topic_of) topic_of->push_back(t);
        std::vector<double> row(d_k);
        double norm_sq = 0, centre_sq = 0;
        for (std::size_t c = 0; c < d_k; ++c)
            centre_sq += centres(t, c) * centres(t, c);
        for (std::size_t c = 0; c < d_k; ++c) {
            row[c] = centres(t, c) / std::sqrt(centre_sq) +
                     spread * noise(i, c) / std::sqrt(double(d_k));
            norm_sq += row[c] * row[c];
        }
        for (std::size_t c = 0; c < d_k; ++c)
            QK(i, c) = float(length * row[c] / std::sqrt(norm_sq));
    }
    return QK;
}

}  // namespace attn
