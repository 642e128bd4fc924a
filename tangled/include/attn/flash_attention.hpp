// Generated from chapters/13-flash-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 13: exact attention in tiles with an online softmax (FlashAttention on the CPU).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include <unistd.h>
#include <xtensor/xtensor.hpp>

#include "attn/self_attention.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#define ATTN_FLASH_AVX2 1
/// Compile one function for AVX2 and FMA, whatever -march says; call it only after has_avx2_fma().
#define ATTN_AVX2 __attribute__((target("avx2,fma")))
#else
#define ATTN_FLASH_AVX2 0
#endif

namespace attn {

// ⟨Keep the online softmax's state⟩ 13-flash-attention.md:124
/// @brief The online softmax's running state for n query rows after some of the keys (kept in double).
struct SoftmaxState {
    xt::xtensor<double, 1> max;  ///< n: m_i, the largest score seen so far (−∞ before any key)
    xt::xtensor<double, 1> sum;  ///< n: ℓ_i = Σ_j exp(s_ij − m_i) over the keys seen
    xt::xtensor<double, 2> acc;  ///< n×d_v: o_i = Σ_j exp(s_ij − m_i)·v_j over the keys seen (not yet divided by ℓ_i)
};

/// @brief The state before any key: m = −∞, ℓ = 0, o = 0.
/// @param n query rows; @param d_v width of a value
/// @return an empty state for n rows
inline SoftmaxState empty_softmax_state(std::size_t n, std::size_t d_v)
{
    SoftmaxState state{xt::zeros<double>({n}), xt::zeros<double>({n}), xt::zeros<double>({n, d_v})};
    state.max.fill(-std::numeric_limits<double>::infinity());
    return state;
}

// ⟨Feed keys to the state one at a time⟩ 13-flash-attention.md:148
/// @brief Feed the keys [begin, end) to `state`, one key at a time (the reference online softmax).
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
template <class T>
void absorb_keys(SoftmaxState& state, const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                 const xt::xtensor<T, 2>& V, std::size_t begin, std::size_t end)
{
    check_attention_shapes(Q, K, V);
    const std::size_t n = Q.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    const double scale = 1.0 / std::sqrt(double(d_k));
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = begin; j < end; ++j) {
            double s = 0;
            for (std::size_t c = 0; c < d_k; ++c) s += double(Q(i, c)) * double(K(j, c));
            s *= scale;
            const double new_max = std::max(state.max(i), s);
            const double alpha = std::exp(state.max(i) - new_max);  // e^{−∞} = 0 for the first key
            const double p = std::exp(s - new_max);                  // ≤ 1: never overflows
            state.sum(i) = alpha * state.sum(i) + p;
            for (std::size_t c = 0; c < d_v; ++c) state.acc(i, c) = alpha * state.acc(i, c) + p * double(V(j, c));
            state.max(i) = new_max;
        }
}

// ⟨Merge two states⟩ 13-flash-attention.md:177
/// @brief Combine the states of two disjoint sets of keys into the state of their union.
/// @param a, b states of the same n rows and width d_v
/// @return the state as if every key of both had been fed to one state
inline SoftmaxState merge_softmax_states(const SoftmaxState& a, const SoftmaxState& b)
{
    if (a.acc.shape() != b.acc.shape()) throw std::invalid_argument("merge_softmax_states: shapes differ");
    SoftmaxState merged = a;
    for (std::size_t i = 0; i < a.max.size(); ++i) {
        const double new_max = std::max(a.max(i), b.max(i));
        if (new_max == -std::numeric_limits<double>::infinity()) continue;  // no key on either side
        const double alpha = std::exp(a.max(i) - new_max), beta = std::exp(b.max(i) - new_max);
        merged.max(i) = new_max;
        merged.sum(i) = alpha * a.sum(i) + beta * b.sum(i);
        for (std::size_t c = 0; c < a.acc.shape(1); ++c)
            merged.acc(i, c) = alpha * a.acc(i, c) + beta * b.acc(i, c);
    }
    return merged;
}

/// @brief The attention output of a state: o_i / ℓ_i, and a zero row where no key was seen.
/// @return outputs, n×d_v
inline xt::xtensor<double, 2> finish_softmax_state(const SoftmaxState& state)
{
    xt::xtensor<double, 2> O = xt::zeros<double>(state.acc.shape());  // n×d_v
    for (std::size_t i = 0; i < O.shape(0); ++i)
        if (state.sum(i) > 0)
            for (std::size_t c = 0; c < O.shape(1); ++c) O(i, c) = state.acc(i, c) / state.sum(i);
    return O;
}

// ⟨Choose the tiles and threads⟩ 13-flash-attention.md:223
/// @brief Tile sizes and threads of flash_attention; a 0 means "choose from the machine".
struct FlashOptions {
    std::size_t query_tile = 0;  ///< B_r, query rows per tile
    std::size_t key_tile = 0;    ///< B_c, keys per tile
    unsigned threads = 0;        ///< worker threads (0: one per core)
    bool vectorised = true;      ///< use the AVX2 kernel for float when the processor has it
};

namespace detail {

// ⟨Share tiles among threads⟩ 13-flash-attention.md:239
/// Run body(t) for every t in [0, count) on `threads` threads; each takes the next t when it is free.
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

// ⟨Count the key tiles that are not fully masked⟩ 13-flash-attention.md:294
/// Key tiles that query rows [i0, i1) must visit: all, or in causal attention only those starting
/// at or before the last row i1 − 1 (every later tile is masked for every row).
inline std::size_t key_tiles_to_visit(std::size_t m, std::size_t i1, std::size_t key_tile, bool causal)
{
    return ceil_div(causal ? std::min(m, i1) : m, key_tile);
}

// ⟨Size the tiles for the caches⟩ 13-flash-attention.md:359
/// Fill the zeros in `options` from the machine: a key tile's keys and values take a quarter of L2.
inline FlashOptions plan_flash(FlashOptions options, std::size_t d_k, std::size_t d_v)
{
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    const std::size_t l2_bytes = reported > 0 ? std::size_t(reported) : 512 * 1024;
    const std::size_t bytes_per_key = (d_k + d_v) * sizeof(float);
    if (options.key_tile == 0)
        options.key_tile = std::clamp<std::size_t>(l2_bytes / 4 / bytes_per_key / 16 * 16, 16, 1024);
    if (options.query_tile == 0) options.query_tile = 96;
    if (options.threads == 0) options.threads = std::max(1u, std::thread::hardware_concurrency());
    return options;
}

// ⟨Attend with one query tile, in plain loops⟩ 13-flash-attention.md:263
/// The portable kernel for query rows [i0, i1): key tiles in order, one online-softmax update per row and tile.
template <class T>
void attend_query_tile_portable(const T* Q, const T* K, const T* V, T* O, std::size_t i0, std::size_t i1,
                                std::size_t m, std::size_t d_k, std::size_t d_v, bool causal,
                                std::size_t key_tile)
{
    const T scale = T(1) / std::sqrt(T(d_k));
    const std::size_t rows = i1 - i0;
    std::vector<T> row_max(rows, -std::numeric_limits<T>::infinity()), row_sum(rows, T(0));  // B_r each
    std::vector<T> acc(rows * d_v, T(0)), s(key_tile);  // B_r×d_v, B_c
    const std::size_t tiles = key_tiles_to_visit(m, i1, key_tile, causal);
    for (std::size_t t = 0; t < tiles; ++t) {
        const std::size_t j0 = t * key_tile, j1 = std::min(m, j0 + key_tile);
        for (std::size_t i = i0; i < i1; ++i) {
            const std::size_t j_end = causal ? std::min(j1, i + 1) : j1;  // causal: keys j ≤ i only
            if (j_end <= j0) continue;                                      // row i sees none of this tile
            // ⟨Score row i against the key tile⟩ 13-flash-attention.md:303
            T tile_max = -std::numeric_limits<T>::infinity();
            for (std::size_t j = j0; j < j_end; ++j) {
                T dot = 0;
                for (std::size_t c = 0; c < d_k; ++c) dot += Q[i * d_k + c] * K[j * d_k + c];
                s[j - j0] = dot * scale;
                tile_max = std::max(tile_max, s[j - j0]);
            }
            // ⟨Update row i's state with the tile⟩ 13-flash-attention.md:313
            const std::size_t r = i - i0;
            const T new_max = std::max(row_max[r], tile_max);
            const T alpha = std::exp(row_max[r] - new_max);  // 0 on the row's first tile (m = −∞)
            T* o = &acc[r * d_v];
            for (std::size_t c = 0; c < d_v; ++c) o[c] *= alpha;
            T p_sum = 0;
            for (std::size_t j = j0; j < j_end; ++j) {
                const T p = std::exp(s[j - j0] - new_max);
                p_sum += p;
                for (std::size_t c = 0; c < d_v; ++c) o[c] += p * V[j * d_v + c];
            }
            row_sum[r] = alpha * row_sum[r] + p_sum;
            row_max[r] = new_max;
        }
    }
    for (std::size_t i = i0; i < i1; ++i)
        for (std::size_t c = 0; c < d_v; ++c) O[i * d_v + c] = acc[(i - i0) * d_v + c] / row_sum[i - i0];
}

// ⟨Run the portable kernel on every query tile⟩ 13-flash-attention.md:333
/// The portable kernel over all query tiles, shared among the threads.
template <class T>
void flash_portable(const T* Q, const T* K, const T* V, T* O, std::size_t n, std::size_t m, std::size_t d_k,
                    std::size_t d_v, bool causal, const FlashOptions& plan)
{
    parallel_for(ceil_div(n, plan.query_tile), plan.threads, [&](std::size_t tile) {
        const std::size_t i0 = tile * plan.query_tile, i1 = std::min(n, i0 + plan.query_tile);
        attend_query_tile_portable(Q, K, V, O, i0, i1, m, d_k, d_v, causal, plan.key_tile);
    });
}

#if ATTN_FLASH_AVX2
constexpr std::size_t micro_rows = 6, micro_cols = 16;  // the register block: 6 rows × 16 columns

// ⟨Allocate aligned buffers⟩ 13-flash-attention.md:435
/// Floats on 64-byte boundaries (a cache line), zero-filled.
struct AlignedFloats {
    explicit AlignedFloats(std::size_t count)
        : data(static_cast<float*>(std::aligned_alloc(64, round_up(std::max<std::size_t>(count, 1) * 4, 64))))
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

// ⟨Pack the keys and values into panels⟩ 13-flash-attention.md:403
/// Keys and values of every key tile, in the order the vector kernel reads them.
struct KeyPanels {
    std::size_t tile, tile16, d_k, d_v16;  ///< B_c, B_c rounded up to 16, d_k, d_v rounded up to 16
    AlignedFloats k, v;                     ///< per tile: d_k×16 blocks of Kᵀ; B_c16×16 blocks of V
    const float* k_panel(std::size_t t) const { return k.get() + t * tile16 * d_k; }
    const float* v_panel(std::size_t t) const { return v.get() + t * tile16 * d_v16; }
};

/// Copy K (m×d_k) and V (m×d_v) into panels of `tile` keys, zero-padded.
inline KeyPanels pack_keys(const float* K, const float* V, std::size_t m, std::size_t d_k, std::size_t d_v,
                           std::size_t tile)
{
    const std::size_t tiles = ceil_div(m, tile), tile16 = round_up(tile, micro_cols);
    const std::size_t d_v16 = round_up(d_v, micro_cols);
    KeyPanels panels{tile, tile16, d_k, d_v16, AlignedFloats(tiles * tile16 * d_k),
                     AlignedFloats(tiles * tile16 * d_v16)};
    for (std::size_t j = 0; j < m; ++j) {
        const std::size_t t = j / tile, r = j % tile;  // key j is row r of tile t
        float* k = panels.k.get() + t * tile16 * d_k + (r / micro_cols) * d_k * micro_cols + r % micro_cols;
        for (std::size_t c = 0; c < d_k; ++c) k[c * micro_cols] = K[j * d_k + c];
        float* v = panels.v.get() + t * tile16 * d_v16 + r * micro_cols;
        for (std::size_t c = 0; c < d_v; ++c)
            v[(c / micro_cols) * tile16 * micro_cols + c % micro_cols] = V[j * d_v + c];
    }
    return panels;
}

// ⟨Compute 2^x for eight floats⟩ 13-flash-attention.md:522
/// 2^x for eight floats: relative error below 3e-7 on [−126, 128); 0 for x ≤ −127 (and for −∞).
ATTN_AVX2 inline __m256 exp2_avx2(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(128.0f));
    const __m256 k = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(x, k);  // in [−½, ½], exact
    __m256 p = _mm256_set1_ps(0.0013266970386347395f);  // 2^f ≈ 1 + f(c1 + f(c2 + f(c3 + f(c4 + f c5))))
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.009675459745517728f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.055507426160024714f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.24022121753561682f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.6931469491610633f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));  // k + 127: 0 … 255
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23)));             // p · 2^k
}

/// @brief y = 2^x for `count` floats with the kernel's vector exponential (for tests and measurements).
/// Call only when detail::has_avx2_fma() is true.
ATTN_AVX2 inline void exp2_array(const float* x, float* y, std::size_t count)
{
    std::size_t i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(y + i, exp2_avx2(_mm256_loadu_ps(x + i)));
    if (i < count) {
        float in[8] = {}, out[8];
        std::copy(x + i, x + count, in);
        _mm256_storeu_ps(out, exp2_avx2(_mm256_loadu_ps(in)));
        std::copy(out, out + (count - i), y + i);
    }
}

// ⟨Reduce the eight lanes of a register⟩ 13-flash-attention.md:599
ATTN_AVX2 inline float horizontal_max(__m256 x)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

ATTN_AVX2 inline float horizontal_sum(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// ⟨Score six query rows against the key tile⟩ 13-flash-attention.md:466
/// S[r][j] = q_r · k_j for six query rows and the first `cols` keys of a panel (cols a multiple of 16).
ATTN_AVX2 inline void score_micro_rows(const float* const q[micro_rows], const float* k_panel, std::size_t d_k,
                                       std::size_t cols, float* s, std::size_t ld_s)
{
    for (std::size_t j = 0; j < cols; j += micro_cols) {
        const float* k = k_panel + j * d_k;  // d_k×16 block of Kᵀ
        __m256 acc[micro_rows][2];            // the 6×16 block of scores, in 12 registers
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        for (std::size_t c = 0; c < d_k; ++c) {
            const __m256 k0 = _mm256_load_ps(k + c * micro_cols), k1 = _mm256_load_ps(k + c * micro_cols + 8);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const __m256 q_rc = _mm256_broadcast_ss(q[r] + c);
                acc[r][0] = _mm256_fmadd_ps(q_rc, k0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(q_rc, k1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            _mm256_store_ps(s + r * ld_s + j, acc[r][0]);
            _mm256_store_ps(s + r * ld_s + j + 8, acc[r][1]);
        }
    }
}

// ⟨Update six rows' state with the tile⟩ 13-flash-attention.md:565
/// Online-softmax update of six rows: mask, new maximum, P = 2^(S·scale − m') in place, sums; α per row.
ATTN_AVX2 inline void softmax_micro_rows(float* s, std::size_t ld_s, std::size_t cols,
                                         const std::size_t visible[micro_rows], float scale, float* row_max,
                                         float* row_sum, float alpha[micro_rows])
{
    const float minus_inf = -std::numeric_limits<float>::infinity();
    for (std::size_t r = 0; r < micro_rows; ++r) {
        float* s_r = s + r * ld_s;
        std::fill(s_r + visible[r], s_r + cols, minus_inf);  // masked and padding keys
        __m256 largest = _mm256_set1_ps(minus_inf);
        for (std::size_t j = 0; j < cols; j += 8) largest = _mm256_max_ps(largest, _mm256_load_ps(s_r + j));
        const float new_max = std::max(row_max[r], horizontal_max(largest) * scale);
        if (new_max == minus_inf) {  // nothing seen yet: keep the state empty
            std::fill(s_r, s_r + cols, 0.0f);
            alpha[r] = 1;
            continue;
        }
        alpha[r] = std::exp2(row_max[r] - new_max);  // 0 on the row's first tile
        const __m256 scale8 = _mm256_set1_ps(scale), minus_max = _mm256_set1_ps(-new_max);
        __m256 total = _mm256_setzero_ps();
        for (std::size_t j = 0; j < cols; j += 8) {
            const __m256 p = exp2_avx2(_mm256_fmadd_ps(_mm256_load_ps(s_r + j), scale8, minus_max));
            _mm256_store_ps(s_r + j, p);
            total = _mm256_add_ps(total, p);
        }
        row_sum[r] = alpha[r] * row_sum[r] + horizontal_sum(total);
        row_max[r] = new_max;
    }
}

// ⟨Add six rows' weighted values⟩ 13-flash-attention.md:623
/// o[r] = α_r·o[r] + Σ_j P[r][j]·v_j for six rows, over the first `cols` keys of a value panel.
ATTN_AVX2 inline void accumulate_micro_rows(const float* p, std::size_t ld_p, std::size_t cols,
                                            const float* v_panel, std::size_t tile16, std::size_t d_v16,
                                            const float alpha[micro_rows], float* o, std::size_t ld_o)
{
    for (std::size_t cb = 0; cb < d_v16; cb += micro_cols) {
        const float* v = v_panel + cb * tile16;  // B_c16×16 block of V
        __m256 acc[micro_rows][2];               // six rows × 16 output columns
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            const __m256 a = _mm256_set1_ps(alpha[r]);
            acc[r][0] = _mm256_mul_ps(a, _mm256_load_ps(o + r * ld_o + cb));
            acc[r][1] = _mm256_mul_ps(a, _mm256_load_ps(o + r * ld_o + cb + 8));
        }
        for (std::size_t j = 0; j < cols; ++j) {
            const __m256 v0 = _mm256_load_ps(v + j * micro_cols), v1 = _mm256_load_ps(v + j * micro_cols + 8);
#pragma GCC unroll 6
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const __m256 p_rj = _mm256_broadcast_ss(p + r * ld_p + j);
                acc[r][0] = _mm256_fmadd_ps(p_rj, v0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(p_rj, v1, acc[r][1]);
            }
        }
#pragma GCC unroll 6
        for (std::size_t r = 0; r < micro_rows; ++r) {
            _mm256_store_ps(o + r * ld_o + cb, acc[r][0]);
            _mm256_store_ps(o + r * ld_o + cb + 8, acc[r][1]);
        }
    }
}

// ⟨Attend with one query tile, six rows at a time⟩ 13-flash-attention.md:667
/// The vector kernel for query rows [i0, i1) of Q (n×d_k), writing rows [i0, i1) of O (n×d_v).
ATTN_AVX2 inline void attend_query_tile_avx2(const float* Q, const KeyPanels& keys, float* O, std::size_t i0,
                                             std::size_t i1, std::size_t m, std::size_t d_v, bool causal)
{
    const std::size_t d_k = keys.d_k, d_v16 = keys.d_v16, tile16 = keys.tile16;
    const std::size_t groups = ceil_div(i1 - i0, micro_rows), rows = groups * micro_rows;
    const float scale = float(1.4426950408889634 / std::sqrt(double(d_k)));  // log2(e)/√d_k
    AlignedFloats s(micro_rows * tile16), acc(rows * d_v16);                 // 6×B_c16 scores, B_r×d_v16 outputs
    std::vector<float> row_max(rows, -std::numeric_limits<float>::infinity()), row_sum(rows, 0.0f);
    const std::size_t tiles = key_tiles_to_visit(m, i1, keys.tile, causal);
    for (std::size_t t = 0; t < tiles; ++t) {
        const std::size_t j0 = t * keys.tile, cols = std::min(keys.tile, m - j0);
        for (std::size_t g = 0; g < groups; ++g) {
            // ⟨Point at the group's six rows and what they see⟩ 13-flash-attention.md:697
            const float* q[micro_rows];  // the six query rows
            std::size_t visible[micro_rows], widest = 0;
            for (std::size_t r = 0; r < micro_rows; ++r) {
                const std::size_t i = std::min(i0 + g * micro_rows + r, i1 - 1);  // past the tile: repeat its last row
                q[r] = Q + i * d_k;
                visible[r] = causal ? std::min(cols, i + 1 > j0 ? i + 1 - j0 : 0) : cols;  // keys j0 … min(i, end)
                widest = std::max(widest, visible[r]);
            }
            if (widest == 0) continue;  // the whole group is above the diagonal
            const std::size_t cols16 = round_up(widest, micro_cols);
            float alpha[micro_rows];
            score_micro_rows(q, keys.k_panel(t), d_k, cols16, s.get(), tile16);
            softmax_micro_rows(s.get(), tile16, cols16, visible, scale, &row_max[g * micro_rows],
                               &row_sum[g * micro_rows], alpha);
            accumulate_micro_rows(s.get(), tile16, cols16, keys.v_panel(t), tile16, d_v16, alpha,
                                  acc.get() + g * micro_rows * d_v16, d_v16);
        }
    }
    for (std::size_t i = i0; i < i1; ++i)
        for (std::size_t c = 0; c < d_v; ++c) O[i * d_v + c] = acc.get()[(i - i0) * d_v16 + c] / row_sum[i - i0];
}

// ⟨Run the vector kernel on every query tile⟩ 13-flash-attention.md:713
/// The vector kernel over all query tiles, shared among the threads.
inline void flash_avx2(const float* Q, const float* K, const float* V, float* O, std::size_t n, std::size_t m,
                       std::size_t d_k, std::size_t d_v, bool causal, const FlashOptions& plan)
{
    const KeyPanels keys = pack_keys(K, V, m, d_k, d_v, plan.key_tile);
    const std::size_t tiles = ceil_div(n, plan.query_tile);
    parallel_for(tiles, plan.threads, [&](std::size_t task) {
        const std::size_t tile = causal ? tiles - 1 - task : task;  // causal: the longest tiles first
        const std::size_t i0 = tile * plan.query_tile;
        attend_query_tile_avx2(Q, keys, O, i0, std::min(n, i0 + plan.query_tile), m, d_v, causal);
    });
}

/// True when the processor running the program has AVX2 and FMA.
inline bool has_avx2_fma()
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
inline bool has_avx2_fma() { return false; }
#endif

}  // namespace detail

// ⟨Compute attention in tiles⟩ 13-flash-attention.md:741
/// @brief Exact attention softmax(Q·Kᵀ/√d_k)·V in tiles with an online softmax (FlashAttention),
/// never storing an n×m matrix: O(n·d) memory.
/// @param Q queries, n×d_k
/// @param K keys, m×d_k
/// @param V values, m×d_v
/// @param causal when true, query i attends only keys j ≤ i (needs n == m); fully masked tiles are skipped
/// @param options tile sizes, threads, and whether to use the vector kernel (zeros: chosen from the machine)
/// @return outputs, n×d_v, equal to scaled_dot_product_attention up to rounding
template <class T>
xt::xtensor<T, 2> flash_attention(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                                  const xt::xtensor<T, 2>& V, bool causal, const FlashOptions& options)
{
    check_attention_shapes(Q, K, V);
    const std::size_t n = Q.shape(0), m = K.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    if (causal && n != m)
        throw std::invalid_argument("flash_attention: causal attention needs as many queries as keys");
    const FlashOptions plan = detail::plan_flash(options, d_k, d_v);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});  // n×d_v
    if (n == 0) return O;
#if ATTN_FLASH_AVX2
    if constexpr (std::is_same_v<T, float>)
        if (plan.vectorised && detail::has_avx2_fma()) {
            detail::flash_avx2(Q.data(), K.data(), V.data(), O.data(), n, m, d_k, d_v, causal, plan);
            return O;
        }
#endif
    detail::flash_portable(Q.data(), K.data(), V.data(), O.data(), n, m, d_k, d_v, causal, plan);
    return O;
}

/// @brief Exact attention in tiles, as scaled_dot_product_attention(Q, K, V) computes it.
/// @param Q queries, n×d_k; @param K keys, m×d_k; @param V values, m×d_v
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> flash_attention(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                                  const xt::xtensor<T, 2>& V)
{
    return flash_attention(Q, K, V, false, FlashOptions{});
}

/// @brief Exact attention in tiles; with `causal`, query i attends only keys j ≤ i (n == m).
/// @param Q queries, n×d_k; @param K keys, n×d_k; @param V values, n×d_v
/// @return outputs, n×d_v
template <class T>
xt::xtensor<T, 2> flash_attention(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                                  const xt::xtensor<T, 2>& V, bool causal)
{
    return flash_attention(Q, K, V, causal, FlashOptions{});
}

}  // namespace attn
