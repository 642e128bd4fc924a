// Generated from chapters/14-efficiency-zoo.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 14: every mechanism of the book behind one interface, for
/// side-by-side measurement.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/bigbird.hpp"
#include "attn/flash_attention.hpp"
#include "attn/linformer.hpp"
#include "attn/longformer.hpp"
#include "attn/masked_attention.hpp"
#include "attn/performer.hpp"
#include "attn/reformer.hpp"
#include "attn/self_attention.hpp"
#include "attn/sliding_window.hpp"
#include "attn/sparse_transformer.hpp"

namespace attn {

// ⟨Describe one mechanism of the zoo⟩ 14-efficiency-zoo.md:36
/// @brief The exact attention a mechanism stands in for, the yardstick of its error.
enum class Exact { full, causal, shared_qk };

/// @brief The inputs every mechanism sees at one length: n×d_k Q and K, n×d_v V.
struct ZooInputs {
    xt::xtensor<float, 2> Q, K, V;
};

/// @brief A prepared call of one mechanism; returns its output, n×d_v.
using ZooCall = std::function<xt::xtensor<float, 2>()>;

/// @brief The weights a mechanism implies for queries Q (q×d_k) and keys K (n×d_k):
/// q×n, row i the weights query i gives every key (zero where it does not look).
/// The queries are the last q ≤ n positions of the sequence (all of them if q = n).
using WeightsOf = std::function<xt::xtensor<float, 2>(const xt::xtensor<float, 2>&,
                                                      const xt::xtensor<float, 2>&)>;

/// @brief One mechanism of the zoo.
struct Mechanism {
    std::string name;    ///< as in the tables and legends
    std::string family;  ///< exact, pattern, low rank, kernel or hashing
    Exact exact;         ///< what its error is measured against
    /// Given the inputs and the worker threads a kernel with its own threads may use,
    /// prepare the parameters (not timed) and return the call of its kernel.
    std::function<ZooCall(const ZooInputs&, unsigned threads)> prepare;
    WeightsOf weights;   ///< its weights as a dense matrix (short sequences only)
};

// ⟨Fix the parameters of every mechanism⟩ 14-efficiency-zoo.md:73
/// @brief The parameters of every mechanism of the zoo, fixed across n.
struct ZooParameters {
    std::size_t window = 256;       ///< sliding window w, keys per query (ch. 6)
    std::size_t stride = 128;       ///< stride ℓ, strided and fixed patterns (ch. 7)
    std::size_t summary = 16;       ///< summary columns c of the fixed pattern (ch. 7)
    std::size_t one_sided = 128;    ///< Longformer's window on each side (ch. 8)
    std::size_t block = 64;         ///< BigBird's block (ch. 9)
    std::size_t random_blocks = 3;  ///< BigBird's random blocks per query block (ch. 9)
    std::size_t projected = 256;    ///< Linformer's projected length k (ch. 10)
    std::size_t features = 256;     ///< Performer's random features r (ch. 11)
    std::size_t chunk = 64;         ///< Reformer's chunk length (ch. 12)
    std::size_t hash_rounds = 2;    ///< Reformer's hash rounds (ch. 12)
};

/// @brief The parameters of the model experiments at length n (n ≥ 32; 256 in the
/// full run): each pattern sees about n/8 keys, and k = r = n/8.
inline ZooParameters short_sequence_parameters(std::size_t n)
{
    return {n / 8, n / 16, 2, n / 16, n / 32, 1, n / 8, n / 8, n / 8, 2};
}

/// @brief The Reformer's bucket count, chapter 12's rule b = n/32 (an even number,
/// at least 2): about 32 tokens per bucket.
inline std::size_t reformer_buckets(std::size_t n)
{
    return std::max<std::size_t>(2, n / 32 / 2 * 2);
}

// ⟨Wrap a mechanism that needs nothing prepared⟩ 14-efficiency-zoo.md:108
/// @brief A mechanism whose kernel is attend(Q, K, V), on one thread.
template <class Attend>
Mechanism plain_mechanism(std::string name, std::string family, Exact exact,
                          Attend attend, WeightsOf weights)
{
    return {std::move(name), std::move(family), exact,
            [attend](const ZooInputs& in, unsigned) -> ZooCall {
                return [&in, attend] { return attend(in.Q, in.K, in.V); };
            },
            std::move(weights)};
}

/// @brief The weights of exact attention on a pattern: softmax over the keys that
/// mask_of(n) allows (an n×n Mask), in the rows of the last q positions.
template <class MaskOf>
WeightsOf weights_on_pattern(MaskOf mask_of)
{
    return [mask_of](const xt::xtensor<float, 2>& Q, const xt::xtensor<float, 2>& K) {
        const std::size_t q = Q.shape(0), n = K.shape(0);
        const Mask rows = xt::view(mask_of(n), xt::range(n - q, n), xt::all());  // q×n
        return attention_weights(Q, K, rows);
    };
}

// ⟨Let queries see the keys that share their bucket⟩ 14-efficiency-zoo.md:289
/// @brief Which keys hashing shows each query when queries and keys differ: key j
/// when the unit rows q̂_i and k̂_j share a bucket in one of `rounds` rounds, both
/// hashed with the same rotations (chapter 12's lsh_buckets, b = n/32 buckets).
/// @param Q n×d_k; @param K m×d_k
/// @return mask, n×m
inline Mask shared_bucket_mask(const xt::xtensor<float, 2>& Q,
                               const xt::xtensor<float, 2>& K, std::size_t rounds,
                               std::uint64_t seed)
{
    const std::size_t buckets = reformer_buckets(K.shape(0));
    // rounds×n and rounds×m
    const auto bucket_q = lsh_buckets(unit_keys(Q), buckets, rounds, seed);
    const auto bucket_k = lsh_buckets(unit_keys(K), buckets, rounds, seed);
    Mask mask = xt::zeros<bool>({Q.shape(0), K.shape(0)});  // n×m
    for (std::size_t round = 0; round < rounds; ++round)
        for (std::size_t i = 0; i < Q.shape(0); ++i)
            for (std::size_t j = 0; j < K.shape(0); ++j)
                if (bucket_q(round, i) == bucket_k(round, j)) mask(i, j) = true;
    return mask;
}

/// @brief The Reformer's weights for separate queries and keys: softmax over the
/// keys that share a bucket with the query (a query with none attends to nothing).
inline WeightsOf weights_on_shared_buckets(std::size_t rounds, std::uint64_t seed)
{
    return [rounds, seed](const xt::xtensor<float, 2>& Q,
                          const xt::xtensor<float, 2>& K) {
        return attention_weights(Q, K, shared_bucket_mask(Q, K, rounds, seed));
    };
}

// ⟨List the mechanisms of the book⟩ 14-efficiency-zoo.md:138
/// @brief Every mechanism of the book, with the parameters `p`.
inline std::vector<Mechanism> zoo_mechanisms(const ZooParameters& p = {})
{
    const WeightsOf full = [](const xt::xtensor<float, 2>& Q,
                              const xt::xtensor<float, 2>& K) {
        return attention_weights(Q, K);
    };
    const WeightsOf causal = weights_on_pattern(causal_mask);
    std::vector<Mechanism> zoo;
    zoo.push_back(plain_mechanism("dense (ch. 1)", "exact", Exact::full,
                                  [](const auto& Q, const auto& K, const auto& V) {
                                      return scaled_dot_product_attention(Q, K, V);
                                  },
                                  full));
    // ⟨Add the tiled kernel⟩ 14-efficiency-zoo.md:160
    for (const bool is_causal : {false, true})
        zoo.push_back({is_causal ? "flash, causal (ch. 13)" : "flash (ch. 13)", "exact",
                       is_causal ? Exact::causal : Exact::full,
                       [is_causal](const ZooInputs& in, unsigned threads) -> ZooCall {
                           FlashOptions options;
                           options.threads = threads;
                           return [&in, is_causal, options] {
                               return flash_attention(in.Q, in.K, in.V, is_causal, options);
                           };
                       },
                       is_causal ? causal : full});
    // ⟨Add the pattern mechanisms⟩ 14-efficiency-zoo.md:177
    zoo.push_back(plain_mechanism(
        "sliding window (ch. 6)", "pattern", Exact::causal,
        [w = p.window](const auto& Q, const auto& K, const auto& V) {
            return sliding_window_attention(Q, K, V, w);
        },
        weights_on_pattern([w = p.window](std::size_t n) {
            return sliding_window_mask(n, w);
        })));
    zoo.push_back(plain_mechanism(
        "strided (ch. 7)", "pattern", Exact::causal,
        [l = p.stride](const auto& Q, const auto& K, const auto& V) {
            return strided_attention(Q, K, V, l);
        },
        weights_on_pattern([l = p.stride](std::size_t n) { return strided_mask(n, l); })));
    zoo.push_back(plain_mechanism(
        "fixed (ch. 7)", "pattern", Exact::causal,
        [l = p.stride, c = p.summary](const auto& Q, const auto& K, const auto& V) {
            return fixed_attention(Q, K, V, l, c);
        },
        weights_on_pattern([l = p.stride, c = p.summary](std::size_t n) {
            return fixed_mask(n, l, c);
        })));
    const std::vector<std::size_t> first_token = {0};  // Longformer's global token
    zoo.push_back(plain_mechanism(
        "Longformer (ch. 8)", "pattern", Exact::full,
        [w = p.one_sided, first_token](const auto& Q, const auto& K, const auto& V) {
            return longformer_attention(Q, K, V, w, 1, first_token);
        },
        weights_on_pattern([w = p.one_sided, first_token](std::size_t n) {
            return longformer_mask(n, w, 1, first_token);
        })));
    const BigBirdPattern bigbird{p.block, p.random_blocks, 14};
    zoo.push_back(plain_mechanism(
        "BigBird (ch. 9)", "pattern", Exact::full,
        [bigbird](const auto& Q, const auto& K, const auto& V) {
            return bigbird_attention(Q, K, V, bigbird);
        },
        weights_on_pattern([bigbird](std::size_t n) { return bigbird_mask(n, bigbird); })));
    // ⟨Add the approximating mechanisms⟩ 14-efficiency-zoo.md:230
    const std::size_t k = p.projected, r = p.features;
    zoo.push_back({"Linformer, random E, F (ch. 10)", "low rank", Exact::full,
                   [k](const ZooInputs& in, unsigned) -> ZooCall {
                       const std::size_t n = in.Q.shape(0);
                       return [&in, E = random_projection<float>(k, n, 10),
                               F = random_projection<float>(k, n, 11)] {
                           return linformer_attention(in.Q, in.K, in.V, E, F);
                       };
                   },
                   [k](const xt::xtensor<float, 2>& Q, const xt::xtensor<float, 2>& K) {
                       const std::size_t n = K.shape(0);
                       const xt::xtensor<float, 2> F = random_projection<float>(k, n, 11);
                       const xt::xtensor<float, 2> P_bar =
                           linformer_weights(Q, K, random_projection<float>(k, n, 10));
                       return xt::xtensor<float, 2>(xt::linalg::dot(P_bar, F));  // n×n
                   }});
    for (const bool is_causal : {false, true})
        zoo.push_back({is_causal ? "Performer, causal (ch. 11)" : "Performer (ch. 11)",
                       "kernel", is_causal ? Exact::causal : Exact::full,
                       [r, is_causal](const ZooInputs& in, unsigned) -> ZooCall {
                           const std::size_t d_k = in.Q.shape(1);
                           const auto W = orthogonal_features<float>(r, d_k, 12);
                           return [&in, is_causal, W] {
                               return is_causal
                                          ? performer_causal_attention(in.Q, in.K, in.V, W)
                                          : performer_attention(in.Q, in.K, in.V, W);
                           };
                       },
                       [r, is_causal](const xt::xtensor<float, 2>& Q,
                                      const xt::xtensor<float, 2>& K) {
                           const auto W = orthogonal_features<float>(r, Q.shape(1), 12);
                           return performer_weights(Q, K, W, is_causal);  // q×n
                       }});
    // ⟨Add the Reformer⟩ 14-efficiency-zoo.md:277
    zoo.push_back({"Reformer (ch. 12)", "hashing", Exact::shared_qk,
                   [rounds = p.hash_rounds, chunk = p.chunk](const ZooInputs& in,
                                                             unsigned) -> ZooCall {
                       const std::size_t buckets = reformer_buckets(in.Q.shape(0));
                       return [&in, buckets, rounds, chunk] {
                           return lsh_attention(in.Q, in.V, buckets, rounds, chunk, 13);
                       };
                   },
                   weights_on_shared_buckets(p.hash_rounds, 13)});
    return zoo;
}

// ⟨Measure the relative error⟩ 14-efficiency-zoo.md:328
/// @brief ‖O − O_exact‖_F / ‖O_exact‖_F, accumulated in double.
/// @param O, O_exact n×d_v
inline double relative_error(const xt::xtensor<float, 2>& O,
                             const xt::xtensor<float, 2>& O_exact)
{
    if (O.shape() != O_exact.shape())
        throw std::invalid_argument("relative_error: shapes differ");
    double diff = 0, base = 0;
    for (std::size_t k = 0; k < O.size(); ++k) {
        const double e = O_exact.data()[k], d = double(O.data()[k]) - e;
        diff += d * d;
        base += e * e;
    }
    return base > 0 ? std::sqrt(diff / base) : std::sqrt(diff);
}

// ⟨Measure the weight a mechanism misses⟩ 14-efficiency-zoo.md:359
/// @brief Missed mass and weight error of approximate weights against exact ones.
struct WeightMiss {
    double missed_mass;   ///< mean over rows of Σ exact weight where approx is 0
    double weight_error;  ///< mean over rows of ½ Σ |approx − exact|
};

/// @brief How the weights `approx` (n×m) differ from the exact weights `exact` (n×m).
inline WeightMiss weight_miss(const xt::xtensor<float, 2>& approx,
                              const xt::xtensor<float, 2>& exact)
{
    if (approx.shape() != exact.shape())
        throw std::invalid_argument("weight_miss: shapes differ");
    const std::size_t n = exact.shape(0), m = exact.shape(1);
    WeightMiss miss{0, 0};
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < m; ++j) {
            const double a = approx(i, j), e = exact(i, j);
            if (a == 0) miss.missed_mass += e;
            miss.weight_error += 0.5 * std::abs(a - e);
        }
    if (n > 0) miss.missed_mass /= double(n), miss.weight_error /= double(n);
    return miss;
}

}  // namespace attn
