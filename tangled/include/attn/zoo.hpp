// Generated from chapters/14-efficiency-zoo.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 14: every mechanism of the book behind one interface, for
/// side-by-side measurement.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "attn/self_attention.hpp"
#if __has_include("attn/masked_attention.hpp")
#include "attn/masked_attention.hpp"
#endif
#if __has_include("attn/flash_attention.hpp")
#include "attn/flash_attention.hpp"
#endif
#if __has_include("attn/sliding_window.hpp")
#include "attn/sliding_window.hpp"
#endif
#if __has_include("attn/sparse_transformer.hpp")
#include "attn/sparse_transformer.hpp"
#endif
#if __has_include("attn/longformer.hpp")
#include "attn/longformer.hpp"
#endif
#if __has_include("attn/bigbird.hpp")
#include "attn/bigbird.hpp"
#endif
#if __has_include("attn/linformer.hpp")
#include "attn/linformer.hpp"
#endif
#if __has_include("attn/performer.hpp")
#include "attn/performer.hpp"
#endif
#if __has_include("attn/reformer.hpp")
#include "attn/reformer.hpp"
#endif

namespace attn {

// ⟨Describe one mechanism of the zoo⟩ 14-efficiency-zoo.md:81
/// @brief The exact attention a mechanism stands in for, the yardstick of its error.
enum class Exact { full, causal, shared_qk };

/// @brief The inputs every mechanism sees at one length: n×d_k Q and K, n×d_v V.
struct ZooInputs {
    xt::xtensor<float, 2> Q, K, V;
};

/// @brief A prepared call of one mechanism; returns its output, n×d_v.
using ZooCall = std::function<xt::xtensor<float, 2>()>;

/// @brief One mechanism of the zoo.
struct Mechanism {
    std::string name;    ///< as in the tables and legends
    std::string family;  ///< exact, pattern, low rank, kernel or hashing
    Exact exact;         ///< what its error is measured against
    /// Given the inputs and the worker threads a kernel with its own threads may use,
    /// prepare the parameters (not timed) and return the call that is measured.
    std::function<ZooCall(const ZooInputs&, unsigned threads)> prepare;
};

// ⟨Wrap a mechanism that needs nothing prepared⟩ 14-efficiency-zoo.md:107
/// @brief A mechanism whose call is attend(Q, K, V), on one thread.
template <class Attend>
Mechanism plain_mechanism(std::string name, std::string family, Exact exact,
                          Attend attend)
{
    return {std::move(name), std::move(family), exact,
            [attend](const ZooInputs& in, unsigned) -> ZooCall {
                return [&in, attend] { return attend(in.Q, in.K, in.V); };
            }};
}

// ⟨List the mechanisms of the book⟩ 14-efficiency-zoo.md:125
/// @brief Every mechanism whose chapter is in this build, with the zoo's parameters.
inline std::vector<Mechanism> zoo_mechanisms()
{
    std::vector<Mechanism> zoo;
    zoo.push_back(plain_mechanism("dense (ch. 1)", "exact", Exact::full,
                                  [](const auto& Q, const auto& K, const auto& V) {
                                      return scaled_dot_product_attention(Q, K, V);
                                  }));
    // ⟨Add the tiled kernel⟩ 14-efficiency-zoo.md:141
    #if __has_include("attn/flash_attention.hpp")
    for (const bool causal : {false, true})
        zoo.push_back({causal ? "flash, causal (ch. 13)" : "flash (ch. 13)", "exact",
                       causal ? Exact::causal : Exact::full,
                       [causal](const ZooInputs& in, unsigned threads) -> ZooCall {
                           FlashOptions options;
                           options.threads = threads;
                           return [&in, causal, options] {
                               return flash_attention(in.Q, in.K, in.V, causal, options);
                           };
                       }});
    #endif
    // ⟨Add the pattern mechanisms⟩ 14-efficiency-zoo.md:159
    #if __has_include("attn/sliding_window.hpp")
    zoo.push_back(plain_mechanism("sliding window (ch. 6)", "pattern", Exact::causal,
                                  [](const auto& Q, const auto& K, const auto& V) {
                                      return sliding_window_attention(Q, K, V, 256);
                                  }));
    #endif
    #if __has_include("attn/sparse_transformer.hpp")
    zoo.push_back(plain_mechanism("strided (ch. 7)", "pattern", Exact::causal,
                                  [](const auto& Q, const auto& K, const auto& V) {
                                      return strided_attention(Q, K, V, 128);
                                  }));
    zoo.push_back(plain_mechanism("fixed (ch. 7)", "pattern", Exact::causal,
                                  [](const auto& Q, const auto& K, const auto& V) {
                                      return fixed_attention(Q, K, V, 128, 16);
                                  }));
    #endif
    #if __has_include("attn/longformer.hpp")
    zoo.push_back(plain_mechanism("Longformer (ch. 8)", "pattern", Exact::full,
                                  [](const auto& Q, const auto& K, const auto& V) {
                                      const std::vector<std::size_t> global = {0};
                                      return longformer_attention(Q, K, V, 128, 1, global);
                                  }));
    #endif
    #if __has_include("attn/bigbird.hpp")
    zoo.push_back(plain_mechanism("BigBird (ch. 9)", "pattern", Exact::full,
                                  [](const auto& Q, const auto& K, const auto& V) {
                                      const BigBirdPattern pattern{64, 3, 14};
                                      return bigbird_attention(Q, K, V, pattern);
                                  }));
    #endif
    // ⟨Add the approximating mechanisms⟩ 14-efficiency-zoo.md:197
    #if __has_include("attn/linformer.hpp")
    zoo.push_back({"Linformer (ch. 10)", "low rank", Exact::full,
                   [](const ZooInputs& in, unsigned) -> ZooCall {
                       const std::size_t n = in.Q.shape(0);
                       return [&in, E = random_projection<float>(256, n, 10),
                               F = random_projection<float>(256, n, 11)] {
                           return linformer_attention(in.Q, in.K, in.V, E, F);
                       };
                   }});
    #endif
    #if __has_include("attn/performer.hpp")
    zoo.push_back({"Performer (ch. 11)", "kernel", Exact::full,
                   [](const ZooInputs& in, unsigned) -> ZooCall {
                       const std::size_t d_k = in.Q.shape(1);
                       return [&in, W = orthogonal_features<float>(256, d_k, 12)] {
                           return performer_attention(in.Q, in.K, in.V, W);
                       };
                   }});
    zoo.push_back({"Performer, causal (ch. 11)", "kernel", Exact::causal,
                   [](const ZooInputs& in, unsigned) -> ZooCall {
                       const std::size_t d_k = in.Q.shape(1);
                       return [&in, W = orthogonal_features<float>(256, d_k, 12)] {
                           return performer_causal_attention(in.Q, in.K, in.V, W);
                       };
                   }});
    #endif
    #if __has_include("attn/reformer.hpp")
    zoo.push_back({"Reformer (ch. 12)", "hashing", Exact::shared_qk,
                   [](const ZooInputs& in, unsigned) -> ZooCall {
                       const std::size_t n = in.Q.shape(0);
                       const std::size_t buckets = std::max<std::size_t>(2, n / 64);
                       return [&in, buckets] {
                           return lsh_attention(in.Q, in.V, buckets, 2, 64, 13);
                       };
                   }});
    #endif
    return zoo;
}

// ⟨Compute exact shared-QK attention row by row⟩ 14-efficiency-zoo.md:242
/// @brief Exact shared-QK attention with the Reformer's self rule, one row at a time
/// (O(n·d) memory). Scores q_i·k̂_j/√d_k with k̂_j = q_j/‖q_j‖; a token attends to
/// itself only when it is alone (n = 1).
/// @param QK shared queries and keys, n×d_k; @param V values, n×d_v
/// @return outputs, n×d_v
inline xt::xtensor<float, 2> shared_qk_reference(const xt::xtensor<float, 2>& QK,
                                                 const xt::xtensor<float, 2>& V)
{
    const std::size_t n = QK.shape(0), d_k = QK.shape(1), d_v = V.shape(1);
    std::vector<double> norm(n), s(n);
    for (std::size_t j = 0; j < n; ++j) {
        double sq = 0;
        for (std::size_t c = 0; c < d_k; ++c) sq += double(QK(j, c)) * double(QK(j, c));
        norm[j] = std::sqrt(sq);
    }
    xt::xtensor<float, 2> O = xt::zeros<float>({n, d_v});  // n×d_v
    for (std::size_t i = 0; i < n; ++i) {
        double s_max = -std::numeric_limits<double>::infinity();
        for (std::size_t j = 0; j < n; ++j) {
            if (j == i && n > 1) continue;  // the self rule
            double dot = 0;
            for (std::size_t c = 0; c < d_k; ++c)
                dot += double(QK(i, c)) * double(QK(j, c));
            s[j] = dot / norm[j] / std::sqrt(double(d_k));
            s_max = std::max(s_max, s[j]);
        }
        std::vector<double> o(d_v, 0.0);
        double total = 0;
        for (std::size_t j = 0; j < n; ++j) {
            if (j == i && n > 1) continue;
            const double p = std::exp(s[j] - s_max);
            total += p;
            for (std::size_t c = 0; c < d_v; ++c) o[c] += p * double(V(j, c));
        }
        for (std::size_t c = 0; c < d_v; ++c) O(i, c) = float(o[c] / total);
    }
    return O;
}

// ⟨Measure the relative error⟩ 14-efficiency-zoo.md:286
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

}  // namespace attn
