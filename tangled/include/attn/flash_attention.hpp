// Generated from chapters/13-flash-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 13: exact attention in tiles with an online softmax (FlashAttention
/// on the CPU).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "attn/machine.hpp"
#include "attn/self_attention.hpp"
#include "attn/sliding_window.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#define ATTN_FLASH_X86 1
#else
#define ATTN_FLASH_X86 0
#endif

namespace attn {

// ⟨Keep the online softmax's state⟩ 13-flash-attention.md:113
/// @brief The online softmax's state (chapter 6) for n query rows after some of the
/// keys, kept in double.
struct SoftmaxState {
    xt::xtensor<double, 1> max;  ///< n: m_i, the largest score seen (−∞ before any key)
    xt::xtensor<double, 1> sum;  ///< n: ℓ_i = Σ_j exp(s_ij − m_i) over the keys seen
    xt::xtensor<double, 2> acc;  ///< n×d_v: o_i = Σ_j exp(s_ij − m_i)·v_j (not / ℓ_i)

    /// Row i's state, for chapter 6's functions.
    SoftmaxRow<double> row(std::size_t i)
    {
        return {max(i), sum(i), acc.data() + i * acc.shape(1), acc.shape(1)};
    }
    SoftmaxRow<const double> row(std::size_t i) const
    {
        return {max(i), sum(i), acc.data() + i * acc.shape(1), acc.shape(1)};
    }
};

/// @brief The state before any key: m = −∞, ℓ = 0, o = 0.
/// @param n query rows; @param d_v width of a value
/// @return an empty state for n rows
inline SoftmaxState empty_softmax_state(std::size_t n, std::size_t d_v)
{
    SoftmaxState state{xt::zeros<double>({n}), xt::zeros<double>({n}),
                       xt::zeros<double>({n, d_v})};
    state.max.fill(-std::numeric_limits<double>::infinity());
    return state;
}

// ⟨Feed keys to the state one at a time⟩ 13-flash-attention.md:148
/// @brief Feed the keys [begin, end) to `state`, one key at a time (the reference
/// online softmax).
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
template <class T>
void absorb_keys(SoftmaxState& state, const xt::xtensor<T, 2>& Q,
                 const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
                 std::size_t begin, std::size_t end)
{
    check_attention_shapes(Q, K, V);
    const std::size_t n = Q.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    const double scale = 1.0 / std::sqrt(double(d_k));
    std::vector<double> v_j(d_v);  // value j in double
    for (std::size_t j = begin; j < end; ++j) {
        for (std::size_t c = 0; c < d_v; ++c) v_j[c] = double(V(j, c));
        for (std::size_t i = 0; i < n; ++i) {
            double s = 0;
            for (std::size_t c = 0; c < d_k; ++c)
                s += double(Q(i, c)) * double(K(j, c));
            s *= scale;
            add_scored_keys(state.row(i), &s, v_j.data(), d_v, 1);
        }
    }
}

// ⟨Merge two states⟩ 13-flash-attention.md:178
/// @brief Add the state `from` of one set of keys to the state `into` of another,
/// disjoint set: `into` becomes the state of their union.
template <class T>
void merge_state_into(SoftmaxRow<T> into, SoftmaxRow<const T> from)
{
    const T new_max = std::max(into.max, from.max);
    if (new_max == -std::numeric_limits<T>::infinity()) return;  // neither saw a key
    if (new_max > into.max) rescale_state(into, new_max);
    const T beta = std::exp(from.max - new_max);  // from's sums at the new maximum
    into.sum += beta * from.sum;
    for (std::size_t c = 0; c < into.d_v; ++c) into.acc[c] += beta * from.acc[c];
}

/// @brief Combine the states of two disjoint sets of keys into the state of their
/// union.
/// @param a, b states of the same n rows and width d_v
/// @return the state as if every key of both had been fed to one state
inline SoftmaxState merge_softmax_states(const SoftmaxState& a, const SoftmaxState& b)
{
    if (a.acc.shape() != b.acc.shape())
        throw std::invalid_argument("merge_softmax_states: shapes differ");
    SoftmaxState merged = a;
    for (std::size_t i = 0; i < a.max.size(); ++i)
        merge_state_into(merged.row(i), b.row(i));
    return merged;
}

/// @brief The attention output of a state: o_i / ℓ_i, and a zero row where no key was
/// seen.
/// @return outputs, n×d_v
inline xt::xtensor<double, 2> finish_softmax_state(const SoftmaxState& state)
{
    xt::xtensor<double, 2> O = xt::zeros<double>(state.acc.shape());  // n×d_v
    for (std::size_t i = 0; i < O.shape(0); ++i)
        finish_row(state.row(i), O.data() + i * O.shape(1));
    return O;
}

// ⟨Describe one attention problem⟩ 13-flash-attention.md:235
/// @brief One attention problem as the kernels see it: O = softmax(scale·Q·Kᵀ)·V over
/// row-major rows at the given strides (a stride ≥ its row's width).
template <class T>
struct AttentionProblem {
    const T* Q;  ///< query i: d_k numbers at Q + i·ld_q
    const T* K;  ///< key j: d_k numbers at K + j·ld_k
    const T* V;  ///< value j: d_v numbers at V + j·ld_v
    T* O;        ///< output i: d_v numbers at O + i·ld_o (written)
    std::size_t n, m, d_k, d_v;          ///< queries, keys, key width, value width
    std::size_t ld_q, ld_k, ld_v, ld_o;  ///< row strides of Q, K, V, O
    double scale;  ///< multiplies every q·k; 1/√d_k for attention
    bool causal;   ///< query i attends only keys j ≤ i (needs n = m)
};

// ⟨Choose the kernel⟩ 13-flash-attention.md:1186
/// @brief Which kernel flash_attention<float> may use: the fastest the processor has,
/// at most.
enum class FlashKernel {
    best,             ///< AVX-512, else AVX2, else portable
    avx512,           ///< the same as best
    avx2,             ///< AVX2, else portable (never AVX-512)
    portable,         ///< plain loops
    emulated_avx512,  ///< for tests: the 16-lane kernel in plain C++, bit for bit
                      ///< AVX-512's
    emulated_avx2,    ///< for tests: the 8-lane kernel in plain C++, bit for bit AVX2's
};

// ⟨Choose the tiles and threads⟩ 13-flash-attention.md:275
/// @brief Tile sizes and threads of flash_attention; a 0 means "choose from the
/// machine".
struct FlashOptions {
    std::size_t query_tile = 0;              ///< B_r, query rows per tile
    std::size_t key_tile = 0;                ///< B_c, keys per tile
    unsigned threads = 0;                    ///< worker threads (0: one per core)
    FlashKernel kernel = FlashKernel::best;  ///< for float: the fastest kernel allowed
};

namespace detail {

constexpr std::size_t micro_rows = 6;  // query rows in the vector kernel's registers

// ⟨Share tiles among threads⟩ 13-flash-attention.md:292
/// Run body(t) for every t in [0, count) on `threads` threads; each takes the next t
/// when it is free.
template <class Body>
void parallel_for(std::size_t count, unsigned threads, Body&& body)
{
    std::atomic<std::size_t> next{0};
    auto work = [&] {
        for (std::size_t t; (t = next.fetch_add(1)) < count;) body(t);
    };
    std::vector<std::thread> helpers;
    for (unsigned w = 1; w < threads && w < count; ++w) helpers.emplace_back(work);
    work();
    for (std::thread& helper : helpers) helper.join();
}

inline std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }
inline std::size_t round_up(std::size_t a, std::size_t b) { return ceil_div(a, b) * b; }

// ⟨Count the key tiles that are not fully masked⟩ 13-flash-attention.md:358
/// Key tiles that query rows [i0, i1) must visit: all, or in causal attention only
/// those starting at or before the last row i1 − 1 (every later tile is masked for
/// every row).
inline std::size_t key_tiles_to_visit(std::size_t m, std::size_t i1,
                                      std::size_t key_tile, bool causal)
{
    return ceil_div(causal ? std::min(m, i1) : m, key_tile);
}

// ⟨Check a problem⟩ 13-flash-attention.md:254
/// Throw std::invalid_argument unless the problem keeps the kernel contract: m ≥ 1,
/// d_k ≥ 1, strides at least the rows' widths, n = m when causal.
template <class T>
void check_problem(const AttentionProblem<T>& p)
{
    const std::string where = "flash_attention: ";
    const std::string sizes = "n = " + std::to_string(p.n) + ", m = " +
                              std::to_string(p.m) + ", d_k = " + std::to_string(p.d_k);
    if (p.m == 0 || p.d_k == 0)
        throw std::invalid_argument(where + "need m ≥ 1 keys of d_k ≥ 1, not " + sizes);
    if (p.ld_q < p.d_k || p.ld_k < p.d_k || p.ld_v < p.d_v || p.ld_o < p.d_v)
        throw std::invalid_argument(where + "a row stride is shorter than its row");
    if (p.causal && p.n != p.m)
        throw std::invalid_argument(where + "causal needs n == m, not " + sizes);
}

// ⟨Read the cache sizes from the machine⟩ 13-flash-attention.md:413
/// @brief One core's data caches, as the tile planner uses them.
struct CacheSizes {
    std::size_t l1d_bytes = 32 * 1024;  ///< level-1 data cache (fallback: 32 KiB)
    std::size_t l2_bytes = 512 * 1024;  ///< level-2 cache (fallback: 512 KiB)
    bool from_sysfs = false;  ///< false: a size was unknown; its fallback is used
};

/// @brief The caches of the processor running the program (sysfs), read once.
inline const CacheSizes& cache_sizes()
{
    static const CacheSizes sizes = [] {
        CacheSizes read;
        const std::size_t l1d = cache_bytes(1), l2 = cache_bytes(2);  // 0 if unknown
        if (l1d) read.l1d_bytes = l1d;
        if (l2) read.l2_bytes = l2;
        read.from_sysfs = l1d && l2;
        return read;
    }();
    return sizes;
}

// ⟨Size the tiles for the caches⟩ 13-flash-attention.md:443
/// Fill the zeros in `options` from the machine: a key tile's keys and values take a
/// quarter of L2, and a group's 6×B_c scores at most half of L1d.
inline FlashOptions plan_flash(FlashOptions options, std::size_t d_k, std::size_t d_v)
{
    const CacheSizes& caches = cache_sizes();
    const std::size_t bytes_per_key = (d_k + d_v) * sizeof(float);
    const std::size_t by_l2 = caches.l2_bytes / 4 / bytes_per_key;
    const std::size_t by_l1 = caches.l1d_bytes / 2 / (micro_rows * sizeof(float));
    if (options.key_tile == 0)
        options.key_tile =
            std::clamp<std::size_t>(std::min(by_l2, by_l1) / 32 * 32, 32, 1024);
    if (options.query_tile == 0) options.query_tile = 96;
    if (options.threads == 0)
        options.threads = std::max(1u, std::thread::hardware_concurrency());
    return options;
}

// ⟨Attend with one query tile, in plain loops⟩ 13-flash-attention.md:318
/// The portable kernel for query rows [i0, i1): key tiles in order, and each tile one
/// run of chapter 6's online softmax for every row.
template <class T>
void attend_query_tile_portable(const AttentionProblem<T>& p, std::size_t i0,
                                std::size_t i1, std::size_t key_tile)
{
    const T scale = T(p.scale);
    const std::size_t rows = i1 - i0;
    std::vector<T> row_max(rows, -std::numeric_limits<T>::infinity());  // B_r
    std::vector<T> row_sum(rows, T(0));                                 // B_r
    std::vector<T> acc(rows * p.d_v, T(0)), s(key_tile);                // B_r×d_v, B_c
    auto row = [&](std::size_t i) {  // row i's state (m, ℓ, o)
        return SoftmaxRow<T>{row_max[i - i0], row_sum[i - i0],
                             acc.data() + (i - i0) * p.d_v, p.d_v};
    };
    const std::size_t tiles = key_tiles_to_visit(p.m, i1, key_tile, p.causal);
    for (std::size_t t = 0; t < tiles; ++t) {
        const std::size_t j0 = t * key_tile, j1 = std::min(p.m, j0 + key_tile);
        for (std::size_t i = i0; i < i1; ++i) {
            // causal: keys j ≤ i only
            const std::size_t j_end = p.causal ? std::min(j1, i + 1) : j1;
            if (j_end <= j0) continue;  // row i sees none of this tile
            // ⟨Score row i against the key tile⟩ 13-flash-attention.md:369
            const T* q_i = p.Q + i * p.ld_q;
            for (std::size_t j = j0; j < j_end; ++j) {
                const T* k_j = p.K + j * p.ld_k;
                T dot = 0;
                for (std::size_t c = 0; c < p.d_k; ++c) dot += q_i[c] * k_j[c];
                s[j - j0] = dot * scale;
            }
            add_scored_keys(row(i), s.data(), p.V + j0 * p.ld_v, p.ld_v, j_end - j0);
        }
    }
    for (std::size_t i = i0; i < i1; ++i)
        finish_row(row(i), p.O + i * p.ld_o);
}

// ⟨Run the portable kernel on every query tile⟩ 13-flash-attention.md:384
/// The portable kernel over all query tiles, shared among the threads.
template <class T>
void flash_portable(const AttentionProblem<T>& p, const FlashOptions& plan)
{
    parallel_for(ceil_div(p.n, plan.query_tile), plan.threads, [&](std::size_t tile) {
        const std::size_t i0 = tile * plan.query_tile,
                          i1 = std::min(p.n, i0 + plan.query_tile);
        attend_query_tile_portable(p, i0, i1, plan.key_tile);
    });
}

// ⟨Compute attention in three passes, in plain loops⟩ 13-flash-attention.md:1142
/// The portable three-pass baseline: S = Q·Kᵀ·scale (n×m), the softmax of each row,
/// then O = P·V.
template <class T>
void unfused_portable(const AttentionProblem<T>& p, const FlashOptions& plan)
{
    const T scale = T(p.scale);
    const std::size_t m = p.m;
    std::vector<T> S(p.n * m);  // n×m
    auto seen = [&](std::size_t i) { return p.causal ? std::min(m, i + 1) : m; };
    parallel_for(p.n, plan.threads, [&](std::size_t i) {  // pass 1: scores
        for (std::size_t j = 0; j < seen(i); ++j) {
            T dot = 0;
            for (std::size_t c = 0; c < p.d_k; ++c)
                dot += p.Q[i * p.ld_q + c] * p.K[j * p.ld_k + c];
            S[i * m + j] = dot * scale;
        }
    });
    parallel_for(p.n, plan.threads, [&](std::size_t i) {  // pass 2: the stable softmax
        T* s = &S[i * m];
        const T largest = *std::max_element(s, s + seen(i));
        T total = 0;
        for (std::size_t j = 0; j < seen(i); ++j)
            total += s[j] = std::exp(s[j] - largest);
        for (std::size_t j = 0; j < seen(i); ++j) s[j] /= total;
    });
    parallel_for(p.n, plan.threads, [&](std::size_t i) {  // pass 3: O = P·V
        T* o = p.O + i * p.ld_o;
        for (std::size_t c = 0; c < p.d_v; ++c) o[c] = 0;
        for (std::size_t j = 0; j < seen(i); ++j)
            for (std::size_t c = 0; c < p.d_v; ++c)
                o[c] += S[i * m + j] * p.V[j * p.ld_v + c];
    });
}

// ⟨Allocate aligned buffers⟩ 13-flash-attention.md:758
/// Floats on 64-byte boundaries (a cache line), zero-filled.
struct AlignedFloats {
    explicit AlignedFloats(std::size_t count)
        : data(static_cast<float*>(std::aligned_alloc(
              64, round_up(std::max<std::size_t>(count, 1) * 4, 64))))
    {
        if (!data) throw std::bad_alloc();
        std::fill(data.get(), data.get() + count, 0.0f);
    }
    float* get() const { return data.get(); }

private:
    struct Free {
        void operator()(float* p) const { std::free(p); }
    };
    std::unique_ptr<float, Free> data;
};

// ⟨Pack the keys and values into panels⟩ 13-flash-attention.md:713
/// Keys and values of every key tile, in the order the vector kernel reads them.
struct KeyPanels {
    std::size_t tile, group;      ///< B_c; keys per group (the kernel's micro_cols)
    std::size_t padded_tile;      ///< B_c rounded up to a whole group
    std::size_t d_k, padded_d_v;  ///< d_k; d_v rounded up to a whole group
    AlignedFloats k, v;           ///< per tile: d_k×group blocks of Kᵀ; tile×group of V
    /// The panels of key tile t.
    const float* k_panel(std::size_t t) const
    {
        return k.get() + t * padded_tile * d_k;
    }
    const float* v_panel(std::size_t t) const
    {
        return v.get() + t * padded_tile * padded_d_v;
    }
};

/// Copy the problem's K (m×d_k) and V (m×d_v) into panels of `tile` keys in groups
/// of `group`, zero-padded.
inline KeyPanels pack_keys(const AttentionProblem<float>& p, std::size_t tile,
                           std::size_t group)
{
    const std::size_t tiles = ceil_div(p.m, tile), padded_tile = round_up(tile, group);
    const std::size_t padded_d_v = round_up(p.d_v, group);
    KeyPanels panels{tile, group, padded_tile, p.d_k, padded_d_v,
                     AlignedFloats(tiles * padded_tile * p.d_k),
                     AlignedFloats(tiles * padded_tile * padded_d_v)};
    for (std::size_t j = 0; j < p.m; ++j) {
        const std::size_t t = j / tile, r = j % tile;  // key j is row r of tile t
        float* k = panels.k.get() + t * padded_tile * p.d_k +
                   (r / group) * p.d_k * group + r % group;
        for (std::size_t c = 0; c < p.d_k; ++c) k[c * group] = p.K[j * p.ld_k + c];
        float* v = panels.v.get() + t * padded_tile * padded_d_v + r * group;
        for (std::size_t c = 0; c < p.d_v; ++c)
            v[(c / group) * padded_tile * group + c % group] = p.V[j * p.ld_v + c];
    }
    return panels;
}

#if ATTN_FLASH_X86
/// Compile one function for AVX2 and FMA, whatever -march says; call it only after
/// has_avx2_fma().
#define ATTN_SIMD __attribute__((target("avx2,fma")))
namespace avx2 {
// ⟨Name the AVX2 vector operations⟩ 13-flash-attention.md:498
using vfloat = __m256;  // 8 floats
constexpr std::size_t lanes = 8;
// vload and vstore need 32-byte aligned addresses; vloadu and vstoreu do not.
ATTN_SIMD inline vfloat vload(const float* p) { return _mm256_load_ps(p); }
ATTN_SIMD inline vfloat vloadu(const float* p) { return _mm256_loadu_ps(p); }
ATTN_SIMD inline void vstore(float* p, vfloat x) { _mm256_store_ps(p, x); }
ATTN_SIMD inline void vstoreu(float* p, vfloat x) { _mm256_storeu_ps(p, x); }
ATTN_SIMD inline vfloat vset(float x) { return _mm256_set1_ps(x); }
ATTN_SIMD inline vfloat vadd(vfloat a, vfloat b) { return _mm256_add_ps(a, b); }
ATTN_SIMD inline vfloat vsub(vfloat a, vfloat b) { return _mm256_sub_ps(a, b); }
ATTN_SIMD inline vfloat vmul(vfloat a, vfloat b) { return _mm256_mul_ps(a, b); }
ATTN_SIMD inline vfloat vfmadd(vfloat a, vfloat b, vfloat c)  // a·b + c, rounded once
{
    return _mm256_fmadd_ps(a, b, c);
}
// max and min compare lane by lane: a > b ? a : b and a < b ? a : b.
ATTN_SIMD inline vfloat vmax(vfloat a, vfloat b) { return _mm256_max_ps(a, b); }
ATTN_SIMD inline vfloat vmin(vfloat a, vfloat b) { return _mm256_min_ps(a, b); }
ATTN_SIMD inline vfloat vround(vfloat x)  // to the nearest whole number, ties to even
{
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// 2^k for whole k in [−127, 128]: the float whose exponent field is k + 127.
ATTN_SIMD inline vfloat vpow2(vfloat k)
{
    const __m256i biased =
        _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
}
// ⟨Name the AVX2 vector operations⟩ +≡ 13-flash-attention.md:533
ATTN_SIMD inline float vreduce_max(vfloat x)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

ATTN_SIMD inline float vreduce_add(vfloat x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// ⟨Write the vector kernel once⟩ 13-flash-attention.md:683
constexpr std::size_t micro_cols = 2 * lanes;  // keys per group: two vectors

// ⟨Compute 2^x for a vector of floats⟩ 13-flash-attention.md:851
/// 2^x lane by lane: relative error below 3e-7 on [−126, 128); 0 for x ≤ −127 (and −∞).
ATTN_SIMD inline vfloat vexp2(vfloat x)
{
    x = vmin(vset(128.0f), vmax(vset(-127.0f), x));  // clamped; a NaN stays NaN
    const vfloat k = vround(x);
    const vfloat f = vsub(x, k);  // in [−½, ½], exact
    // 2^f ≈ 1 + f(c1 + f(c2 + f(c3 + f(c4 + f c5)))), in Horner's form
    vfloat p = vset(0.0013266970386347395f);
    p = vfmadd(p, f, vset(0.009675459745517728f));
    p = vfmadd(p, f, vset(0.055507426160024714f));
    p = vfmadd(p, f, vset(0.24022121753561682f));
    p = vfmadd(p, f, vset(0.6931469491610633f));
    p = vfmadd(p, f, vset(1.0f));
    return vmul(p, vpow2(k));  // p · 2^k
}

/// @brief y = 2^x for `count` floats with the kernel's vector exponential (for tests
/// and measurements). Call only where this instruction set is available.
ATTN_SIMD inline void exp2_array(const float* x, float* y, std::size_t count)
{
    std::size_t i = 0;
    for (; i + lanes <= count; i += lanes) vstoreu(y + i, vexp2(vloadu(x + i)));
    if (i < count) {
        float in[lanes] = {}, out[lanes];
        std::copy(x + i, x + count, in);
        vstoreu(out, vexp2(vloadu(in)));
        std::copy(out, out + (count - i), y + i);
    }
}

// ⟨Score six query rows against the key tile⟩ 13-flash-attention.md:789
/// S[r][j] = q_r · k_j for six query rows and the first `cols` keys of a panel
/// (cols a multiple of micro_cols); S is 6×ld_s.
ATTN_SIMD inline void score_micro_rows(const float* const q[micro_rows],
                                       const float* k_panel, std::size_t d_k,
                                       std::size_t cols, float* s, std::size_t ld_s)
{
    for (std::size_t j = 0; j < cols; j += micro_cols) {
        const float* k = k_panel + j * d_k;  // d_k×micro_cols block of Kᵀ
        vfloat acc[micro_rows][2];           // the 6×micro_cols block of scores
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) acc[r][0] = acc[r][1] = vset(0.0f);
        for (std::size_t c = 0; c < d_k; ++c) {
            const vfloat k0 = vload(k + c * micro_cols),
                         k1 = vload(k + c * micro_cols + lanes);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const vfloat q_rc = vset(q[r][c]);
                acc[r][0] = vfmadd(q_rc, k0, acc[r][0]);
                acc[r][1] = vfmadd(q_rc, k1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            vstore(s + r * ld_s + j, acc[r][0]);
            vstore(s + r * ld_s + j + lanes, acc[r][1]);
        }
    }
}

// ⟨Update six rows' state with the tile⟩ 13-flash-attention.md:906
/// Online-softmax update of six rows: mask, new maximum, P = 2^(S·scale − m') in place,
/// sums; α per row.
ATTN_SIMD inline void softmax_micro_rows(float* s, std::size_t ld_s, std::size_t cols,
                                         const std::size_t visible[micro_rows],
                                         float scale, float* row_max, float* row_sum,
                                         float alpha[micro_rows])
{
    const float minus_inf = -std::numeric_limits<float>::infinity();
    for (std::size_t r = 0; r < micro_rows; ++r) {
        float* s_r = s + r * ld_s;
        std::fill(s_r + visible[r], s_r + cols, minus_inf);  // masked and padding keys
        vfloat largest = vset(minus_inf);
        for (std::size_t j = 0; j < cols; j += lanes)
            largest = vmax(largest, vload(s_r + j));
        const float new_max = std::max(row_max[r], vreduce_max(largest) * scale);
        if (new_max == minus_inf) {  // nothing seen yet: keep the state empty,
            if (std::any_of(s_r, s_r + cols, [](float v) { return v != v; }))
                row_sum[r] = std::numeric_limits<float>::quiet_NaN();  // or poison it
            std::fill(s_r, s_r + cols, 0.0f);
            alpha[r] = 1;
            continue;
        }
        alpha[r] = std::exp2(row_max[r] - new_max);  // 0 on the row's first tile
        const vfloat scale_v = vset(scale), minus_max = vset(-new_max);
        vfloat total = vset(0.0f);
        for (std::size_t j = 0; j < cols; j += lanes) {
            const vfloat p = vexp2(vfmadd(vload(s_r + j), scale_v, minus_max));
            vstore(s_r + j, p);
            total = vadd(total, p);
        }
        // one rounding
        row_sum[r] = std::fma(alpha[r], row_sum[r], vreduce_add(total));
        row_max[r] = new_max;
    }
}

// ⟨Add six rows' weighted values⟩ 13-flash-attention.md:953
/// o[r] = α_r·o[r] + Σ_j P[r][j]·v_j for six rows, over the first `cols` keys of a
/// value panel (padded_tile keys per block of micro_cols columns, padded_d_v columns).
ATTN_SIMD inline void accumulate_micro_rows(const float* p, std::size_t ld_p,
                                            std::size_t cols, const float* v_panel,
                                            std::size_t padded_tile,
                                            std::size_t padded_d_v,
                                            const float alpha[micro_rows], float* o,
                                            std::size_t ld_o)
{
    for (std::size_t cb = 0; cb < padded_d_v; cb += micro_cols) {
        const float* v = v_panel + cb * padded_tile;  // padded_tile×micro_cols of V
        vfloat acc[micro_rows][2];                    // six rows × micro_cols outputs
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            const vfloat a = vset(alpha[r]);
            acc[r][0] = vmul(a, vload(o + r * ld_o + cb));
            acc[r][1] = vmul(a, vload(o + r * ld_o + cb + lanes));
        }
        for (std::size_t j = 0; j < cols; ++j) {
            const vfloat v0 = vload(v + j * micro_cols),
                         v1 = vload(v + j * micro_cols + lanes);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const vfloat p_rj = vset(p[r * ld_p + j]);
                acc[r][0] = vfmadd(p_rj, v0, acc[r][0]);
                acc[r][1] = vfmadd(p_rj, v1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            vstore(o + r * ld_o + cb, acc[r][0]);
            vstore(o + r * ld_o + cb + lanes, acc[r][1]);
        }
    }
}

// ⟨Attend with one query tile, six rows at a time⟩ 13-flash-attention.md:1002
/// The vector kernel for the problem's query rows [i0, i1), writing those rows of O.
ATTN_SIMD inline void attend_query_tile(const AttentionProblem<float>& p,
                                        const KeyPanels& keys, std::size_t i0,
                                        std::size_t i1)
{
    const std::size_t d_k = keys.d_k, padded_d_v = keys.padded_d_v;
    const std::size_t ld = keys.padded_tile;  // row stride of the scores
    const std::size_t groups = ceil_div(i1 - i0, micro_rows);
    const std::size_t rows = groups * micro_rows;
    const float scale = float(1.4426950408889634 * p.scale);  // log₂e/√d_k
    AlignedFloats s(micro_rows * ld);      // 6×B_c scores of one group
    AlignedFloats acc(rows * padded_d_v);  // B_r×d_v outputs, not yet divided by ℓ
    std::vector<float> row_max(rows, -std::numeric_limits<float>::infinity());
    std::vector<float> row_sum(rows, 0.0f);
    const std::size_t tiles = key_tiles_to_visit(p.m, i1, keys.tile, p.causal);
    for (std::size_t t = 0; t < tiles; ++t) {
        const std::size_t j0 = t * keys.tile, cols = std::min(keys.tile, p.m - j0);
        for (std::size_t g = 0; g < groups; ++g) {
            // ⟨Point at the group's six rows and what they see⟩ 13-flash-attention.md:1041
            const float* q[micro_rows];  // the six query rows
            std::size_t visible[micro_rows], widest = 0;
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const std::size_t i = std::min(i0 + g * micro_rows + r, i1 - 1);  // past i1: repeat
                q[r] = p.Q + i * p.ld_q;
                visible[r] = p.causal ? std::min(cols, i + 1 > j0 ? i + 1 - j0 : 0) : cols;  // j0…i
                widest = std::max(widest, visible[r]);
            }
            if (widest == 0) continue;  // the whole group is above the diagonal
            const std::size_t width = round_up(widest, micro_cols);
            float alpha[micro_rows];
            score_micro_rows(q, keys.k_panel(t), d_k, width, s.get(), ld);
            softmax_micro_rows(s.get(), ld, width, visible, scale,
                               &row_max[g * micro_rows], &row_sum[g * micro_rows],
                               alpha);
            accumulate_micro_rows(s.get(), ld, width, keys.v_panel(t), ld, padded_d_v,
                                  alpha, acc.get() + g * micro_rows * padded_d_v,
                                  padded_d_v);
        }
    }
    for (std::size_t i = i0; i < i1; ++i)
        for (std::size_t c = 0; c < p.d_v; ++c)
            p.O[i * p.ld_o + c] =
                acc.get()[(i - i0) * padded_d_v + c] / row_sum[i - i0];
}

// ⟨Run the vector kernel on every query tile⟩ 13-flash-attention.md:1057
/// The vector kernel over all query tiles, shared among the threads.
ATTN_SIMD inline void flash_vector(const AttentionProblem<float>& p,
                                   const FlashOptions& plan)
{
    const KeyPanels keys = pack_keys(p, plan.key_tile, micro_cols);
    const std::size_t tiles = ceil_div(p.n, plan.query_tile);
    parallel_for(tiles, plan.threads, [&](std::size_t task) {
        // causal: the tiles with the most keys first
        const std::size_t tile = p.causal ? tiles - 1 - task : task;
        const std::size_t i0 = tile * plan.query_tile,
                          i1 = std::min(p.n, i0 + plan.query_tile);
        attend_query_tile(p, keys, i0, i1);
    });
}

// ⟨Compute attention in three passes with the same steps⟩ 13-flash-attention.md:1088
/// The three-pass baseline: scores S (n×m) of all rows, then P = softmax(S) in place,
/// then O = P·V; the fused kernel's micro-kernels, with the n×m matrix stored in
/// between.
ATTN_SIMD inline void unfused_vector(const AttentionProblem<float>& p,
                                     const FlashOptions& plan)
{
    const KeyPanels keys = pack_keys(p, p.m, micro_cols);  // one tile of all m keys
    const std::size_t groups = ceil_div(p.n, micro_rows), rows = groups * micro_rows;
    const std::size_t ld = keys.padded_tile, padded_d_v = keys.padded_d_v;
    const std::size_t i0 = 0, i1 = p.n, j0 = 0, cols = p.m;  // every row, every key
    const float scale = float(1.4426950408889634 * p.scale);  // log₂e/√d_k
    AlignedFloats S(rows * ld), acc(rows * padded_d_v);  // n×m scores, n×d_v outputs
    std::vector<float> row_max(rows, -std::numeric_limits<float>::infinity());
    std::vector<float> row_sum(rows, 0.0f);
    auto each_group = [&](auto step) {  // one pass: step(g, q, visible, width), every g
        parallel_for(groups, plan.threads, [&](std::size_t g) {
            // ⟨Point at the group's six rows and what they see⟩ 13-flash-attention.md:1041
            const float* q[micro_rows];  // the six query rows
            std::size_t visible[micro_rows], widest = 0;
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const std::size_t i = std::min(i0 + g * micro_rows + r, i1 - 1);  // past i1: repeat
                q[r] = p.Q + i * p.ld_q;
                visible[r] = p.causal ? std::min(cols, i + 1 > j0 ? i + 1 - j0 : 0) : cols;  // j0…i
                widest = std::max(widest, visible[r]);
            }
            if (widest > 0) step(g, q, visible, round_up(widest, micro_cols));
        });
    };
    each_group([&](std::size_t g, const float* const* q, const std::size_t*,
                   std::size_t w) {
        score_micro_rows(q, keys.k_panel(0), p.d_k, w, S.get() + g * micro_rows * ld,
                         ld);
    });
    each_group([&](std::size_t g, const float* const*, const std::size_t* visible,
                   std::size_t w) {
        float alpha[micro_rows];  // 0: the state starts empty
        softmax_micro_rows(S.get() + g * micro_rows * ld, ld, w, visible, scale,
                           &row_max[g * micro_rows], &row_sum[g * micro_rows], alpha);
    });
    each_group([&](std::size_t g, const float* const*, const std::size_t*,
                   std::size_t w) {
        const float none[micro_rows] = {};  // α = 0: nothing accumulated before
        accumulate_micro_rows(S.get() + g * micro_rows * ld, ld, w, keys.v_panel(0), ld,
                              padded_d_v, none, acc.get() + g * micro_rows * padded_d_v,
                              padded_d_v);
    });
    for (std::size_t i = 0; i < p.n; ++i)
        for (std::size_t c = 0; c < p.d_v; ++c)
            p.O[i * p.ld_o + c] = acc.get()[i * padded_d_v + c] / row_sum[i];
}
}  // namespace avx2
#undef ATTN_SIMD

/// Compile one function for AVX-512F (and AVX2, FMA); call it only after has_avx512().
#define ATTN_SIMD __attribute__((target("avx512f,avx2,fma")))
#pragma GCC diagnostic \
    push  // GCC 12's AVX-512 intrinsics warn of their own "undefined"
#pragma GCC diagnostic ignored "-Wuninitialized"  // inputs (its bug 105593)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace avx512 {
// ⟨Name the AVX-512 vector operations⟩ 13-flash-attention.md:554
using vfloat = __m512;  // 16 floats
constexpr std::size_t lanes = 16;
// vload and vstore need 64-byte aligned addresses; vloadu and vstoreu do not.
ATTN_SIMD inline vfloat vload(const float* p) { return _mm512_load_ps(p); }
ATTN_SIMD inline vfloat vloadu(const float* p) { return _mm512_loadu_ps(p); }
ATTN_SIMD inline void vstore(float* p, vfloat x) { _mm512_store_ps(p, x); }
ATTN_SIMD inline void vstoreu(float* p, vfloat x) { _mm512_storeu_ps(p, x); }
ATTN_SIMD inline vfloat vset(float x) { return _mm512_set1_ps(x); }
ATTN_SIMD inline vfloat vadd(vfloat a, vfloat b) { return _mm512_add_ps(a, b); }
ATTN_SIMD inline vfloat vsub(vfloat a, vfloat b) { return _mm512_sub_ps(a, b); }
ATTN_SIMD inline vfloat vmul(vfloat a, vfloat b) { return _mm512_mul_ps(a, b); }
ATTN_SIMD inline vfloat vfmadd(vfloat a, vfloat b, vfloat c)  // a·b + c, rounded once
{
    return _mm512_fmadd_ps(a, b, c);
}
// max and min compare lane by lane: a > b ? a : b and a < b ? a : b.
ATTN_SIMD inline vfloat vmax(vfloat a, vfloat b) { return _mm512_max_ps(a, b); }
ATTN_SIMD inline vfloat vmin(vfloat a, vfloat b) { return _mm512_min_ps(a, b); }
ATTN_SIMD inline vfloat vround(vfloat x)  // to the nearest whole number, ties to even
{
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// 2^k for whole k in [−127, 128]: the float whose exponent field is k + 127.
ATTN_SIMD inline vfloat vpow2(vfloat k)
{
    const __m512i biased =
        _mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(biased, 23));
}

ATTN_SIMD inline __m256 upper_half(vfloat x)  // lanes 8 … 15
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
}

ATTN_SIMD inline float vreduce_max(vfloat x)
{
    const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(x), upper_half(x));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

ATTN_SIMD inline float vreduce_add(vfloat x)
{
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(x), upper_half(x));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// ⟨Write the vector kernel once⟩ 13-flash-attention.md:683
constexpr std::size_t micro_cols = 2 * lanes;  // keys per group: two vectors

// ⟨Compute 2^x for a vector of floats⟩ 13-flash-attention.md:851
/// 2^x lane by lane: relative error below 3e-7 on [−126, 128); 0 for x ≤ −127 (and −∞).
ATTN_SIMD inline vfloat vexp2(vfloat x)
{
    x = vmin(vset(128.0f), vmax(vset(-127.0f), x));  // clamped; a NaN stays NaN
    const vfloat k = vround(x);
    const vfloat f = vsub(x, k);  // in [−½, ½], exact
    // 2^f ≈ 1 + f(c1 + f(c2 + f(c3 + f(c4 + f c5)))), in Horner's form
    vfloat p = vset(0.0013266970386347395f);
    p = vfmadd(p, f, vset(0.009675459745517728f));
    p = vfmadd(p, f, vset(0.055507426160024714f));
    p = vfmadd(p, f, vset(0.24022121753561682f));
    p = vfmadd(p, f, vset(0.6931469491610633f));
    p = vfmadd(p, f, vset(1.0f));
    return vmul(p, vpow2(k));  // p · 2^k
}

/// @brief y = 2^x for `count` floats with the kernel's vector exponential (for tests
/// and measurements). Call only where this instruction set is available.
ATTN_SIMD inline void exp2_array(const float* x, float* y, std::size_t count)
{
    std::size_t i = 0;
    for (; i + lanes <= count; i += lanes) vstoreu(y + i, vexp2(vloadu(x + i)));
    if (i < count) {
        float in[lanes] = {}, out[lanes];
        std::copy(x + i, x + count, in);
        vstoreu(out, vexp2(vloadu(in)));
        std::copy(out, out + (count - i), y + i);
    }
}

// ⟨Score six query rows against the key tile⟩ 13-flash-attention.md:789
/// S[r][j] = q_r · k_j for six query rows and the first `cols` keys of a panel
/// (cols a multiple of micro_cols); S is 6×ld_s.
ATTN_SIMD inline void score_micro_rows(const float* const q[micro_rows],
                                       const float* k_panel, std::size_t d_k,
                                       std::size_t cols, float* s, std::size_t ld_s)
{
    for (std::size_t j = 0; j < cols; j += micro_cols) {
        const float* k = k_panel + j * d_k;  // d_k×micro_cols block of Kᵀ
        vfloat acc[micro_rows][2];           // the 6×micro_cols block of scores
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) acc[r][0] = acc[r][1] = vset(0.0f);
        for (std::size_t c = 0; c < d_k; ++c) {
            const vfloat k0 = vload(k + c * micro_cols),
                         k1 = vload(k + c * micro_cols + lanes);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const vfloat q_rc = vset(q[r][c]);
                acc[r][0] = vfmadd(q_rc, k0, acc[r][0]);
                acc[r][1] = vfmadd(q_rc, k1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            vstore(s + r * ld_s + j, acc[r][0]);
            vstore(s + r * ld_s + j + lanes, acc[r][1]);
        }
    }
}

// ⟨Update six rows' state with the tile⟩ 13-flash-attention.md:906
/// Online-softmax update of six rows: mask, new maximum, P = 2^(S·scale − m') in place,
/// sums; α per row.
ATTN_SIMD inline void softmax_micro_rows(float* s, std::size_t ld_s, std::size_t cols,
                                         const std::size_t visible[micro_rows],
                                         float scale, float* row_max, float* row_sum,
                                         float alpha[micro_rows])
{
    const float minus_inf = -std::numeric_limits<float>::infinity();
    for (std::size_t r = 0; r < micro_rows; ++r) {
        float* s_r = s + r * ld_s;
        std::fill(s_r + visible[r], s_r + cols, minus_inf);  // masked and padding keys
        vfloat largest = vset(minus_inf);
        for (std::size_t j = 0; j < cols; j += lanes)
            largest = vmax(largest, vload(s_r + j));
        const float new_max = std::max(row_max[r], vreduce_max(largest) * scale);
        if (new_max == minus_inf) {  // nothing seen yet: keep the state empty,
            if (std::any_of(s_r, s_r + cols, [](float v) { return v != v; }))
                row_sum[r] = std::numeric_limits<float>::quiet_NaN();  // or poison it
            std::fill(s_r, s_r + cols, 0.0f);
            alpha[r] = 1;
            continue;
        }
        alpha[r] = std::exp2(row_max[r] - new_max);  // 0 on the row's first tile
        const vfloat scale_v = vset(scale), minus_max = vset(-new_max);
        vfloat total = vset(0.0f);
        for (std::size_t j = 0; j < cols; j += lanes) {
            const vfloat p = vexp2(vfmadd(vload(s_r + j), scale_v, minus_max));
            vstore(s_r + j, p);
            total = vadd(total, p);
        }
        // one rounding
        row_sum[r] = std::fma(alpha[r], row_sum[r], vreduce_add(total));
        row_max[r] = new_max;
    }
}

// ⟨Add six rows' weighted values⟩ 13-flash-attention.md:953
/// o[r] = α_r·o[r] + Σ_j P[r][j]·v_j for six rows, over the first `cols` keys of a
/// value panel (padded_tile keys per block of micro_cols columns, padded_d_v columns).
ATTN_SIMD inline void accumulate_micro_rows(const float* p, std::size_t ld_p,
                                            std::size_t cols, const float* v_panel,
                                            std::size_t padded_tile,
                                            std::size_t padded_d_v,
                                            const float alpha[micro_rows], float* o,
                                            std::size_t ld_o)
{
    for (std::size_t cb = 0; cb < padded_d_v; cb += micro_cols) {
        const float* v = v_panel + cb * padded_tile;  // padded_tile×micro_cols of V
        vfloat acc[micro_rows][2];                    // six rows × micro_cols outputs
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            const vfloat a = vset(alpha[r]);
            acc[r][0] = vmul(a, vload(o + r * ld_o + cb));
            acc[r][1] = vmul(a, vload(o + r * ld_o + cb + lanes));
        }
        for (std::size_t j = 0; j < cols; ++j) {
            const vfloat v0 = vload(v + j * micro_cols),
                         v1 = vload(v + j * micro_cols + lanes);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const vfloat p_rj = vset(p[r * ld_p + j]);
                acc[r][0] = vfmadd(p_rj, v0, acc[r][0]);
                acc[r][1] = vfmadd(p_rj, v1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            vstore(o + r * ld_o + cb, acc[r][0]);
            vstore(o + r * ld_o + cb + lanes, acc[r][1]);
        }
    }
}

// ⟨Attend with one query tile, six rows at a time⟩ 13-flash-attention.md:1002
/// The vector kernel for the problem's query rows [i0, i1), writing those rows of O.
ATTN_SIMD inline void attend_query_tile(const AttentionProblem<float>& p,
                                        const KeyPanels& keys, std::size_t i0,
                                        std::size_t i1)
{
    const std::size_t d_k = keys.d_k, padded_d_v = keys.padded_d_v;
    const std::size_t ld = keys.padded_tile;  // row stride of the scores
    const std::size_t groups = ceil_div(i1 - i0, micro_rows);
    const std::size_t rows = groups * micro_rows;
    const float scale = float(1.4426950408889634 * p.scale);  // log₂e/√d_k
    AlignedFloats s(micro_rows * ld);      // 6×B_c scores of one group
    AlignedFloats acc(rows * padded_d_v);  // B_r×d_v outputs, not yet divided by ℓ
    std::vector<float> row_max(rows, -std::numeric_limits<float>::infinity());
    std::vector<float> row_sum(rows, 0.0f);
    const std::size_t tiles = key_tiles_to_visit(p.m, i1, keys.tile, p.causal);
    for (std::size_t t = 0; t < tiles; ++t) {
        const std::size_t j0 = t * keys.tile, cols = std::min(keys.tile, p.m - j0);
        for (std::size_t g = 0; g < groups; ++g) {
            // ⟨Point at the group's six rows and what they see⟩ 13-flash-attention.md:1041
            const float* q[micro_rows];  // the six query rows
            std::size_t visible[micro_rows], widest = 0;
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const std::size_t i = std::min(i0 + g * micro_rows + r, i1 - 1);  // past i1: repeat
                q[r] = p.Q + i * p.ld_q;
                visible[r] = p.causal ? std::min(cols, i + 1 > j0 ? i + 1 - j0 : 0) : cols;  // j0…i
                widest = std::max(widest, visible[r]);
            }
            if (widest == 0) continue;  // the whole group is above the diagonal
            const std::size_t width = round_up(widest, micro_cols);
            float alpha[micro_rows];
            score_micro_rows(q, keys.k_panel(t), d_k, width, s.get(), ld);
            softmax_micro_rows(s.get(), ld, width, visible, scale,
                               &row_max[g * micro_rows], &row_sum[g * micro_rows],
                               alpha);
            accumulate_micro_rows(s.get(), ld, width, keys.v_panel(t), ld, padded_d_v,
                                  alpha, acc.get() + g * micro_rows * padded_d_v,
                                  padded_d_v);
        }
    }
    for (std::size_t i = i0; i < i1; ++i)
        for (std::size_t c = 0; c < p.d_v; ++c)
            p.O[i * p.ld_o + c] =
                acc.get()[(i - i0) * padded_d_v + c] / row_sum[i - i0];
}

// ⟨Run the vector kernel on every query tile⟩ 13-flash-attention.md:1057
/// The vector kernel over all query tiles, shared among the threads.
ATTN_SIMD inline void flash_vector(const AttentionProblem<float>& p,
                                   const FlashOptions& plan)
{
    const KeyPanels keys = pack_keys(p, plan.key_tile, micro_cols);
    const std::size_t tiles = ceil_div(p.n, plan.query_tile);
    parallel_for(tiles, plan.threads, [&](std::size_t task) {
        // causal: the tiles with the most keys first
        const std::size_t tile = p.causal ? tiles - 1 - task : task;
        const std::size_t i0 = tile * plan.query_tile,
                          i1 = std::min(p.n, i0 + plan.query_tile);
        attend_query_tile(p, keys, i0, i1);
    });
}

// ⟨Compute attention in three passes with the same steps⟩ 13-flash-attention.md:1088
/// The three-pass baseline: scores S (n×m) of all rows, then P = softmax(S) in place,
/// then O = P·V; the fused kernel's micro-kernels, with the n×m matrix stored in
/// between.
ATTN_SIMD inline void unfused_vector(const AttentionProblem<float>& p,
                                     const FlashOptions& plan)
{
    const KeyPanels keys = pack_keys(p, p.m, micro_cols);  // one tile of all m keys
    const std::size_t groups = ceil_div(p.n, micro_rows), rows = groups * micro_rows;
    const std::size_t ld = keys.padded_tile, padded_d_v = keys.padded_d_v;
    const std::size_t i0 = 0, i1 = p.n, j0 = 0, cols = p.m;  // every row, every key
    const float scale = float(1.4426950408889634 * p.scale);  // log₂e/√d_k
    AlignedFloats S(rows * ld), acc(rows * padded_d_v);  // n×m scores, n×d_v outputs
    std::vector<float> row_max(rows, -std::numeric_limits<float>::infinity());
    std::vector<float> row_sum(rows, 0.0f);
    auto each_group = [&](auto step) {  // one pass: step(g, q, visible, width), every g
        parallel_for(groups, plan.threads, [&](std::size_t g) {
            // ⟨Point at the group's six rows and what they see⟩ 13-flash-attention.md:1041
            const float* q[micro_rows];  // the six query rows
            std::size_t visible[micro_rows], widest = 0;
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const std::size_t i = std::min(i0 + g * micro_rows + r, i1 - 1);  // past i1: repeat
                q[r] = p.Q + i * p.ld_q;
                visible[r] = p.causal ? std::min(cols, i + 1 > j0 ? i + 1 - j0 : 0) : cols;  // j0…i
                widest = std::max(widest, visible[r]);
            }
            if (widest > 0) step(g, q, visible, round_up(widest, micro_cols));
        });
    };
    each_group([&](std::size_t g, const float* const* q, const std::size_t*,
                   std::size_t w) {
        score_micro_rows(q, keys.k_panel(0), p.d_k, w, S.get() + g * micro_rows * ld,
                         ld);
    });
    each_group([&](std::size_t g, const float* const*, const std::size_t* visible,
                   std::size_t w) {
        float alpha[micro_rows];  // 0: the state starts empty
        softmax_micro_rows(S.get() + g * micro_rows * ld, ld, w, visible, scale,
                           &row_max[g * micro_rows], &row_sum[g * micro_rows], alpha);
    });
    each_group([&](std::size_t g, const float* const*, const std::size_t*,
                   std::size_t w) {
        const float none[micro_rows] = {};  // α = 0: nothing accumulated before
        accumulate_micro_rows(S.get() + g * micro_rows * ld, ld, w, keys.v_panel(0), ld,
                              padded_d_v, none, acc.get() + g * micro_rows * padded_d_v,
                              padded_d_v);
    });
    for (std::size_t i = 0; i < p.n; ++i)
        for (std::size_t c = 0; c < p.d_v; ++c)
            p.O[i * p.ld_o + c] = acc.get()[i * padded_d_v + c] / row_sum[i];
}
}  // namespace avx512
#pragma GCC diagnostic pop
#undef ATTN_SIMD
#endif

#define ATTN_SIMD  // the plain twins: no attribute, any processor
namespace emulated8 {
constexpr std::size_t lanes = 8;
// ⟨Emulate the vector operations in plain C++⟩ 13-flash-attention.md:613
struct vfloat {
    float lane[lanes];
};
template <class F>
vfloat lanewise(F f)  // the vector of f(0), …, f(lanes − 1)
{
    vfloat r;
    for (std::size_t l = 0; l < lanes; ++l) r.lane[l] = f(l);
    return r;
}
template <class F>
vfloat zip(vfloat a, vfloat b, F f)  // the vector of f(a_l, b_l)
{
    return lanewise([&](std::size_t l) { return f(a.lane[l], b.lane[l]); });
}
// As the instructions compare: the second operand when the first is not larger (NaN).
inline float max_of(float x, float y) { return x > y ? x : y; }
inline float min_of(float x, float y) { return x < y ? x : y; }
inline vfloat vload(const float* p) 
{
    return lanewise([&](std::size_t l) { return p[l]; });
}
inline vfloat vloadu(const float* p) { return vload(p); }
inline void vstore(float* p, vfloat x) { std::copy(x.lane, x.lane + lanes, p); }
inline void vstoreu(float* p, vfloat x) { vstore(p, x); }
inline vfloat vset(float x) { return lanewise([&](std::size_t) { return x; }); }
inline vfloat vadd(vfloat a, vfloat b) { return zip(a, b, std::plus<float>()); }
inline vfloat vsub(vfloat a, vfloat b) { return zip(a, b, std::minus<float>()); }
inline vfloat vmul(vfloat a, vfloat b) { return zip(a, b, std::multiplies<float>()); }
inline vfloat vmax(vfloat a, vfloat b) { return zip(a, b, max_of); }
inline vfloat vmin(vfloat a, vfloat b) { return zip(a, b, min_of); }
inline vfloat vfmadd(vfloat a, vfloat b, vfloat c)  // a·b + c, rounded once
{
    return lanewise([&](std::size_t l) {
        return std::fma(a.lane[l], b.lane[l], c.lane[l]); });
}
inline vfloat vround(vfloat x)  // ties to even, the default rounding mode
{
    return lanewise([&](std::size_t l) { return std::nearbyint(x.lane[l]); });
}
inline vfloat vpow2(vfloat k)  // 2^k for whole k in [−127, 128]: exponent field k + 127
{
    return lanewise([&](std::size_t l) {
        if (k.lane[l] != k.lane[l]) return 1.0f;  // NaN: what the instructions give
        const std::uint32_t bits = std::uint32_t(std::int32_t(k.lane[l]) + 127) << 23;
        float power;
        std::memcpy(&power, &bits, sizeof power);
        return power;
    });
}
inline float vreduce_max(vfloat x)  // lane l with l + half, half = lanes/2, …, 1
{
    for (std::size_t half = lanes / 2; half > 0; half /= 2)
        for (std::size_t l = 0; l < half; ++l)
            x.lane[l] = max_of(x.lane[l], x.lane[l + half]);
    return x.lane[0];
}
inline float vreduce_add(vfloat x)
{
    for (std::size_t half = lanes / 2; half > 0; half /= 2)
        for (std::size_t l = 0; l < half; ++l) x.lane[l] = x.lane[l] + x.lane[l + half];
    return x.lane[0];
}
// ⟨Write the vector kernel once⟩ 13-flash-attention.md:683
constexpr std::size_t micro_cols = 2 * lanes;  // keys per group: two vectors

// ⟨Compute 2^x for a vector of floats⟩ 13-flash-attention.md:851
/// 2^x lane by lane: relative error below 3e-7 on [−126, 128); 0 for x ≤ −127 (and −∞).
ATTN_SIMD inline vfloat vexp2(vfloat x)
{
    x = vmin(vset(128.0f), vmax(vset(-127.0f), x));  // clamped; a NaN stays NaN
    const vfloat k = vround(x);
    const vfloat f = vsub(x, k);  // in [−½, ½], exact
    // 2^f ≈ 1 + f(c1 + f(c2 + f(c3 + f(c4 + f c5)))), in Horner's form
    vfloat p = vset(0.0013266970386347395f);
    p = vfmadd(p, f, vset(0.009675459745517728f));
    p = vfmadd(p, f, vset(0.055507426160024714f));
    p = vfmadd(p, f, vset(0.24022121753561682f));
    p = vfmadd(p, f, vset(0.6931469491610633f));
    p = vfmadd(p, f, vset(1.0f));
    return vmul(p, vpow2(k));  // p · 2^k
}

/// @brief y = 2^x for `count` floats with the kernel's vector exponential (for tests
/// and measurements). Call only where this instruction set is available.
ATTN_SIMD inline void exp2_array(const float* x, float* y, std::size_t count)
{
    std::size_t i = 0;
    for (; i + lanes <= count; i += lanes) vstoreu(y + i, vexp2(vloadu(x + i)));
    if (i < count) {
        float in[lanes] = {}, out[lanes];
        std::copy(x + i, x + count, in);
        vstoreu(out, vexp2(vloadu(in)));
        std::copy(out, out + (count - i), y + i);
    }
}

// ⟨Score six query rows against the key tile⟩ 13-flash-attention.md:789
/// S[r][j] = q_r · k_j for six query rows and the first `cols` keys of a panel
/// (cols a multiple of micro_cols); S is 6×ld_s.
ATTN_SIMD inline void score_micro_rows(const float* const q[micro_rows],
                                       const float* k_panel, std::size_t d_k,
                                       std::size_t cols, float* s, std::size_t ld_s)
{
    for (std::size_t j = 0; j < cols; j += micro_cols) {
        const float* k = k_panel + j * d_k;  // d_k×micro_cols block of Kᵀ
        vfloat acc[micro_rows][2];           // the 6×micro_cols block of scores
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) acc[r][0] = acc[r][1] = vset(0.0f);
        for (std::size_t c = 0; c < d_k; ++c) {
            const vfloat k0 = vload(k + c * micro_cols),
                         k1 = vload(k + c * micro_cols + lanes);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const vfloat q_rc = vset(q[r][c]);
                acc[r][0] = vfmadd(q_rc, k0, acc[r][0]);
                acc[r][1] = vfmadd(q_rc, k1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            vstore(s + r * ld_s + j, acc[r][0]);
            vstore(s + r * ld_s + j + lanes, acc[r][1]);
        }
    }
}

// ⟨Update six rows' state with the tile⟩ 13-flash-attention.md:906
/// Online-softmax update of six rows: mask, new maximum, P = 2^(S·scale − m') in place,
/// sums; α per row.
ATTN_SIMD inline void softmax_micro_rows(float* s, std::size_t ld_s, std::size_t cols,
                                         const std::size_t visible[micro_rows],
                                         float scale, float* row_max, float* row_sum,
                                         float alpha[micro_rows])
{
    const float minus_inf = -std::numeric_limits<float>::infinity();
    for (std::size_t r = 0; r < micro_rows; ++r) {
        float* s_r = s + r * ld_s;
        std::fill(s_r + visible[r], s_r + cols, minus_inf);  // masked and padding keys
        vfloat largest = vset(minus_inf);
        for (std::size_t j = 0; j < cols; j += lanes)
            largest = vmax(largest, vload(s_r + j));
        const float new_max = std::max(row_max[r], vreduce_max(largest) * scale);
        if (new_max == minus_inf) {  // nothing seen yet: keep the state empty,
            if (std::any_of(s_r, s_r + cols, [](float v) { return v != v; }))
                row_sum[r] = std::numeric_limits<float>::quiet_NaN();  // or poison it
            std::fill(s_r, s_r + cols, 0.0f);
            alpha[r] = 1;
            continue;
        }
        alpha[r] = std::exp2(row_max[r] - new_max);  // 0 on the row's first tile
        const vfloat scale_v = vset(scale), minus_max = vset(-new_max);
        vfloat total = vset(0.0f);
        for (std::size_t j = 0; j < cols; j += lanes) {
            const vfloat p = vexp2(vfmadd(vload(s_r + j), scale_v, minus_max));
            vstore(s_r + j, p);
            total = vadd(total, p);
        }
        // one rounding
        row_sum[r] = std::fma(alpha[r], row_sum[r], vreduce_add(total));
        row_max[r] = new_max;
    }
}

// ⟨Add six rows' weighted values⟩ 13-flash-attention.md:953
/// o[r] = α_r·o[r] + Σ_j P[r][j]·v_j for six rows, over the first `cols` keys of a
/// value panel (padded_tile keys per block of micro_cols columns, padded_d_v columns).
ATTN_SIMD inline void accumulate_micro_rows(const float* p, std::size_t ld_p,
                                            std::size_t cols, const float* v_panel,
                                            std::size_t padded_tile,
                                            std::size_t padded_d_v,
                                            const float alpha[micro_rows], float* o,
                                            std::size_t ld_o)
{
    for (std::size_t cb = 0; cb < padded_d_v; cb += micro_cols) {
        const float* v = v_panel + cb * padded_tile;  // padded_tile×micro_cols of V
        vfloat acc[micro_rows][2];                    // six rows × micro_cols outputs
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            const vfloat a = vset(alpha[r]);
            acc[r][0] = vmul(a, vload(o + r * ld_o + cb));
            acc[r][1] = vmul(a, vload(o + r * ld_o + cb + lanes));
        }
        for (std::size_t j = 0; j < cols; ++j) {
            const vfloat v0 = vload(v + j * micro_cols),
                         v1 = vload(v + j * micro_cols + lanes);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const vfloat p_rj = vset(p[r * ld_p + j]);
                acc[r][0] = vfmadd(p_rj, v0, acc[r][0]);
                acc[r][1] = vfmadd(p_rj, v1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            vstore(o + r * ld_o + cb, acc[r][0]);
            vstore(o + r * ld_o + cb + lanes, acc[r][1]);
        }
    }
}

// ⟨Attend with one query tile, six rows at a time⟩ 13-flash-attention.md:1002
/// The vector kernel for the problem's query rows [i0, i1), writing those rows of O.
ATTN_SIMD inline void attend_query_tile(const AttentionProblem<float>& p,
                                        const KeyPanels& keys, std::size_t i0,
                                        std::size_t i1)
{
    const std::size_t d_k = keys.d_k, padded_d_v = keys.padded_d_v;
    const std::size_t ld = keys.padded_tile;  // row stride of the scores
    const std::size_t groups = ceil_div(i1 - i0, micro_rows);
    const std::size_t rows = groups * micro_rows;
    const float scale = float(1.4426950408889634 * p.scale);  // log₂e/√d_k
    AlignedFloats s(micro_rows * ld);      // 6×B_c scores of one group
    AlignedFloats acc(rows * padded_d_v);  // B_r×d_v outputs, not yet divided by ℓ
    std::vector<float> row_max(rows, -std::numeric_limits<float>::infinity());
    std::vector<float> row_sum(rows, 0.0f);
    const std::size_t tiles = key_tiles_to_visit(p.m, i1, keys.tile, p.causal);
    for (std::size_t t = 0; t < tiles; ++t) {
        const std::size_t j0 = t * keys.tile, cols = std::min(keys.tile, p.m - j0);
        for (std::size_t g = 0; g < groups; ++g) {
            // ⟨Point at the group's six rows and what they see⟩ 13-flash-attention.md:1041
            const float* q[micro_rows];  // the six query rows
            std::size_t visible[micro_rows], widest = 0;
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const std::size_t i = std::min(i0 + g * micro_rows + r, i1 - 1);  // past i1: repeat
                q[r] = p.Q + i * p.ld_q;
                visible[r] = p.causal ? std::min(cols, i + 1 > j0 ? i + 1 - j0 : 0) : cols;  // j0…i
                widest = std::max(widest, visible[r]);
            }
            if (widest == 0) continue;  // the whole group is above the diagonal
            const std::size_t width = round_up(widest, micro_cols);
            float alpha[micro_rows];
            score_micro_rows(q, keys.k_panel(t), d_k, width, s.get(), ld);
            softmax_micro_rows(s.get(), ld, width, visible, scale,
                               &row_max[g * micro_rows], &row_sum[g * micro_rows],
                               alpha);
            accumulate_micro_rows(s.get(), ld, width, keys.v_panel(t), ld, padded_d_v,
                                  alpha, acc.get() + g * micro_rows * padded_d_v,
                                  padded_d_v);
        }
    }
    for (std::size_t i = i0; i < i1; ++i)
        for (std::size_t c = 0; c < p.d_v; ++c)
            p.O[i * p.ld_o + c] =
                acc.get()[(i - i0) * padded_d_v + c] / row_sum[i - i0];
}

// ⟨Run the vector kernel on every query tile⟩ 13-flash-attention.md:1057
/// The vector kernel over all query tiles, shared among the threads.
ATTN_SIMD inline void flash_vector(const AttentionProblem<float>& p,
                                   const FlashOptions& plan)
{
    const KeyPanels keys = pack_keys(p, plan.key_tile, micro_cols);
    const std::size_t tiles = ceil_div(p.n, plan.query_tile);
    parallel_for(tiles, plan.threads, [&](std::size_t task) {
        // causal: the tiles with the most keys first
        const std::size_t tile = p.causal ? tiles - 1 - task : task;
        const std::size_t i0 = tile * plan.query_tile,
                          i1 = std::min(p.n, i0 + plan.query_tile);
        attend_query_tile(p, keys, i0, i1);
    });
}

// ⟨Compute attention in three passes with the same steps⟩ 13-flash-attention.md:1088
/// The three-pass baseline: scores S (n×m) of all rows, then P = softmax(S) in place,
/// then O = P·V; the fused kernel's micro-kernels, with the n×m matrix stored in
/// between.
ATTN_SIMD inline void unfused_vector(const AttentionProblem<float>& p,
                                     const FlashOptions& plan)
{
    const KeyPanels keys = pack_keys(p, p.m, micro_cols);  // one tile of all m keys
    const std::size_t groups = ceil_div(p.n, micro_rows), rows = groups * micro_rows;
    const std::size_t ld = keys.padded_tile, padded_d_v = keys.padded_d_v;
    const std::size_t i0 = 0, i1 = p.n, j0 = 0, cols = p.m;  // every row, every key
    const float scale = float(1.4426950408889634 * p.scale);  // log₂e/√d_k
    AlignedFloats S(rows * ld), acc(rows * padded_d_v);  // n×m scores, n×d_v outputs
    std::vector<float> row_max(rows, -std::numeric_limits<float>::infinity());
    std::vector<float> row_sum(rows, 0.0f);
    auto each_group = [&](auto step) {  // one pass: step(g, q, visible, width), every g
        parallel_for(groups, plan.threads, [&](std::size_t g) {
            // ⟨Point at the group's six rows and what they see⟩ 13-flash-attention.md:1041
            const float* q[micro_rows];  // the six query rows
            std::size_t visible[micro_rows], widest = 0;
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const std::size_t i = std::min(i0 + g * micro_rows + r, i1 - 1);  // past i1: repeat
                q[r] = p.Q + i * p.ld_q;
                visible[r] = p.causal ? std::min(cols, i + 1 > j0 ? i + 1 - j0 : 0) : cols;  // j0…i
                widest = std::max(widest, visible[r]);
            }
            if (widest > 0) step(g, q, visible, round_up(widest, micro_cols));
        });
    };
    each_group([&](std::size_t g, const float* const* q, const std::size_t*,
                   std::size_t w) {
        score_micro_rows(q, keys.k_panel(0), p.d_k, w, S.get() + g * micro_rows * ld,
                         ld);
    });
    each_group([&](std::size_t g, const float* const*, const std::size_t* visible,
                   std::size_t w) {
        float alpha[micro_rows];  // 0: the state starts empty
        softmax_micro_rows(S.get() + g * micro_rows * ld, ld, w, visible, scale,
                           &row_max[g * micro_rows], &row_sum[g * micro_rows], alpha);
    });
    each_group([&](std::size_t g, const float* const*, const std::size_t*,
                   std::size_t w) {
        const float none[micro_rows] = {};  // α = 0: nothing accumulated before
        accumulate_micro_rows(S.get() + g * micro_rows * ld, ld, w, keys.v_panel(0), ld,
                              padded_d_v, none, acc.get() + g * micro_rows * padded_d_v,
                              padded_d_v);
    });
    for (std::size_t i = 0; i < p.n; ++i)
        for (std::size_t c = 0; c < p.d_v; ++c)
            p.O[i * p.ld_o + c] = acc.get()[i * padded_d_v + c] / row_sum[i];
}
}  // namespace emulated8

namespace emulated16 {
constexpr std::size_t lanes = 16;
// ⟨Emulate the vector operations in plain C++⟩ 13-flash-attention.md:613
struct vfloat {
    float lane[lanes];
};
template <class F>
vfloat lanewise(F f)  // the vector of f(0), …, f(lanes − 1)
{
    vfloat r;
    for (std::size_t l = 0; l < lanes; ++l) r.lane[l] = f(l);
    return r;
}
template <class F>
vfloat zip(vfloat a, vfloat b, F f)  // the vector of f(a_l, b_l)
{
    return lanewise([&](std::size_t l) { return f(a.lane[l], b.lane[l]); });
}
// As the instructions compare: the second operand when the first is not larger (NaN).
inline float max_of(float x, float y) { return x > y ? x : y; }
inline float min_of(float x, float y) { return x < y ? x : y; }
inline vfloat vload(const float* p) 
{
    return lanewise([&](std::size_t l) { return p[l]; });
}
inline vfloat vloadu(const float* p) { return vload(p); }
inline void vstore(float* p, vfloat x) { std::copy(x.lane, x.lane + lanes, p); }
inline void vstoreu(float* p, vfloat x) { vstore(p, x); }
inline vfloat vset(float x) { return lanewise([&](std::size_t) { return x; }); }
inline vfloat vadd(vfloat a, vfloat b) { return zip(a, b, std::plus<float>()); }
inline vfloat vsub(vfloat a, vfloat b) { return zip(a, b, std::minus<float>()); }
inline vfloat vmul(vfloat a, vfloat b) { return zip(a, b, std::multiplies<float>()); }
inline vfloat vmax(vfloat a, vfloat b) { return zip(a, b, max_of); }
inline vfloat vmin(vfloat a, vfloat b) { return zip(a, b, min_of); }
inline vfloat vfmadd(vfloat a, vfloat b, vfloat c)  // a·b + c, rounded once
{
    return lanewise([&](std::size_t l) {
        return std::fma(a.lane[l], b.lane[l], c.lane[l]); });
}
inline vfloat vround(vfloat x)  // ties to even, the default rounding mode
{
    return lanewise([&](std::size_t l) { return std::nearbyint(x.lane[l]); });
}
inline vfloat vpow2(vfloat k)  // 2^k for whole k in [−127, 128]: exponent field k + 127
{
    return lanewise([&](std::size_t l) {
        if (k.lane[l] != k.lane[l]) return 1.0f;  // NaN: what the instructions give
        const std::uint32_t bits = std::uint32_t(std::int32_t(k.lane[l]) + 127) << 23;
        float power;
        std::memcpy(&power, &bits, sizeof power);
        return power;
    });
}
inline float vreduce_max(vfloat x)  // lane l with l + half, half = lanes/2, …, 1
{
    for (std::size_t half = lanes / 2; half > 0; half /= 2)
        for (std::size_t l = 0; l < half; ++l)
            x.lane[l] = max_of(x.lane[l], x.lane[l + half]);
    return x.lane[0];
}
inline float vreduce_add(vfloat x)
{
    for (std::size_t half = lanes / 2; half > 0; half /= 2)
        for (std::size_t l = 0; l < half; ++l) x.lane[l] = x.lane[l] + x.lane[l + half];
    return x.lane[0];
}
// ⟨Write the vector kernel once⟩ 13-flash-attention.md:683
constexpr std::size_t micro_cols = 2 * lanes;  // keys per group: two vectors

// ⟨Compute 2^x for a vector of floats⟩ 13-flash-attention.md:851
/// 2^x lane by lane: relative error below 3e-7 on [−126, 128); 0 for x ≤ −127 (and −∞).
ATTN_SIMD inline vfloat vexp2(vfloat x)
{
    x = vmin(vset(128.0f), vmax(vset(-127.0f), x));  // clamped; a NaN stays NaN
    const vfloat k = vround(x);
    const vfloat f = vsub(x, k);  // in [−½, ½], exact
    // 2^f ≈ 1 + f(c1 + f(c2 + f(c3 + f(c4 + f c5)))), in Horner's form
    vfloat p = vset(0.0013266970386347395f);
    p = vfmadd(p, f, vset(0.009675459745517728f));
    p = vfmadd(p, f, vset(0.055507426160024714f));
    p = vfmadd(p, f, vset(0.24022121753561682f));
    p = vfmadd(p, f, vset(0.6931469491610633f));
    p = vfmadd(p, f, vset(1.0f));
    return vmul(p, vpow2(k));  // p · 2^k
}

/// @brief y = 2^x for `count` floats with the kernel's vector exponential (for tests
/// and measurements). Call only where this instruction set is available.
ATTN_SIMD inline void exp2_array(const float* x, float* y, std::size_t count)
{
    std::size_t i = 0;
    for (; i + lanes <= count; i += lanes) vstoreu(y + i, vexp2(vloadu(x + i)));
    if (i < count) {
        float in[lanes] = {}, out[lanes];
        std::copy(x + i, x + count, in);
        vstoreu(out, vexp2(vloadu(in)));
        std::copy(out, out + (count - i), y + i);
    }
}

// ⟨Score six query rows against the key tile⟩ 13-flash-attention.md:789
/// S[r][j] = q_r · k_j for six query rows and the first `cols` keys of a panel
/// (cols a multiple of micro_cols); S is 6×ld_s.
ATTN_SIMD inline void score_micro_rows(const float* const q[micro_rows],
                                       const float* k_panel, std::size_t d_k,
                                       std::size_t cols, float* s, std::size_t ld_s)
{
    for (std::size_t j = 0; j < cols; j += micro_cols) {
        const float* k = k_panel + j * d_k;  // d_k×micro_cols block of Kᵀ
        vfloat acc[micro_rows][2];           // the 6×micro_cols block of scores
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) acc[r][0] = acc[r][1] = vset(0.0f);
        for (std::size_t c = 0; c < d_k; ++c) {
            const vfloat k0 = vload(k + c * micro_cols),
                         k1 = vload(k + c * micro_cols + lanes);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const vfloat q_rc = vset(q[r][c]);
                acc[r][0] = vfmadd(q_rc, k0, acc[r][0]);
                acc[r][1] = vfmadd(q_rc, k1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            vstore(s + r * ld_s + j, acc[r][0]);
            vstore(s + r * ld_s + j + lanes, acc[r][1]);
        }
    }
}

// ⟨Update six rows' state with the tile⟩ 13-flash-attention.md:906
/// Online-softmax update of six rows: mask, new maximum, P = 2^(S·scale − m') in place,
/// sums; α per row.
ATTN_SIMD inline void softmax_micro_rows(float* s, std::size_t ld_s, std::size_t cols,
                                         const std::size_t visible[micro_rows],
                                         float scale, float* row_max, float* row_sum,
                                         float alpha[micro_rows])
{
    const float minus_inf = -std::numeric_limits<float>::infinity();
    for (std::size_t r = 0; r < micro_rows; ++r) {
        float* s_r = s + r * ld_s;
        std::fill(s_r + visible[r], s_r + cols, minus_inf);  // masked and padding keys
        vfloat largest = vset(minus_inf);
        for (std::size_t j = 0; j < cols; j += lanes)
            largest = vmax(largest, vload(s_r + j));
        const float new_max = std::max(row_max[r], vreduce_max(largest) * scale);
        if (new_max == minus_inf) {  // nothing seen yet: keep the state empty,
            if (std::any_of(s_r, s_r + cols, [](float v) { return v != v; }))
                row_sum[r] = std::numeric_limits<float>::quiet_NaN();  // or poison it
            std::fill(s_r, s_r + cols, 0.0f);
            alpha[r] = 1;
            continue;
        }
        alpha[r] = std::exp2(row_max[r] - new_max);  // 0 on the row's first tile
        const vfloat scale_v = vset(scale), minus_max = vset(-new_max);
        vfloat total = vset(0.0f);
        for (std::size_t j = 0; j < cols; j += lanes) {
            const vfloat p = vexp2(vfmadd(vload(s_r + j), scale_v, minus_max));
            vstore(s_r + j, p);
            total = vadd(total, p);
        }
        // one rounding
        row_sum[r] = std::fma(alpha[r], row_sum[r], vreduce_add(total));
        row_max[r] = new_max;
    }
}

// ⟨Add six rows' weighted values⟩ 13-flash-attention.md:953
/// o[r] = α_r·o[r] + Σ_j P[r][j]·v_j for six rows, over the first `cols` keys of a
/// value panel (padded_tile keys per block of micro_cols columns, padded_d_v columns).
ATTN_SIMD inline void accumulate_micro_rows(const float* p, std::size_t ld_p,
                                            std::size_t cols, const float* v_panel,
                                            std::size_t padded_tile,
                                            std::size_t padded_d_v,
                                            const float alpha[micro_rows], float* o,
                                            std::size_t ld_o)
{
    for (std::size_t cb = 0; cb < padded_d_v; cb += micro_cols) {
        const float* v = v_panel + cb * padded_tile;  // padded_tile×micro_cols of V
        vfloat acc[micro_rows][2];                    // six rows × micro_cols outputs
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            const vfloat a = vset(alpha[r]);
            acc[r][0] = vmul(a, vload(o + r * ld_o + cb));
            acc[r][1] = vmul(a, vload(o + r * ld_o + cb + lanes));
        }
        for (std::size_t j = 0; j < cols; ++j) {
            const vfloat v0 = vload(v + j * micro_cols),
                         v1 = vload(v + j * micro_cols + lanes);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const vfloat p_rj = vset(p[r * ld_p + j]);
                acc[r][0] = vfmadd(p_rj, v0, acc[r][0]);
                acc[r][1] = vfmadd(p_rj, v1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            vstore(o + r * ld_o + cb, acc[r][0]);
            vstore(o + r * ld_o + cb + lanes, acc[r][1]);
        }
    }
}

// ⟨Attend with one query tile, six rows at a time⟩ 13-flash-attention.md:1002
/// The vector kernel for the problem's query rows [i0, i1), writing those rows of O.
ATTN_SIMD inline void attend_query_tile(const AttentionProblem<float>& p,
                                        const KeyPanels& keys, std::size_t i0,
                                        std::size_t i1)
{
    const std::size_t d_k = keys.d_k, padded_d_v = keys.padded_d_v;
    const std::size_t ld = keys.padded_tile;  // row stride of the scores
    const std::size_t groups = ceil_div(i1 - i0, micro_rows);
    const std::size_t rows = groups * micro_rows;
    const float scale = float(1.4426950408889634 * p.scale);  // log₂e/√d_k
    AlignedFloats s(micro_rows * ld);      // 6×B_c scores of one group
    AlignedFloats acc(rows * padded_d_v);  // B_r×d_v outputs, not yet divided by ℓ
    std::vector<float> row_max(rows, -std::numeric_limits<float>::infinity());
    std::vector<float> row_sum(rows, 0.0f);
    const std::size_t tiles = key_tiles_to_visit(p.m, i1, keys.tile, p.causal);
    for (std::size_t t = 0; t < tiles; ++t) {
        const std::size_t j0 = t * keys.tile, cols = std::min(keys.tile, p.m - j0);
        for (std::size_t g = 0; g < groups; ++g) {
            // ⟨Point at the group's six rows and what they see⟩ 13-flash-attention.md:1041
            const float* q[micro_rows];  // the six query rows
            std::size_t visible[micro_rows], widest = 0;
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const std::size_t i = std::min(i0 + g * micro_rows + r, i1 - 1);  // past i1: repeat
                q[r] = p.Q + i * p.ld_q;
                visible[r] = p.causal ? std::min(cols, i + 1 > j0 ? i + 1 - j0 : 0) : cols;  // j0…i
                widest = std::max(widest, visible[r]);
            }
            if (widest == 0) continue;  // the whole group is above the diagonal
            const std::size_t width = round_up(widest, micro_cols);
            float alpha[micro_rows];
            score_micro_rows(q, keys.k_panel(t), d_k, width, s.get(), ld);
            softmax_micro_rows(s.get(), ld, width, visible, scale,
                               &row_max[g * micro_rows], &row_sum[g * micro_rows],
                               alpha);
            accumulate_micro_rows(s.get(), ld, width, keys.v_panel(t), ld, padded_d_v,
                                  alpha, acc.get() + g * micro_rows * padded_d_v,
                                  padded_d_v);
        }
    }
    for (std::size_t i = i0; i < i1; ++i)
        for (std::size_t c = 0; c < p.d_v; ++c)
            p.O[i * p.ld_o + c] =
                acc.get()[(i - i0) * padded_d_v + c] / row_sum[i - i0];
}

// ⟨Run the vector kernel on every query tile⟩ 13-flash-attention.md:1057
/// The vector kernel over all query tiles, shared among the threads.
ATTN_SIMD inline void flash_vector(const AttentionProblem<float>& p,
                                   const FlashOptions& plan)
{
    const KeyPanels keys = pack_keys(p, plan.key_tile, micro_cols);
    const std::size_t tiles = ceil_div(p.n, plan.query_tile);
    parallel_for(tiles, plan.threads, [&](std::size_t task) {
        // causal: the tiles with the most keys first
        const std::size_t tile = p.causal ? tiles - 1 - task : task;
        const std::size_t i0 = tile * plan.query_tile,
                          i1 = std::min(p.n, i0 + plan.query_tile);
        attend_query_tile(p, keys, i0, i1);
    });
}

// ⟨Compute attention in three passes with the same steps⟩ 13-flash-attention.md:1088
/// The three-pass baseline: scores S (n×m) of all rows, then P = softmax(S) in place,
/// then O = P·V; the fused kernel's micro-kernels, with the n×m matrix stored in
/// between.
ATTN_SIMD inline void unfused_vector(const AttentionProblem<float>& p,
                                     const FlashOptions& plan)
{
    const KeyPanels keys = pack_keys(p, p.m, micro_cols);  // one tile of all m keys
    const std::size_t groups = ceil_div(p.n, micro_rows), rows = groups * micro_rows;
    const std::size_t ld = keys.padded_tile, padded_d_v = keys.padded_d_v;
    const std::size_t i0 = 0, i1 = p.n, j0 = 0, cols = p.m;  // every row, every key
    const float scale = float(1.4426950408889634 * p.scale);  // log₂e/√d_k
    AlignedFloats S(rows * ld), acc(rows * padded_d_v);  // n×m scores, n×d_v outputs
    std::vector<float> row_max(rows, -std::numeric_limits<float>::infinity());
    std::vector<float> row_sum(rows, 0.0f);
    auto each_group = [&](auto step) {  // one pass: step(g, q, visible, width), every g
        parallel_for(groups, plan.threads, [&](std::size_t g) {
            // ⟨Point at the group's six rows and what they see⟩ 13-flash-attention.md:1041
            const float* q[micro_rows];  // the six query rows
            std::size_t visible[micro_rows], widest = 0;
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const std::size_t i = std::min(i0 + g * micro_rows + r, i1 - 1);  // past i1: repeat
                q[r] = p.Q + i * p.ld_q;
                visible[r] = p.causal ? std::min(cols, i + 1 > j0 ? i + 1 - j0 : 0) : cols;  // j0…i
                widest = std::max(widest, visible[r]);
            }
            if (widest > 0) step(g, q, visible, round_up(widest, micro_cols));
        });
    };
    each_group([&](std::size_t g, const float* const* q, const std::size_t*,
                   std::size_t w) {
        score_micro_rows(q, keys.k_panel(0), p.d_k, w, S.get() + g * micro_rows * ld,
                         ld);
    });
    each_group([&](std::size_t g, const float* const*, const std::size_t* visible,
                   std::size_t w) {
        float alpha[micro_rows];  // 0: the state starts empty
        softmax_micro_rows(S.get() + g * micro_rows * ld, ld, w, visible, scale,
                           &row_max[g * micro_rows], &row_sum[g * micro_rows], alpha);
    });
    each_group([&](std::size_t g, const float* const*, const std::size_t*,
                   std::size_t w) {
        const float none[micro_rows] = {};  // α = 0: nothing accumulated before
        accumulate_micro_rows(S.get() + g * micro_rows * ld, ld, w, keys.v_panel(0), ld,
                              padded_d_v, none, acc.get() + g * micro_rows * padded_d_v,
                              padded_d_v);
    });
    for (std::size_t i = 0; i < p.n; ++i)
        for (std::size_t c = 0; c < p.d_v; ++c)
            p.O[i * p.ld_o + c] = acc.get()[i * padded_d_v + c] / row_sum[i];
}
}  // namespace emulated16
#undef ATTN_SIMD

// ⟨Ask the processor which kernel it can run⟩ 13-flash-attention.md:1203
/// True when the processor running the program has AVX2 and FMA.
inline bool has_avx2_fma()
{
#if ATTN_FLASH_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

/// True when the processor has AVX-512F (with AVX2 and FMA, which every such processor
/// has).
inline bool has_avx512()
{
#if ATTN_FLASH_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && has_avx2_fma();
#else
    return false;
#endif
}

/// The kernel that runs for `requested` on this processor (best: the fastest it has).
inline FlashKernel resolve_kernel(FlashKernel requested)
{
    switch (requested) {
    case FlashKernel::best:
    case FlashKernel::avx512:
        if (has_avx512()) return FlashKernel::avx512;
        [[fallthrough]];
    case FlashKernel::avx2:
        return has_avx2_fma() ? FlashKernel::avx2 : FlashKernel::portable;
    default:
        return requested;
    }
}

// ⟨Run the kernel chosen⟩ 13-flash-attention.md:1246
/// Run the fused (flash) or the three-pass kernel that `plan.kernel` resolves to.
template <class T>
void run_kernel(bool fused, const AttentionProblem<T>& p, const FlashOptions& plan)
{
    if constexpr (std::is_same_v<T, float>) {
        switch (resolve_kernel(plan.kernel)) {
#if ATTN_FLASH_X86
        case FlashKernel::avx512:
            return fused ? avx512::flash_vector(p, plan)
                         : avx512::unfused_vector(p, plan);
        case FlashKernel::avx2:
            return fused ? avx2::flash_vector(p, plan)
                         : avx2::unfused_vector(p, plan);
#endif
        case FlashKernel::emulated_avx512:
            return fused ? emulated16::flash_vector(p, plan)
                         : emulated16::unfused_vector(p, plan);
        case FlashKernel::emulated_avx2:
            return fused ? emulated8::flash_vector(p, plan)
                         : emulated8::unfused_vector(p, plan);
        default:
            break;
        }
    }
    if (fused)
        flash_portable(p, plan);
    else
        unfused_portable(p, plan);
}

// ⟨Check the inputs and run the kernel⟩ 13-flash-attention.md:1380
/// Shapes checked, tiles planned, then the fused or three-pass kernel; n = 0 gives
/// 0×d_v.
template <class T>
xt::xtensor<T, 2> attention_with_kernel(bool fused, const xt::xtensor<T, 2>& Q,
                                        const xt::xtensor<T, 2>& K,
                                        const xt::xtensor<T, 2>& V, bool causal,
                                        const FlashOptions& options)
{
    check_attention_shapes(Q, K, V);
    const std::size_t n = Q.shape(0), m = K.shape(0), d_k = Q.shape(1),
                      d_v = V.shape(1);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    const AttentionProblem<T> problem{Q.data(), K.data(), V.data(), O.data(),
                                      n,        m,        d_k,      d_v,
                                      d_k,      d_k,      d_v,      d_v,  // rows packed
                                      1.0 / std::sqrt(double(d_k)),       causal};
    check_problem(problem);
    if (n > 0) run_kernel(fused, problem, plan_flash(options, d_k, d_v));
    return O;
}

}  // namespace detail

// ⟨Name the kernel that runs⟩ 13-flash-attention.md:1280
/// @brief The kernel flash_attention<float> runs with `options` on this processor:
/// "AVX-512", "AVX2", "portable", or an emulated one's name.
inline std::string flash_kernel_name(const FlashOptions& options = {})
{
    switch (detail::resolve_kernel(options.kernel)) {
    case FlashKernel::avx512: return "AVX-512";
    case FlashKernel::avx2: return "AVX2";
    case FlashKernel::emulated_avx512: return "AVX-512 emulated in plain C++";
    case FlashKernel::emulated_avx2: return "AVX2 emulated in plain C++";
    default: return "portable";
    }
}

// ⟨Compute attention in tiles⟩ 13-flash-attention.md:1303
/// @brief Exact attention softmax(Q·Kᵀ/√d_k)·V in tiles with an online softmax
/// (FlashAttention), never storing an n×m matrix: O(n·d) memory.
/// @param Q queries, n×d_k
/// @param K keys, m×d_k
/// @param V values, m×d_v
/// @param causal when true, query i attends only keys j ≤ i (needs n == m); fully
/// masked
///        tiles are skipped
/// @param options tile sizes, threads and kernel (zeros: chosen from the machine)
/// @return outputs, n×d_v, equal to scaled_dot_product_attention up to rounding
template <class T>
xt::xtensor<T, 2> flash_attention(const xt::xtensor<T, 2>& Q,
                                  const xt::xtensor<T, 2>& K,
                                  const xt::xtensor<T, 2>& V, bool causal,
                                  const FlashOptions& options)
{
    return detail::attention_with_kernel(true, Q, K, V, causal, options);
}

/// @brief Exact attention in tiles, as scaled_dot_product_attention(Q, K, V) computes
/// it.
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> flash_attention(const xt::xtensor<T, 2>& Q,
                                  const xt::xtensor<T, 2>& K,
                                  const xt::xtensor<T, 2>& V)
{
    return flash_attention(Q, K, V, false, FlashOptions{});
}

/// @brief Exact attention in tiles; with `causal`, query i attends only keys j ≤ i (n
/// == m).
/// @param Q queries, n×d_k; @param K keys, n×d_k; @param V values, n×d_v
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> flash_attention(const xt::xtensor<T, 2>& Q,
                                  const xt::xtensor<T, 2>& K,
                                  const xt::xtensor<T, 2>& V, bool causal)
{
    return flash_attention(Q, K, V, causal, FlashOptions{});
}

/// @brief Exact attention in tiles on a problem given by pointers and strides (for
/// instance one head's columns of wider matrices): writes its n×d_v outputs.
/// @param problem pointers, sizes, strides, scale and mask, checked as the tensors are
/// @param options tile sizes, threads and kernel (zeros: chosen from the machine)
template <class T>
void flash_attention(const AttentionProblem<T>& problem,
                     const FlashOptions& options = {})
{
    detail::check_problem(problem);
    if (problem.n > 0)
        detail::run_kernel(true, problem,
                           detail::plan_flash(options, problem.d_k, problem.d_v));
}

/// @brief The three-pass baseline: the same micro-kernels as flash_attention, but the
/// n×m score matrix stored between the scores, the softmax and the weighted sum: O(n·m)
/// memory.
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
/// @param causal query i attends only keys j ≤ i (n == m); @param options threads,
/// kernel
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> unfused_attention(const xt::xtensor<T, 2>& Q,
                                    const xt::xtensor<T, 2>& K,
                                    const xt::xtensor<T, 2>& V, bool causal = false,
                                    const FlashOptions& options = {})
{
    return detail::attention_with_kernel(false, Q, K, V, causal, options);
}

}  // namespace attn
