// Chapter 8: Longformer attention — dilated two-sided window plus symmetric global tokens.
#define BOOST_TEST_MODULE ch08_longformer
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xview.hpp>

#include "attn/longformer.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/random.hpp"
#include "sparsity_support.hpp"
#include "test_support.hpp"

using test_support::check_close;
using test_support::Inputs;
using test_support::random_inputs;

namespace {

/// The pattern's definition, written independently: |i − j| ≤ w·δ and δ | i − j, or i or j global.
bool allowed_by_definition(std::size_t i, std::size_t j, std::size_t w, std::size_t dilation,
                           const std::vector<std::size_t>& global)
{
    const long long gap = (long long)i - (long long)j;
    const long long reach = (long long)(w * dilation);
    bool is_global = false;
    for (std::size_t g : global) is_global = is_global || g == i || g == j;
    return (-reach <= gap && gap <= reach && gap % (long long)dilation == 0) || is_global;
}

/// The independent reference: long-double loops over the mask (tests/test_support.hpp).
template <class T>
xt::xtensor<T, 2> dense_reference(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
                                  const attn::Mask& mask)
{
    return test_support::naive_attention(Q, K, V, [&](std::size_t i, std::size_t j) { return mask(i, j); });
}

struct Case {
    std::size_t n, w, dilation;
    std::vector<std::size_t> global;
};

/// Windows, dilations and global sets across lengths that are and are not multiples of the window or block.
std::vector<Case> cases()
{
    std::vector<Case> all;
    for (std::size_t n : {1, 2, 7, 33, 64, 100, 129})
        for (std::size_t w : {0, 1, 3, 8})
            for (std::size_t dilation : {1, 2, 3}) {
                all.push_back({n, w, dilation, {}});
                all.push_back({n, w, dilation, {0}});
                all.push_back({n, w, dilation, {n - 1, n / 2, n / 2, 0}});  // unsorted, with a repeat
            }
    all.push_back({300, 40, 2, {5, 150, 299}});  // several blocks of 40 queries per subsequence
    return all;
}

std::string describe(const Case& c)
{
    return "n=" + std::to_string(c.n) + " w=" + std::to_string(c.w) + " dilation=" + std::to_string(c.dilation) +
           " globals=" + std::to_string(c.global.size());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(pattern)

BOOST_AUTO_TEST_CASE(mask_matches_its_definition)
{
    for (const Case& c : cases()) {
        const auto mask = attn::longformer_mask(c.n, c.w, c.dilation, c.global);
        BOOST_REQUIRE(mask.shape(0) == c.n && mask.shape(1) == c.n);
        std::size_t wrong = 0;
        for (std::size_t i = 0; i < c.n; ++i)
            for (std::size_t j = 0; j < c.n; ++j)
                wrong += mask(i, j) != allowed_by_definition(i, j, c.w, c.dilation, c.global);
        BOOST_TEST(wrong == 0u, describe(c));
    }
}

BOOST_AUTO_TEST_CASE(the_mask_is_symmetric)
{
    for (const Case& c : cases()) {
        const auto mask = attn::longformer_mask(c.n, c.w, c.dilation, c.global);
        const xt::xtensor<bool, 2> mask_t = xt::transpose(mask);
        BOOST_TEST((mask == mask_t), describe(c));
    }
}

BOOST_AUTO_TEST_CASE(global_rows_and_columns_are_full)
{
    const std::size_t n = 50;
    const std::vector<std::size_t> global = {0, 17, 49};
    const auto mask = attn::longformer_mask(n, 2, 3, global);
    for (std::size_t g : global)
        for (std::size_t k = 0; k < n; ++k) {
            BOOST_TEST(mask(g, k), "global row " << g << " misses key " << k);
            BOOST_TEST(mask(k, g), "query " << k << " cannot see global column " << g);
        }
}

BOOST_AUTO_TEST_CASE(the_window_is_two_sided_with_w_keys_on_each_side)
{
    // Away from the ends and without global tokens, row i holds 2w + 1 keys: w left, w right.
    const std::size_t n = 64, w = 5, i = 30;
    for (std::size_t dilation : {1, 2, 4}) {
        const auto mask = attn::longformer_mask(n, w, dilation, {});
        std::size_t left = 0, right = 0;
        for (std::size_t j = 0; j < n; ++j) left += mask(i, j) && j < i, right += mask(i, j) && j > i;
        BOOST_TEST(left == w);
        BOOST_TEST(right == w);
        BOOST_TEST(mask(i, i - w * dilation));
        BOOST_TEST(!mask(i, i - w * dilation - dilation));
        if (dilation > 1) BOOST_TEST(!mask(i, i + 1));  // the gaps of the dilated window
    }
}

BOOST_AUTO_TEST_CASE(no_row_is_fully_masked)
{
    for (const Case& c : cases()) {
        const auto mask = attn::longformer_mask(c.n, c.w, c.dilation, c.global);
        for (std::size_t i = 0; i < c.n; ++i) BOOST_TEST(mask(i, i), describe(c) << " row " << i);
    }
}

BOOST_AUTO_TEST_CASE(bad_arguments_are_rejected_with_a_message)
{
    BOOST_CHECK_THROW(attn::longformer_mask(10, 2, 0, {}), std::invalid_argument);
    BOOST_CHECK_THROW(attn::longformer_mask(10, 2, 1, {10}), std::invalid_argument);
    const auto [Q, K, V] = random_inputs(10, 4, 3, 1);
    BOOST_CHECK_THROW(attn::longformer_attention(Q, K, V, 2, 0, {}), std::invalid_argument);
    BOOST_CHECK_THROW(attn::longformer_attention(Q, K, V, 2, 1, {12}), std::invalid_argument);
    const xt::xtensor<double, 2> K_short = xt::view(K, xt::range(0, 8), xt::all());
    const xt::xtensor<double, 2> V_short = xt::view(V, xt::range(0, 8), xt::all());
    BOOST_CHECK_THROW(attn::longformer_attention(Q, K_short, V_short, 2, 1, {}), std::invalid_argument);
    try {
        attn::longformer_mask(10, 2, 1, {10});
    } catch (const std::invalid_argument& error) {
        BOOST_TEST(std::string(error.what()).find("global position 10") != std::string::npos);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(kernel)

BOOST_AUTO_TEST_CASE(equals_the_dense_masked_reference_in_double)
{
    for (const Case& c : cases()) {
        const auto [Q, K, V] = random_inputs(c.n, 8, 5, 10 * c.n + c.w + 1000 * c.dilation);
        const auto mask = attn::longformer_mask(c.n, c.w, c.dilation, c.global);
        const auto O = attn::longformer_attention(Q, K, V, c.w, c.dilation, c.global);
        check_close(O, attn::scaled_dot_product_attention(Q, K, V, mask), 0, 1e-12, describe(c) + " vs chapter 2");
        check_close(O, dense_reference(Q, K, V, mask), 0, 1e-12, describe(c) + " vs long double loops");
    }
}

BOOST_AUTO_TEST_CASE(equals_the_dense_masked_reference_in_float)
{
    for (const Case& c : cases()) {
        const auto [Q, K, V] = random_inputs(c.n, 16, 8, 7 * c.n + c.w);
        const xt::xtensor<float, 2> Qf = Q, Kf = K, Vf = V;
        const auto mask = attn::longformer_mask(c.n, c.w, c.dilation, c.global);
        const auto O = attn::longformer_attention(Qf, Kf, Vf, c.w, c.dilation, c.global);
        check_close(O, attn::scaled_dot_product_attention(Qf, Kf, Vf, mask), 0, 1e-5, describe(c) + " vs chapter 2");
        check_close(O, dense_reference(Qf, Kf, Vf, mask), 0, 1e-5, describe(c) + " vs long double loops");
    }
}

BOOST_AUTO_TEST_CASE(a_global_token_inside_the_window_counts_once)
{
    // Token 21 is global and lies in the windows of tokens 18..24: listed twice, its weight would double.
    const auto [Q, K, V] = random_inputs(40, 4, 4, 3);
    const std::vector<std::size_t> global = {21};
    const auto mask = attn::longformer_mask(40, 3, 1, global);
    check_close(attn::longformer_attention(Q, K, V, 3, 1, global), dense_reference(Q, K, V, mask), 0, 1e-12,
                "global in window");
}

BOOST_AUTO_TEST_CASE(every_token_global_is_full_attention)
{
    const std::size_t n = 12;
    const auto [Q, K, V] = random_inputs(n, 4, 3, 4);
    std::vector<std::size_t> everyone(n);
    for (std::size_t i = 0; i < n; ++i) everyone[i] = i;
    check_close(attn::longformer_attention(Q, K, V, 1, 1, everyone),
                test_support::naive_attention(Q, K, V), 0, 1e-12, "all global");
}

BOOST_AUTO_TEST_CASE(a_window_as_wide_as_the_sequence_is_full_attention)
{
    const std::size_t n = 37;
    const auto [Q, K, V] = random_inputs(n, 6, 3, 5);
    check_close(attn::longformer_attention(Q, K, V, n, 1, {}), test_support::naive_attention(Q, K, V), 0, 1e-12,
                "w = n");
}

BOOST_AUTO_TEST_CASE(large_logits_stay_finite)
{
    auto [Q, K, V] = random_inputs(50, 4, 4, 6);
    Q *= 1e3;  // scores of order 1e6
    const std::vector<std::size_t> global = {0, 25};
    const auto O = attn::longformer_attention(Q, K, V, 3, 2, global);
    BOOST_TEST(test_support::all_finite(O));
    check_close(O, dense_reference(Q, K, V, attn::longformer_mask(50, 3, 2, global)), 0, 1e-9, "large logits");
}

BOOST_AUTO_TEST_CASE(output_has_shape_n_by_d_v)
{
    const auto [Q, K, V] = random_inputs(9, 4, 7, 7);
    const auto O = attn::longformer_attention(Q, K, V, 2, 1, {0});
    BOOST_TEST(O.shape(0) == 9u);
    BOOST_TEST(O.shape(1) == 7u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(work)

std::size_t allowed_pairs(const attn::Mask& mask)
{
    return std::size_t(std::count(mask.begin(), mask.end(), true));
}

BOOST_AUTO_TEST_CASE(the_kernel_scores_every_allowed_pair_and_a_bounded_few_more)
{
    // Each block of b = max(w, 32) queries scores its span of at most b + 2w keys and the
    // g globals; each global row scores all n keys. A kernel that formed Q·Kᵀ would count n².
    for (const Case& c : cases()) {
        const auto [Q, K, V] = random_inputs(c.n, 4, 3, 20 * c.n + c.w);
        const std::size_t g = c.global.size(), b = std::max<std::size_t>(c.w, 32);
        attn::KeyVisits visits;
        attn::longformer_attention(Q, K, V, c.w, c.dilation, c.global, &visits);
        const std::size_t allowed = allowed_pairs(attn::longformer_mask(c.n, c.w, c.dilation, c.global));
        BOOST_TEST(visits.scores >= allowed, describe(c));
        BOOST_TEST(visits.scores <= c.n * (b + 2 * c.w + 2 * g), describe(c));
    }
}

BOOST_AUTO_TEST_CASE(the_kernel_visits_order_n_keys_not_n_squared)
{
    const std::size_t n = 2048, w = 64;
    const auto [Q, K, V] = random_inputs(n, 4, 3, 21);
    for (std::size_t dilation : {1, 3}) {
        const std::vector<std::size_t> global = {0, 1000};
        attn::KeyVisits visits;
        attn::longformer_attention(Q, K, V, w, dilation, global, &visits);
        const std::size_t allowed = allowed_pairs(attn::longformer_mask(n, w, dilation, global));
        BOOST_TEST(visits.scores >= allowed);
        BOOST_TEST(visits.scores <= 2 * allowed, "dilation " << dilation);  // b = w: about 1.5
        BOOST_TEST(visits.scores * 8 < n * n, "dilation " << dilation);
    }
}

BOOST_AUTO_TEST_CASE(the_kernel_never_holds_an_n_by_n_matrix)
{
    test_support::check_never_holds_an_n_by_n_matrix(
        [](const auto& Q, const auto& K, const auto& V) {
            return attn::longformer_attention(Q, K, V, 64, 1, std::vector<std::size_t>{0});
        },
        22);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(global_projections)

BOOST_AUTO_TEST_CASE(global_rows_use_the_global_projections_and_window_rows_do_not)
{
    const std::size_t n = 45, w = 4, dilation = 2;
    const std::vector<std::size_t> global = {0, 30};
    const auto [Q, K, V] = random_inputs(n, 6, 5, 8);
    const auto [Q_g, K_g, V_g] = random_inputs(n, 6, 5, 9);
    const auto O = attn::longformer_attention_global_projections(Q, K, V, Q_g, K_g, V_g, w, dilation, global);
    const auto O_same = attn::longformer_attention(Q, K, V, w, dilation, global);
    const auto O_global = test_support::naive_attention(Q_g, K_g, V_g);  // full attention with the global set
    for (std::size_t i = 0; i < n; ++i) {
        const bool is_global = i == 0 || i == 30;
        const xt::xtensor<double, 1> row = xt::row(O, i);
        const xt::xtensor<double, 1> expected = is_global ? xt::xtensor<double, 1>(xt::row(O_global, i))
                                                          : xt::xtensor<double, 1>(xt::row(O_same, i));
        check_close(row, expected, 0, 1e-12, "row " + std::to_string(i));
    }
}

BOOST_AUTO_TEST_CASE(different_shapes_of_the_global_projections_are_rejected)
{
    const auto [Q, K, V] = random_inputs(10, 4, 3, 10);
    const auto [Q_g, K_g, V_g] = random_inputs(10, 4, 2, 11);  // d_v = 2, not 3
    BOOST_CHECK_THROW(attn::longformer_attention_global_projections(Q, K, V, Q_g, K_g, V_g, 2, 1, {0}),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

using test_support::contract_violation;
using test_support::Poison;
using test_support::throws_invalid_argument;

/// The pattern's definition without a product that could overflow: δ | gap, gap/δ ≤ w.
bool allows(std::size_t i, std::size_t j, std::size_t w, std::size_t dilation,
            const std::vector<bool>& is_global)
{
    const std::size_t gap = i > j ? i - j : j - i;
    return (gap % dilation == 0 && gap / dilation <= w) || is_global[i] || is_global[j];
}

BOOST_AUTO_TEST_CASE(shapes_self_attention_only)
{
    const auto [Q0, K0, V0] = random_inputs(0, 4, 3, 90);  // n = m = 0: no keys
    BOOST_CHECK_THROW(attn::longformer_attention(Q0, K0, V0, 2, 1, {}), std::invalid_argument);
    const auto [Q, K, V] = random_inputs(5, 6, 4, 3, 91);  // 5 queries, 6 keys
    BOOST_CHECK_THROW(attn::longformer_attention(Q, K, V, 2, 1, {}), std::invalid_argument);
    const auto [Qe, Ke, Ve] = random_inputs(5, 4, 0, 92);  // d_v = 0
    BOOST_TEST(attn::longformer_attention(Qe, Ke, Ve, 2, 1, {0}).shape(1) == 0u);
}

BOOST_AUTO_TEST_CASE(a_huge_window_or_dilation_is_clamped)
{
    // w = SIZE_MAX made the key span's end t1 + w wrap; dilation = SIZE_MAX the step i + δ.
    const std::size_t huge = std::numeric_limits<std::size_t>::max();
    const auto [Q, K, V] = random_inputs(40, 4, 3, 93);
    check_close(attn::longformer_attention(Q, K, V, huge, 1, {3}),
                test_support::naive_attention(Q, K, V), 1e-9, 1e-11, "w = max: dense");
    const std::vector<bool> global_3 = [] { std::vector<bool> g(40); g[3] = true; return g; }();
    check_close(attn::longformer_attention(Q, K, V, 2, huge, {3}),
                test_support::naive_attention(Q, K, V, [&](std::size_t i, std::size_t j) {
                    return i == j || global_3[i] || global_3[j];
                }),
                1e-9, 1e-11, "dilation = max: the token itself and the global one");
    BOOST_CHECK_THROW(attn::longformer_attention(Q, K, V, 2, 0, {}), std::invalid_argument);
    BOOST_CHECK_THROW(attn::longformer_attention(Q, K, V, 2, 1, {40}), std::invalid_argument);
    BOOST_CHECK_THROW(attn::longformer_attention(Q, K, V, 2, 1, {huge}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(fuzz_the_kernel_against_the_masked_reference)
{
    const std::size_t cases = test_support::fuzz_cases(300, 808, [](std::mt19937_64& rng,
                                                                     std::size_t k) {
        const std::size_t n = test_support::draw_size(rng, 40);
        const std::size_t d_k = test_support::draw_size(rng, 40);
        const std::size_t d_v = rng() % 8 == 0 ? 0 : test_support::draw_size(rng, 40);
        const std::size_t w = test_support::draw_option(rng, n);
        const std::size_t dilation = test_support::draw_option(rng, n);
        std::vector<std::size_t> global;  // a few positions, repeats and, rarely, past the end
        for (std::size_t g = rng() % 4; g > 0; --g)
            global.push_back(rng() % 16 == 0 ? test_support::draw_option(rng, n) : rng() % n);
        const Inputs clean = random_inputs(n, d_k, d_v, rng());
        Inputs x = clean;
        const Poison p = test_support::draw_poison(rng, x);
        const auto at = [&] {
            std::string text = "case " + std::to_string(k) + ": n = " + std::to_string(n) +
                               ", d_k = " + std::to_string(d_k) + ", d_v = " +
                               std::to_string(d_v) + ", w = " + std::to_string(w) +
                               ", dilation = " + std::to_string(dilation) + ", global";
            for (std::size_t g : global) text += " " + std::to_string(g);
            return text + ", poison " + (p.operand ? p.operand : '-');
        };
        const auto kernel = [&] {
            return attn::longformer_attention(x.Q, x.K, x.V, w, dilation, global);
        };
        const bool bad = dilation == 0 || std::any_of(global.begin(), global.end(),
                                                      [&](std::size_t g) { return g >= n; });
        if (bad) {
            BOOST_CHECK_MESSAGE(throws_invalid_argument(kernel), at());
            return;
        }
        std::vector<bool> is_global(n, false);
        for (std::size_t g : global) is_global[g] = true;
        const auto allowed = [&](std::size_t i, std::size_t j) {
            return allows(i, j, w, dilation, is_global);
        };
        // A window block multiplies all its values by its weights, zero or not: a
        // poisoned value may reach more rows of its column than those that see it.
        const std::string wrong = contract_violation(kernel(), clean, p, allowed, true);
        if (!wrong.empty()) BOOST_ERROR(at() << ": " << wrong);
    });
    BOOST_TEST_MESSAGE(cases << " cases");
}

BOOST_AUTO_TEST_CASE(the_cost_figures_name_their_axes_and_slopes)
{
    const auto dir = test_support::run_chapter_program("ch08_longformer");
    test_support::check_cost_figure(dir / "out" / "cost_time.svg", "seconds (fastest round)");
    test_support::check_cost_figure(dir / "out" / "cost_memory.svg", "peak MiB one call adds");
    BOOST_TEST(test_support::svg_says(dir / "out" / "pattern.svg", "masked"));
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
