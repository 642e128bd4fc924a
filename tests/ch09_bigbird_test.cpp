// Chapter 9: BigBird attention — blocks of window, global and random attention.
#define BOOST_TEST_MODULE ch09_bigbird
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xview.hpp>

#include "attn/bigbird.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/random.hpp"
#include "sparsity_support.hpp"
#include "test_support.hpp"

using test_support::check_close;
using test_support::Inputs;
using test_support::random_inputs;

namespace {

/// The independent reference: long-double loops over the mask (tests/test_support.hpp).
template <class T>
xt::xtensor<T, 2> dense_reference(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V,
                                  const attn::Mask& mask)
{
    return test_support::naive_attention(Q, K, V, [&](std::size_t i, std::size_t j) { return mask(i, j); });
}

struct Case {
    std::size_t n;
    attn::BigBirdPattern pattern;
};

/// Block sizes, random-block counts and lengths, including a single block, two blocks, odd block
/// sizes and more random blocks than there are blocks to draw from.
std::vector<Case> cases()
{
    std::vector<Case> all;
    for (std::size_t block : {1, 2, 3, 4, 8})
        for (std::size_t blocks : {1, 2, 3, 5, 7, 12})
            for (std::size_t r : {0, 1, 3, 20}) all.push_back({block * blocks, {block, r, 100 * block + blocks + r}});
    all.push_back({21, {3, 2, 7}});
    all.push_back({320, {16, 3, 11}});
    return all;
}

std::string describe(const Case& c)
{
    return "n=" + std::to_string(c.n) + " block=" + std::to_string(c.pattern.block) +
           " r=" + std::to_string(c.pattern.random_blocks) + " seed=" + std::to_string(c.pattern.seed);
}

/// Block (q, k) of the mask, checked to be all true or all false.
bool tile(const xt::xtensor<bool, 2>& mask, std::size_t b, std::size_t q, std::size_t k)
{
    const bool first = mask(q * b, k * b);
    for (std::size_t i = q * b; i < (q + 1) * b; ++i)
        for (std::size_t j = k * b; j < (k + 1) * b; ++j) BOOST_REQUIRE(mask(i, j) == first);
    return first;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(pattern)

BOOST_AUTO_TEST_CASE(each_query_block_sees_window_globals_and_r_random_blocks)
{
    for (const Case& c : cases()) {
        const std::size_t b = c.pattern.block, n_blocks = c.n / b, last = n_blocks - 1;
        const auto mask = attn::bigbird_mask(c.n, c.pattern);
        for (std::size_t q = 0; q < n_blocks; ++q) {
            std::set<std::size_t> seen;
            for (std::size_t k = 0; k < n_blocks; ++k)
                if (tile(mask, b, q, k)) seen.insert(k);
            if (q == 0 || q == last) {
                BOOST_TEST(seen.size() == n_blocks, describe(c) << " global block " << q);
                continue;
            }
            const std::set<std::size_t> fixed = {0, q - 1, q, q + 1, last};
            for (std::size_t k : fixed) BOOST_TEST(seen.count(k) == 1u, describe(c) << " block " << q << " misses " << k);
            const std::size_t available = n_blocks - fixed.size();
            BOOST_TEST(seen.size() - fixed.size() == std::min(c.pattern.random_blocks, available),
                       describe(c) << " block " << q);
        }
    }
}

BOOST_AUTO_TEST_CASE(global_rows_and_columns_are_full_and_symmetric)
{
    for (const Case& c : cases()) {
        const auto mask = attn::bigbird_mask(c.n, c.pattern);
        const std::size_t b = c.pattern.block;
        for (std::size_t g = 0; g < c.n; ++g) {
            if (g >= b && g < c.n - b) continue;  // first and last blocks only
            for (std::size_t k = 0; k < c.n; ++k) {
                BOOST_TEST(mask(g, k), describe(c) << " global row " << g << " misses key " << k);
                BOOST_TEST(mask(k, g), describe(c) << " query " << k << " cannot see global column " << g);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(the_random_blocks_are_reproducible_from_the_seed)
{
    const attn::BigBirdPattern a{4, 2, 42}, same{4, 2, 42}, other{4, 2, 43};
    BOOST_TEST((attn::bigbird_mask(64, a) == attn::bigbird_mask(64, same)));
    BOOST_TEST((attn::bigbird_key_blocks(16, a) == attn::bigbird_key_blocks(16, same)));
    BOOST_TEST(!(attn::bigbird_mask(64, a) == attn::bigbird_mask(64, other)));
}

BOOST_AUTO_TEST_CASE(the_random_blocks_follow_the_documented_draw)
{
    // The chapter documents the draw: one mt19937_64 seeded with the seed, query blocks in order,
    // each taking the first r steps of a Fisher–Yates shuffle of the blocks it does not attend yet,
    // with rng() % remaining. Redo it here and compare, so any compiler gives the same pattern.
    const std::size_t n_blocks = 12;
    const attn::BigBirdPattern pattern{1, 3, 2024};
    const auto key_blocks = attn::bigbird_key_blocks(n_blocks, pattern);
    std::mt19937_64 rng(pattern.seed);
    for (std::size_t q = 1; q + 1 < n_blocks; ++q) {
        std::vector<std::size_t> others;
        for (std::size_t k = 0; k < n_blocks; ++k)
            if (k != 0 && k != n_blocks - 1 && (k + 1 < q || k > q + 1)) others.push_back(k);
        std::set<std::size_t> expected = {0, q - 1, q, q + 1, n_blocks - 1};
        for (std::size_t d = 0; d < pattern.random_blocks; ++d) {
            std::swap(others[d], others[d + rng() % (others.size() - d)]);
            expected.insert(others[d]);
        }
        const std::set<std::size_t> actual(key_blocks[q].begin(), key_blocks[q].end());
        BOOST_TEST((actual == expected), "query block " << q);
        BOOST_TEST(std::is_sorted(key_blocks[q].begin(), key_blocks[q].end()));
    }
}

BOOST_AUTO_TEST_CASE(no_row_is_fully_masked)
{
    for (const Case& c : cases()) {
        const auto mask = attn::bigbird_mask(c.n, c.pattern);
        for (std::size_t i = 0; i < c.n; ++i) BOOST_TEST(mask(i, i), describe(c) << " row " << i);
    }
}

BOOST_AUTO_TEST_CASE(n_not_a_multiple_of_the_block_is_an_error)
{
    const attn::BigBirdPattern pattern{8, 2, 1};
    BOOST_CHECK_THROW(attn::bigbird_mask(100, pattern), std::invalid_argument);
    const auto [Q, K, V] = random_inputs(100, 4, 4, 1);
    BOOST_CHECK_THROW(attn::bigbird_attention(Q, K, V, pattern), std::invalid_argument);
    try {
        attn::bigbird_attention(Q, K, V, pattern);
        BOOST_ERROR("no exception");
    } catch (const std::invalid_argument& error) {
        const std::string message = error.what();
        BOOST_TEST(message.find("not a multiple of the block size 8") != std::string::npos, message);
        BOOST_TEST(message.find("104") != std::string::npos, message);
    }
    BOOST_CHECK_THROW(attn::bigbird_mask(16, {0, 1, 1}), std::invalid_argument);
    BOOST_CHECK_THROW(attn::bigbird_mask(0, {4, 1, 1}), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(kernel)

BOOST_AUTO_TEST_CASE(equals_the_dense_masked_reference_in_double)
{
    for (const Case& c : cases()) {
        const auto [Q, K, V] = random_inputs(c.n, 8, 5, c.pattern.seed);
        const auto mask = attn::bigbird_mask(c.n, c.pattern);
        const auto O = attn::bigbird_attention(Q, K, V, c.pattern);
        check_close(O, attn::scaled_dot_product_attention(Q, K, V, mask), 0, 1e-12, describe(c) + " vs chapter 2");
        check_close(O, dense_reference(Q, K, V, mask), 0, 1e-12, describe(c) + " vs long double loops");
    }
}

BOOST_AUTO_TEST_CASE(equals_the_dense_masked_reference_in_float)
{
    for (const Case& c : cases()) {
        const auto [Q, K, V] = random_inputs(c.n, 16, 8, c.pattern.seed + 1);
        const xt::xtensor<float, 2> Qf = Q, Kf = K, Vf = V;
        const auto mask = attn::bigbird_mask(c.n, c.pattern);
        const auto O = attn::bigbird_attention(Qf, Kf, Vf, c.pattern);
        check_close(O, attn::scaled_dot_product_attention(Qf, Kf, Vf, mask), 0, 1e-5, describe(c) + " vs chapter 2");
        check_close(O, dense_reference(Qf, Kf, Vf, mask), 0, 1e-5, describe(c) + " vs long double loops");
    }
}

BOOST_AUTO_TEST_CASE(up_to_four_blocks_is_full_attention)
{
    // With n_blocks ≤ 4 the window and the two global blocks already cover every block.
    for (std::size_t blocks : {1, 2, 3, 4}) {
        const auto [Q, K, V] = random_inputs(4 * blocks, 6, 3, blocks);
        check_close(attn::bigbird_attention(Q, K, V, {4, 0, 1}), test_support::naive_attention(Q, K, V), 0, 1e-12,
                    "blocks=" + std::to_string(blocks));
    }
}

BOOST_AUTO_TEST_CASE(large_logits_stay_finite)
{
    auto [Q, K, V] = random_inputs(48, 4, 4, 6);
    Q *= 1e3;  // scores of order 1e6
    const attn::BigBirdPattern pattern{4, 2, 5};
    const auto O = attn::bigbird_attention(Q, K, V, pattern);
    BOOST_TEST(test_support::all_finite(O));
    check_close(O, dense_reference(Q, K, V, attn::bigbird_mask(48, pattern)), 0, 1e-9, "large logits");
}

BOOST_AUTO_TEST_CASE(output_has_shape_n_by_d_v)
{
    const auto [Q, K, V] = random_inputs(24, 4, 7, 7);
    const auto O = attn::bigbird_attention(Q, K, V, {4, 1, 3});
    BOOST_TEST(O.shape(0) == 24u);
    BOOST_TEST(O.shape(1) == 7u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(work)

BOOST_AUTO_TEST_CASE(the_kernel_scores_exactly_the_allowed_pairs)
{
    // Whole tiles, nothing hidden inside them: one score per allowed pair. A kernel that
    // formed Q·Kᵀ and masked it would count n².
    for (const Case& c : cases()) {
        const auto [Q, K, V] = random_inputs(c.n, 4, 3, c.pattern.seed + 2);
        const auto mask = attn::bigbird_mask(c.n, c.pattern);
        attn::KeyVisits visits;
        attn::bigbird_attention(Q, K, V, c.pattern, &visits);
        BOOST_TEST(visits.scores == std::size_t(std::count(mask.begin(), mask.end(), true)),
                   describe(c));
    }
}

BOOST_AUTO_TEST_CASE(the_kernel_visits_order_n_keys_not_n_squared)
{
    // n = 2048 in blocks of 16: 124 blocks see 3 window + 2 global + 3 random blocks, the
    // two next to a global block 7 (their window holds one), the 2 global blocks all 128.
    const std::size_t n = 2048, b = 16, n_blocks = n / b;
    const auto [Q, K, V] = random_inputs(n, 4, 3, 23);
    attn::KeyVisits visits;
    attn::bigbird_attention(Q, K, V, {b, 3, 5}, &visits);
    BOOST_TEST(visits.scores == ((n_blocks - 4) * 8 + 2 * 7 + 2 * n_blocks) * b * b);
    BOOST_TEST(visits.scores * 10 < n * n);
}

BOOST_AUTO_TEST_CASE(the_kernel_never_holds_an_n_by_n_matrix)
{
    test_support::check_never_holds_an_n_by_n_matrix(
        [](const auto& Q, const auto& K, const auto& V) {
            return attn::bigbird_attention(Q, K, V, attn::BigBirdPattern{64, 3, 1});
        },
        24);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

using test_support::contract_violation;
using test_support::Poison;
using test_support::throws_invalid_argument;

BOOST_AUTO_TEST_CASE(shapes_self_attention_only)
{
    const attn::BigBirdPattern pattern{2, 1, 7};
    const auto [Q0, K0, V0] = random_inputs(0, 4, 3, 100);  // n = m = 0: no keys
    BOOST_CHECK_THROW(attn::bigbird_attention(Q0, K0, V0, pattern), std::invalid_argument);
    const auto [Q, K, V] = random_inputs(6, 8, 4, 3, 101);  // 6 queries, 8 keys
    BOOST_CHECK_THROW(attn::bigbird_attention(Q, K, V, pattern), std::invalid_argument);
    const auto [Qe, Ke, Ve] = random_inputs(6, 4, 0, 102);  // d_v = 0
    BOOST_TEST(attn::bigbird_attention(Qe, Ke, Ve, pattern).shape(1) == 0u);
}

BOOST_AUTO_TEST_CASE(huge_options_throw_or_are_clamped)
{
    const std::size_t huge = std::numeric_limits<std::size_t>::max();
    const auto [Q, K, V] = random_inputs(12, 4, 3, 103);
    for (const std::size_t block : {std::size_t(0), std::size_t(5), std::size_t(13), huge})
        BOOST_CHECK_THROW(attn::bigbird_attention(Q, K, V, {block, 1, 7}), std::invalid_argument);
    // r beyond the blocks left to draw: every block, dense attention
    check_close(attn::bigbird_attention(Q, K, V, {2, huge, 7}),
                test_support::naive_attention(Q, K, V), 1e-9, 1e-11, "r = max");
}

BOOST_AUTO_TEST_CASE(fuzz_the_kernel_against_the_masked_reference)
{
    const std::size_t cases = test_support::fuzz_cases(300, 909, [](std::mt19937_64& rng,
                                                                     std::size_t k) {
        const std::size_t n = test_support::draw_size(rng, 40);
        const std::size_t d_k = test_support::draw_size(rng, 40);
        const std::size_t d_v = rng() % 8 == 0 ? 0 : test_support::draw_size(rng, 40);
        std::vector<std::size_t> divisors;
        for (std::size_t b = 1; b <= n; ++b)
            if (n % b == 0) divisors.push_back(b);
        const std::size_t block = rng() % 2 ? divisors[rng() % divisors.size()]
                                            : test_support::draw_option(rng, n);
        const attn::BigBirdPattern pattern{block, test_support::draw_option(rng, n), rng()};
        const Inputs clean = random_inputs(n, d_k, d_v, rng());
        Inputs x = clean;
        const Poison p = test_support::draw_poison(rng, x);
        const auto at = [&] {
            return "case " + std::to_string(k) + ": n = " + std::to_string(n) + ", d_k = " +
                   std::to_string(d_k) + ", d_v = " + std::to_string(d_v) + ", b = " +
                   std::to_string(block) + ", r = " + std::to_string(pattern.random_blocks) +
                   ", poison " + (p.operand ? p.operand : '-');
        };
        const auto kernel = [&] { return attn::bigbird_attention(x.Q, x.K, x.V, pattern); };
        if (block == 0 || n % block != 0) {
            BOOST_CHECK_MESSAGE(throws_invalid_argument(kernel), at());
            BOOST_CHECK_MESSAGE(throws_invalid_argument([&] { attn::bigbird_mask(n, pattern); }),
                                at());
            return;
        }
        const attn::Mask mask = attn::bigbird_mask(n, pattern);
        const std::string wrong = contract_violation(
            kernel(), clean, p, [&](std::size_t i, std::size_t j) { return mask(i, j); });
        if (!wrong.empty()) BOOST_ERROR(at() << ": " << wrong);
    });
    BOOST_TEST_MESSAGE(cases << " cases");
}

BOOST_AUTO_TEST_CASE(the_pattern_has_a_key_of_rules_and_the_costs_their_slopes)
{
    using test_support::svg_says;
    const auto dir = test_support::run_chapter_program("ch09_bigbird");
    const auto out = dir / "out";
    for (const char* text : {"random", "window", "global", "masked", "key", "query"})
        BOOST_TEST(svg_says(out / "pattern.svg", text), "pattern.svg lacks " << text);
    BOOST_TEST(!svg_says(out / "pattern.svg", "attention weight"));  // a key, no colour bar
    BOOST_TEST(svg_says(out / "weights.svg", "attention weight"));
    test_support::check_cost_figure(out / "cost_time.svg", "seconds (fastest round)");
    test_support::check_cost_figure(out / "cost_memory.svg", "peak MiB one call adds");
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
