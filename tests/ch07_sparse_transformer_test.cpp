// Chapter 7: the Sparse Transformer's strided and fixed patterns and their kernels.
#define BOOST_TEST_MODULE ch07_sparse_transformer
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xview.hpp>

#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/random.hpp"
#include "attn/sliding_window.hpp"
#include "attn/sparse_transformer.hpp"
#include "test_support.hpp"

using test_support::as_type;
using test_support::check_close;
using test_support::naive_attention;
using test_support::Inputs;
using test_support::random_inputs;

namespace {

// The patterns' definitions, written out again from the paper, independently of the library.
bool strided_rule(std::size_t i, std::size_t j, std::size_t l) { return j <= i && (i - j < l || (i - j) % l == 0); }
bool fixed_rule(std::size_t i, std::size_t j, std::size_t l, std::size_t c)
{
    return j <= i && (j / l == i / l || j % l >= l - c);
}

struct Case {
    std::size_t n, stride, c;
};

/// n below, at and above the stride, multiples and non-multiples of it, c from 1 to ℓ.
const std::vector<Case> cases = {{1, 1, 1},  {1, 4, 2},   {5, 1, 1},  {7, 3, 1},   {16, 4, 2},
                                 {33, 8, 3}, {100, 7, 7}, {257, 16, 4}, {300, 17, 5}, {20, 64, 8}};

std::string name(const Case& k)
{
    return "n=" + std::to_string(k.n) + " l=" + std::to_string(k.stride) + " c=" + std::to_string(k.c);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(sparse_transformer)

BOOST_AUTO_TEST_CASE(masks_follow_the_papers_definitions)
{
    for (const Case& k : cases) {
        const attn::Mask strided = attn::strided_mask(k.n, k.stride), fixed = attn::fixed_mask(k.n, k.stride, k.c);
        BOOST_REQUIRE(strided.shape(0) == k.n && strided.shape(1) == k.n);
        for (std::size_t i = 0; i < k.n; ++i)
            for (std::size_t j = 0; j < k.n; ++j) {
                BOOST_TEST(strided(i, j) == strided_rule(i, j, k.stride), name(k) << " strided (" << i << "," << j << ")");
                BOOST_TEST(fixed(i, j) == fixed_rule(i, j, k.stride, k.c), name(k) << " fixed (" << i << "," << j << ")");
            }
    }
}

BOOST_AUTO_TEST_CASE(masks_are_causal_and_every_row_keeps_its_own_token)
{
    for (const Case& k : cases)
        for (const attn::Mask& mask : {attn::strided_mask(k.n, k.stride), attn::fixed_mask(k.n, k.stride, k.c)})
            for (std::size_t i = 0; i < k.n; ++i) {
                BOOST_TEST(mask(i, i));  // so no row is ever fully masked
                for (std::size_t j = i + 1; j < k.n; ++j) BOOST_TEST(!mask(i, j));
            }
}

BOOST_AUTO_TEST_CASE(the_two_heads_together_are_the_pattern)
{
    for (const Case& k : cases) {
        const auto strided = attn::strided_head_masks(k.n, k.stride);
        const auto fixed = attn::fixed_head_masks(k.n, k.stride, k.c);
        BOOST_TEST(attn::Mask(strided[0] || strided[1]) == attn::strided_mask(k.n, k.stride), name(k));
        BOOST_TEST(attn::Mask(fixed[0] || fixed[1]) == attn::fixed_mask(k.n, k.stride, k.c), name(k));
    }
}

BOOST_AUTO_TEST_CASE(rows_attend_order_sqrt_n_keys)
{
    // With ℓ = √n, a strided row has at most ℓ + n/ℓ = 2√n keys, a fixed row at most ℓ + c·n/ℓ.
    const std::size_t n = 1024, l = 32, c = 4;
    const attn::Mask strided = attn::strided_mask(n, l), fixed = attn::fixed_mask(n, l, c);
    for (std::size_t i = 0; i < n; ++i) {
        BOOST_TEST(xt::sum(xt::row(strided, i))() <= double(l + n / l));
        BOOST_TEST(xt::sum(xt::row(fixed, i))() <= double(l + c * (n / l)));
    }
}

BOOST_AUTO_TEST_CASE(every_earlier_position_is_reached_in_two_steps)
{
    for (const Case& k : cases) {
        const attn::Mask causal = attn::causal_mask(k.n);
        const attn::Mask strided = attn::strided_mask(k.n, k.stride), fixed = attn::fixed_mask(k.n, k.stride, k.c);
        BOOST_TEST(attn::compose_masks(strided, strided) == causal, name(k) << " strided");
        BOOST_TEST(attn::compose_masks(fixed, fixed) == causal, name(k) << " fixed");
    }
}

BOOST_AUTO_TEST_CASE(each_head_alone_does_not_reach_everything_but_the_two_in_turn_do)
{
    const std::size_t n = 64, l = 8, c = 2;
    const attn::Mask causal = attn::causal_mask(n);
    const auto strided = attn::strided_head_masks(n, l);
    BOOST_TEST(!(attn::compose_masks(strided[0], strided[0]) == causal));
    BOOST_TEST(!(attn::compose_masks(strided[1], strided[1]) == causal));
    BOOST_TEST(attn::compose_masks(strided[0], strided[1]) == causal);  // local, then strided
    const auto fixed = attn::fixed_head_masks(n, l, c);
    BOOST_TEST(!(attn::compose_masks(fixed[0], fixed[0]) == causal));
    // summaries, then own block, reaches every earlier block; the own block is attended directly
    BOOST_TEST(attn::Mask(attn::compose_masks(fixed[1], fixed[0]) || fixed[0]) == causal);
}

BOOST_AUTO_TEST_CASE(column_stripes_are_not_a_factorised_pattern)
{
    // The notebooks' "sparse" mask: every second column. Odd positions are never reached.
    const std::size_t n = 16;
    const attn::Mask stripes = attn::mask_where(n, [](std::size_t i, std::size_t j) { return j <= i && j % 2 == 0; });
    attn::Mask reach = stripes;
    for (int step = 0; step < 8; ++step) reach = attn::compose_masks(reach, stripes);
    BOOST_TEST(!reach(15, 1));
}

BOOST_AUTO_TEST_CASE(bad_strides_are_rejected)
{
    const auto [Q, K, V] = random_inputs(6, 3, 2, 1);
    BOOST_CHECK_THROW(attn::strided_mask(6, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::fixed_mask(6, 4, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::fixed_mask(6, 4, 5), std::invalid_argument);
    BOOST_CHECK_THROW(attn::strided_attention(Q, K, V, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::fixed_attention(Q, K, V, 4, 0), std::invalid_argument);
    const xt::xtensor<double, 2> K7 = xt::zeros<double>({7, 3}), V7 = xt::zeros<double>({7, 2});
    BOOST_CHECK_THROW(attn::strided_attention(Q, K7, V7, 2), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(double_kernels_equal_dense_masked_attention)
{
    for (const Case& k : cases) {
        const auto [Q, K, V] = random_inputs(k.n, 16, 8, 10 + k.n);
        check_close(attn::strided_attention(Q, K, V, k.stride),
                    attn::scaled_dot_product_attention(Q, K, V, attn::strided_mask(k.n, k.stride)), 0, 1e-12,
                    "strided vs dense, " + name(k));
        check_close(attn::fixed_attention(Q, K, V, k.stride, k.c),
                    attn::scaled_dot_product_attention(Q, K, V, attn::fixed_mask(k.n, k.stride, k.c)), 0, 1e-12,
                    "fixed vs dense, " + name(k));
        const auto l = k.stride, c = k.c;
        check_close(attn::strided_attention(Q, K, V, l),
                    naive_attention(Q, K, V, [l](std::size_t i, std::size_t j) { return strided_rule(i, j, l); }), 0,
                    1e-12, "strided vs naive, " + name(k));
        check_close(attn::fixed_attention(Q, K, V, l, c),
                    naive_attention(Q, K, V, [l, c](std::size_t i, std::size_t j) { return fixed_rule(i, j, l, c); }),
                    0, 1e-12, "fixed vs naive, " + name(k));
    }
}

BOOST_AUTO_TEST_CASE(float_kernels_equal_dense_masked_attention)
{
    for (const Case& k : cases) {
        const auto [Q, K, V] = random_inputs(k.n, 32, 16, 20 + k.n);
        const auto Q_f = as_type<float>(Q), K_f = as_type<float>(K), V_f = as_type<float>(V);
        check_close(attn::strided_attention(Q_f, K_f, V_f, k.stride),
                    attn::scaled_dot_product_attention(Q_f, K_f, V_f, attn::strided_mask(k.n, k.stride)), 0, 1e-5,
                    "float strided vs dense, " + name(k));
        check_close(attn::fixed_attention(Q_f, K_f, V_f, k.stride, k.c),
                    attn::scaled_dot_product_attention(Q_f, K_f, V_f, attn::fixed_mask(k.n, k.stride, k.c)), 0, 1e-5,
                    "float fixed vs dense, " + name(k));
    }
}

BOOST_AUTO_TEST_CASE(reference_loops_equal_the_independent_naive_loops)
{
    for (const Case& k : cases) {
        const auto [Q, K, V] = random_inputs(k.n, 8, 5, 30 + k.n);
        const auto l = k.stride, c = k.c;
        const auto strided = [l](std::size_t i, std::size_t j) { return strided_rule(i, j, l); };
        const auto fixed = [l, c](std::size_t i, std::size_t j) { return fixed_rule(i, j, l, c); };
        check_close(attn::pattern_attention_by_rows(Q, K, V, strided), naive_attention(Q, K, V, strided), 0, 1e-12,
                    "strided reference, " + name(k));
        check_close(attn::pattern_attention_by_rows(Q, K, V, fixed), naive_attention(Q, K, V, fixed), 0, 1e-12,
                    "fixed reference, " + name(k));
    }
}

BOOST_AUTO_TEST_CASE(a_row_with_nothing_allowed_is_zero_in_the_reference)
{
    const auto [Q, K, V] = random_inputs(5, 4, 3, 2);
    const auto O = attn::pattern_attention_by_rows(Q, K, V, [](std::size_t i, std::size_t j) { return i != 2 && j <= i; });
    for (std::size_t c = 0; c < 3; ++c) BOOST_TEST(O(2, c) == 0.0);
    BOOST_TEST(test_support::all_finite(O));
}

BOOST_AUTO_TEST_CASE(stride_one_and_full_blocks_are_causal_attention)
{
    // ℓ = 1: every earlier position is a multiple of 1 back. ℓ ≥ n: one block, the whole prefix.
    const auto [Q, K, V] = random_inputs(23, 8, 4, 3);
    const auto causal = attn::scaled_dot_product_attention(Q, K, V, attn::causal_mask(23));
    check_close(attn::strided_attention(Q, K, V, 1), causal, 0, 1e-12, "strided, l = 1");
    check_close(attn::strided_attention(Q, K, V, 23), causal, 0, 1e-12, "strided, l = n");
    check_close(attn::fixed_attention(Q, K, V, 32, 1), causal, 0, 1e-12, "fixed, l > n");
    check_close(attn::fixed_attention(Q, K, V, 4, 4), causal, 0, 1e-12, "fixed, c = l");
}

BOOST_AUTO_TEST_CASE(large_logits_stay_finite)
{
    auto [Q, K, V] = random_inputs(50, 8, 4, 4);
    Q *= 1e4;
    const auto strided = attn::strided_attention(as_type<float>(Q), as_type<float>(K), as_type<float>(V), 7);
    const auto fixed = attn::fixed_attention(as_type<float>(Q), as_type<float>(K), as_type<float>(V), 7, 2);
    BOOST_TEST(test_support::all_finite(strided));
    BOOST_TEST(test_support::all_finite(fixed));
    check_close(attn::strided_attention(Q, K, V, 7),
                naive_attention(Q, K, V, [](std::size_t i, std::size_t j) { return strided_rule(i, j, 7); }), 0, 1e-9,
                "strided, large logits");
}

BOOST_AUTO_TEST_CASE(future_tokens_do_not_change_the_past)
{
    auto [Q, K, V] = random_inputs(40, 8, 4, 5);
    const auto strided = attn::strided_attention(Q, K, V, 6);
    const auto fixed = attn::fixed_attention(Q, K, V, 6, 2);
    xt::view(K, xt::range(25, 40), xt::all()) *= -2.0;
    xt::view(V, xt::range(25, 40), xt::all()) += 3.0;
    const auto strided_after = attn::strided_attention(Q, K, V, 6);
    const auto fixed_after = attn::fixed_attention(Q, K, V, 6, 2);
    for (std::size_t i = 0; i < 25; ++i)
        for (std::size_t c = 0; c < 4; ++c) {
            BOOST_TEST(strided_after(i, c) == strided(i, c));
            BOOST_TEST(fixed_after(i, c) == fixed(i, c));
        }
}

std::size_t allowed_pairs(const attn::Mask& mask)
{
    return std::size_t(std::count(mask.begin(), mask.end(), true));
}

BOOST_AUTO_TEST_CASE(the_kernels_score_exactly_the_allowed_pairs)
{
    // A kernel that built Q·Kᵀ and masked it would give the same outputs but count n² scores.
    for (const Case& k : cases) {
        const auto [Q, K, V] = random_inputs(k.n, 8, 4, 40 + k.n);
        attn::KeyVisits strided, fixed;
        attn::strided_attention(Q, K, V, k.stride, &strided);
        attn::fixed_attention(Q, K, V, k.stride, k.c, &fixed);
        BOOST_TEST(strided.scores == allowed_pairs(attn::strided_mask(k.n, k.stride)), name(k));
        BOOST_TEST(fixed.scores == allowed_pairs(attn::fixed_mask(k.n, k.stride, k.c)), name(k));
    }
}

BOOST_AUTO_TEST_CASE(the_kernels_visit_order_n_sqrt_n_keys_not_n_squared)
{
    const std::size_t n = 2048, l = 45, c = 8, block = 128;  // ℓ ≈ √n, √(c·n)
    const auto [Q, K, V] = random_inputs(n, 8, 4, 41);
    attn::KeyVisits strided, fixed;
    attn::strided_attention(Q, K, V, l, &strided);
    attn::fixed_attention(Q, K, V, block, c, &fixed);
    BOOST_TEST(strided.scores == allowed_pairs(attn::strided_mask(n, l)));
    BOOST_TEST(fixed.scores == allowed_pairs(attn::fixed_mask(n, block, c)));
    const double n_sqrt_n = double(n) * std::sqrt(double(n));
    BOOST_TEST(double(strided.scores) <= 1.5 * n_sqrt_n);  // nℓ + n²/(2ℓ) at ℓ = √n
    BOOST_TEST(strided.scores * 20 < n * n);
    BOOST_TEST(fixed.scores * 10 < n * n);
}

BOOST_AUTO_TEST_CASE(the_kernels_never_hold_an_n_by_n_matrix)
{
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer keeps freed blocks in quarantine, so the peak would count every
    // allocation of the call, not what it holds at once.
    BOOST_TEST_MESSAGE("peak memory not checked under AddressSanitizer");
    return;
#endif
    // One n×n float matrix is 4n² bytes (64 MiB at n = 4096).
    const std::size_t n = 4096;
    const auto [Q, K, V] = random_inputs(n, 16, 16, 42);
    const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
    const std::size_t strided = attn::largest_peak_memory_bytes(
        [&] { return attn::strided_attention(Q_f, K_f, V_f, 64); });
    const std::size_t fixed = attn::largest_peak_memory_bytes(
        [&] { return attn::fixed_attention(Q_f, K_f, V_f, 181, 8); });
    BOOST_TEST(strided < 4 * n * n / 16, "strided peak " << strided << " bytes");
    BOOST_TEST(fixed < 4 * n * n / 16, "fixed peak " << fixed << " bytes");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

using test_support::contract_violation;
using test_support::Poison;
using test_support::throws_invalid_argument;

/// The strided pattern, from its definition: j ≤ i and (i − j < ℓ or ℓ divides i − j).
bool strided_allows(std::size_t i, std::size_t j, std::size_t stride)
{
    return j <= i && (i - j < stride || (i - j) % stride == 0);
}

/// The fixed pattern, from its definition: j ≤ i and (same block or j mod ℓ ≥ ℓ − c).
bool fixed_allows(std::size_t i, std::size_t j, std::size_t stride, std::size_t c)
{
    return j <= i && (j / stride == i / stride || j % stride >= stride - c);
}

BOOST_AUTO_TEST_CASE(shapes_self_attention_only)
{
    const auto [Q0, K0, V0] = random_inputs(0, 4, 3, 80);  // n = m = 0: no keys
    BOOST_CHECK_THROW(attn::strided_attention(Q0, K0, V0, 2), std::invalid_argument);
    BOOST_CHECK_THROW(attn::fixed_attention(Q0, K0, V0, 2, 1), std::invalid_argument);
    const auto [Q, K, V] = random_inputs(5, 6, 4, 3, 81);  // 5 queries, 6 keys
    BOOST_CHECK_THROW(attn::strided_attention(Q, K, V, 2), std::invalid_argument);
    BOOST_CHECK_THROW(attn::fixed_attention(Q, K, V, 2, 1), std::invalid_argument);
    const auto [Qe, Ke, Ve] = random_inputs(5, 4, 0, 82);  // d_v = 0
    BOOST_TEST(attn::strided_attention(Qe, Ke, Ve, 2).shape(1) == 0u);
    BOOST_TEST(attn::fixed_attention(Qe, Ke, Ve, 2, 1).shape(0) == 5u);
}

BOOST_AUTO_TEST_CASE(a_huge_stride_is_clamped)
{
    // ℓ = SIZE_MAX made the regrouping's ℓ + 1 group starts wrap to 0 (UB under UBSan).
    const std::size_t huge = std::numeric_limits<std::size_t>::max();
    const auto [Q, K, V] = random_inputs(9, 4, 3, 83);
    const auto causal = naive_attention(Q, K, V, [](std::size_t i, std::size_t j) {
        return j <= i;
    });
    for (const std::size_t stride : {huge, huge / 2, std::size_t(9), std::size_t(10)})
        check_close(attn::strided_attention(Q, K, V, stride), causal, 1e-9, 1e-11,
                    "strided, ℓ = " + std::to_string(stride));
    check_close(attn::fixed_attention(Q, K, V, huge, huge), causal, 1e-9, 1e-11, "fixed");
    BOOST_CHECK_THROW(attn::fixed_attention(Q, K, V, 3, 4), std::invalid_argument);  // c > ℓ
    BOOST_CHECK_THROW(attn::fixed_attention(Q, K, V, 3, 0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(fuzz_every_kernel_against_the_masked_reference)
{
    const std::size_t cases = test_support::fuzz_cases(300, 707, [](std::mt19937_64& rng,
                                                                     std::size_t k) {
        const std::size_t n = test_support::draw_size(rng, 40);
        const std::size_t d_k = test_support::draw_size(rng, 40);
        const std::size_t d_v = rng() % 8 == 0 ? 0 : test_support::draw_size(rng, 40);
        const std::size_t stride = test_support::draw_option(rng, n);
        const std::size_t c = rng() % 2 ? test_support::draw_option(rng, n)
                                        : 1 + rng() % std::max<std::size_t>(stride, 1);
        const Inputs clean = random_inputs(n, d_k, d_v, rng());
        Inputs x = clean;
        const Poison p = test_support::draw_poison(rng, x);
        const auto at = [&] {
            return "case " + std::to_string(k) + ": n = " + std::to_string(n) + ", d_k = " +
                   std::to_string(d_k) + ", d_v = " + std::to_string(d_v) + ", ℓ = " +
                   std::to_string(stride) + ", c = " + std::to_string(c) + ", poison " +
                   (p.operand ? p.operand : '-');
        };
        const auto strided = [&] { return attn::strided_attention(x.Q, x.K, x.V, stride); };
        const auto fixed = [&] { return attn::fixed_attention(x.Q, x.K, x.V, stride, c); };
        const auto check = [&](const xt::xtensor<double, 2>& O, auto allowed, const char* who) {
            const std::string wrong = contract_violation(O, clean, p, allowed);
            if (!wrong.empty()) BOOST_ERROR(at() << ", " << who << ": " << wrong);
        };
        if (stride == 0) {
            BOOST_CHECK_MESSAGE(throws_invalid_argument(strided), at());
        } else {
            const auto allowed = [&](std::size_t i, std::size_t j) {
                return strided_allows(i, j, stride);
            };
            check(strided(), allowed, "strided");
            check(attn::pattern_attention_by_rows(x.Q, x.K, x.V, allowed), allowed, "by rows");
        }
        if (stride == 0 || c == 0 || c > stride) {
            BOOST_CHECK_MESSAGE(throws_invalid_argument(fixed), at());
        } else {
            check(fixed(), [&](std::size_t i, std::size_t j) {
                return fixed_allows(i, j, stride, c);
            }, "fixed");
        }
    });
    BOOST_TEST_MESSAGE(cases << " cases");
}

BOOST_AUTO_TEST_CASE(the_pattern_figure_is_one_grid_with_a_key_of_heads)
{
    using test_support::svg_says;
    const auto dir = test_support::run_chapter_program("ch07_sparse_transformer");
    const auto out = dir / "out";
    test_support::check_panels(out / "patterns.tsv", {"strided, ℓ = 4", "fixed, ℓ = 8, c = 2",
                                                      "strided, ℓ = 8, query 45", "fixed, ℓ = 8, c = 2, query 45"});
    for (const char* text : {"head 1", "head 2", "both heads", "the query", "not attended", "strided, ℓ = 4",
                             "position mod ℓ", "position div ℓ", "key", "query"})
        BOOST_TEST(svg_says(out / "patterns.svg", text), "patterns.svg lacks " << text);
    BOOST_TEST(!svg_says(out / "patterns.svg", "attention weight"));  // a key, no colour bar
    for (const char* text : {"1 step", "2 steps", "j > i"})
        BOOST_TEST(svg_says(out / "reach_steps.svg", text), "reach_steps.svg lacks " << text);
    test_support::check_cost_figure(out / "cost_time.svg", "seconds (fastest round)");
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
