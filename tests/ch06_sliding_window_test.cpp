// Chapter 6: sliding-window attention, its banded kernel and the rolling-buffer cache.
#define BOOST_TEST_MODULE ch06_sliding_window
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
#include <xtensor/xview.hpp>

#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/random.hpp"
#include "attn/sliding_window.hpp"
#include "sparsity_support.hpp"
#include "test_support.hpp"

using test_support::as_type;
using test_support::check_close;
using test_support::naive_attention;
using test_support::Inputs;
using test_support::random_inputs;

namespace {

/// (n, w) pairs: n below, equal to and above w, and n not a multiple of w.
const std::vector<std::array<std::size_t, 2>> sizes = {{1, 1}, {1, 4}, {5, 1}, {7, 3}, {16, 4}, {33, 8},
                                                       {100, 7}, {257, 64}, {64, 200}};

}  // namespace

BOOST_AUTO_TEST_SUITE(sliding_window)

BOOST_AUTO_TEST_CASE(mask_allows_exactly_the_last_w_positions)
{
    for (auto [n, w] : sizes) {
        const attn::Mask mask = attn::sliding_window_mask(n, w);
        BOOST_REQUIRE(mask.shape(0) == n && mask.shape(1) == n);
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                const bool expected = j <= i && i < j + w;  // i − w < j ≤ i without unsigned wrap
                BOOST_TEST(mask(i, j) == expected, "n=" << n << " w=" << w << " (" << i << "," << j << ")");
            }
    }
}

BOOST_AUTO_TEST_CASE(every_row_keeps_its_own_token_and_at_most_w_keys)
{
    const attn::Mask mask = attn::sliding_window_mask(50, 6);
    for (std::size_t i = 0; i < 50; ++i) {
        BOOST_TEST(mask(i, i));
        const double keys = xt::sum(xt::row(mask, i))();
        BOOST_TEST(keys == double(std::min<std::size_t>(i + 1, 6)));
    }
}

BOOST_AUTO_TEST_CASE(window_as_long_as_the_sequence_is_the_causal_mask)
{
    BOOST_TEST(attn::sliding_window_mask(20, 20) == attn::causal_mask(20));
    BOOST_TEST(attn::sliding_window_mask(20, 1000) == attn::causal_mask(20));
}

BOOST_AUTO_TEST_CASE(a_window_of_zero_is_rejected)
{
    const auto [Q, K, V] = random_inputs(4, 3, 2, 1);
    BOOST_CHECK_THROW(attn::sliding_window_mask(4, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::sliding_window_attention(Q, K, V, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::RollingKVCache<double>(0, 3, 2), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(keys_and_queries_must_be_the_same_positions)
{
    const auto [Q, K, V] = random_inputs(4, 3, 2, 2);
    const xt::xtensor<double, 2> K5 = xt::zeros<double>({5, 3}), V5 = xt::zeros<double>({5, 2});
    BOOST_CHECK_THROW(attn::sliding_window_attention(Q, K5, V5, 2), std::invalid_argument);
    const xt::xtensor<double, 2> K_wide = xt::zeros<double>({4, 4});
    BOOST_CHECK_THROW(attn::sliding_window_attention(Q, K_wide, V, 2), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(double_kernel_equals_dense_masked_attention)
{
    for (auto [n, w] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 16, 8, 10 + n);
        const auto dense = attn::scaled_dot_product_attention(Q, K, V, attn::sliding_window_mask(n, w));
        const auto band = attn::sliding_window_attention(Q, K, V, w);
        check_close(band, dense, 0, 1e-12, "banded vs dense, n=" + std::to_string(n) + " w=" + std::to_string(w));
        const auto naive = naive_attention(Q, K, V, [w = w](std::size_t i, std::size_t j) { return j <= i && i < j + w; });
        check_close(band, naive, 0, 1e-12, "banded vs naive, n=" + std::to_string(n));
    }
}

BOOST_AUTO_TEST_CASE(float_kernel_equals_dense_masked_attention)
{
    for (auto [n, w] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 32, 16, 20 + n);
        const auto Q_f = as_type<float>(Q), K_f = as_type<float>(K), V_f = as_type<float>(V);
        const auto dense = attn::scaled_dot_product_attention(Q_f, K_f, V_f, attn::sliding_window_mask(n, w));
        const auto band = attn::sliding_window_attention(Q_f, K_f, V_f, w);
        check_close(band, dense, 0, 1e-5, "float banded vs dense, n=" + std::to_string(n));
    }
}

BOOST_AUTO_TEST_CASE(reference_loops_equal_the_independent_naive_loops)
{
    for (auto [n, w] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 8, 5, 30 + n);
        const auto rows = attn::sliding_window_attention_by_rows(Q, K, V, w);
        const auto naive = naive_attention(Q, K, V, [w = w](std::size_t i, std::size_t j) { return j <= i && i < j + w; });
        check_close(rows, naive, 0, 1e-12, "reference loops, n=" + std::to_string(n));
    }
}

BOOST_AUTO_TEST_CASE(a_window_of_one_copies_each_value)
{
    const auto [Q, K, V] = random_inputs(9, 4, 3, 3);
    check_close(attn::sliding_window_attention(Q, K, V, 1), V, 0, 1e-15, "w = 1");
}

BOOST_AUTO_TEST_CASE(large_logits_stay_finite)
{
    auto [Q, K, V] = random_inputs(40, 8, 4, 4);
    Q *= 1e4;  // scores of order 1e4·√d_k: e^s overflows without the max-subtraction
    const auto band = attn::sliding_window_attention(Q, K, V, 5);
    BOOST_TEST(test_support::all_finite(band));
    const auto naive = naive_attention(Q, K, V, [](std::size_t i, std::size_t j) { return j <= i && i < j + 5; });
    check_close(band, naive, 0, 1e-9, "large logits");
    const auto band_f = attn::sliding_window_attention(as_type<float>(Q), as_type<float>(K), as_type<float>(V), 5);
    BOOST_TEST(test_support::all_finite(band_f));
}

BOOST_AUTO_TEST_CASE(online_softmax_equals_one_pass_whatever_the_runs)
{
    // Scores rising along the keys: every later run has a larger maximum, so every run must rescale.
    const std::size_t m = 12, d_k = 4, d_v = 3;
    auto [Q, K, V] = random_inputs(m, d_k, d_v, 5);
    for (std::size_t j = 0; j < m; ++j) xt::row(K, j) = xt::row(Q, 0) * double(j);
    const auto one_pass = naive_attention(xt::xtensor<double, 2>(xt::view(Q, xt::range(0, 1), xt::all())), K, V);
    for (std::size_t run : {1, 2, 5, 12}) {
        attn::OnlineSoftmax<double> softmax(d_k, d_v);
        for (std::size_t start = 0; start < m; start += run)
            softmax.add_run(Q.data(), K.data() + start * d_k, V.data() + start * d_v, std::min(run, m - start));
        xt::xtensor<double, 2> o = xt::zeros<double>({std::size_t(1), d_v});
        softmax.write(o.data());
        check_close(o, one_pass, 0, 1e-12, "runs of " + std::to_string(run));
    }
}

BOOST_AUTO_TEST_CASE(the_online_state_is_its_definition_after_any_runs)
{
    // After runs of keys, m is the largest score, ℓ = Σ_j e^(s_j − m) and o = Σ_j e^(s_j − m)·v_j.
    const std::size_t m = 11, d_k = 4, d_v = 3;
    const auto [Q, K, V] = random_inputs(1, m, d_k, d_v, 8);
    std::vector<double> s(m);
    for (std::size_t j = 0; j < m; ++j) {
        double dot = 0;
        for (std::size_t c = 0; c < d_k; ++c) dot += Q(0, c) * K(j, c);
        s[j] = dot / 2.0;  // 1/√d_k
    }
    const double largest = *std::max_element(s.begin(), s.end());
    for (std::size_t run : {1, 3, 11}) {
        attn::OnlineSoftmax<double> softmax(d_k, d_v);
        for (std::size_t start = 0; start < m; start += run)
            softmax.add_run(Q.data(), K.data() + start * d_k, V.data() + start * d_v, std::min(run, m - start));
        const attn::QueryState<double>& state = softmax.state();
        double sum = 0;
        std::vector<double> acc(d_v, 0.0);
        for (std::size_t j = 0; j < m; ++j) {
            sum += std::exp(s[j] - largest);
            for (std::size_t c = 0; c < d_v; ++c) acc[c] += std::exp(s[j] - largest) * V(j, c);
        }
        BOOST_TEST(state.max == largest, boost::test_tools::tolerance(1e-14));
        BOOST_TEST(state.sum == sum, boost::test_tools::tolerance(1e-13));
        for (std::size_t c = 0; c < d_v; ++c) BOOST_TEST(state.acc[c] == acc[c], boost::test_tools::tolerance(1e-13));
    }
}

BOOST_AUTO_TEST_CASE(online_softmax_with_no_keys_writes_zeros)
{
    attn::OnlineSoftmax<float> softmax(4, 3);
    std::vector<float> o(3, 7.0f);
    softmax.write(o.data());
    for (float value : o) BOOST_TEST(value == 0.0f);
}

BOOST_AUTO_TEST_CASE(rolling_buffer_equals_the_batch_computation)
{
    for (auto [n, w] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 16, 8, 40 + n);
        const auto batch = attn::sliding_window_attention(Q, K, V, w);
        const auto decoded = attn::decode_with_rolling_cache(Q, K, V, w);
        check_close(decoded, batch, 0, 1e-12, "rolling vs batch, n=" + std::to_string(n) + " w=" + std::to_string(w));
        const auto Q_f = as_type<float>(Q), K_f = as_type<float>(K), V_f = as_type<float>(V);
        check_close(attn::decode_with_rolling_cache(Q_f, K_f, V_f, w),
                    attn::scaled_dot_product_attention(Q_f, K_f, V_f, attn::sliding_window_mask(n, w)), 0, 1e-5,
                    "float rolling vs dense, n=" + std::to_string(n));
    }
}

BOOST_AUTO_TEST_CASE(rolling_buffer_memory_does_not_grow)
{
    const std::size_t w = 8, d_k = 4, d_v = 3;
    const auto [Q, K, V] = random_inputs(100, d_k, d_v, 6);
    attn::RollingKVCache<double> cache(w, d_k, d_v);
    const std::size_t bytes = cache.bytes();
    BOOST_TEST(bytes == w * (d_k + d_v) * sizeof(double));
    std::vector<double> o(d_v);
    for (std::size_t t = 0; t < 100; ++t) {
        cache.append(K.data() + t * d_k, V.data() + t * d_v);
        cache.attend(Q.data() + t * d_k, o.data());
        BOOST_TEST(cache.size() == std::min<std::size_t>(t + 1, w));
        BOOST_TEST(cache.bytes() == bytes);
    }
}

BOOST_AUTO_TEST_CASE(future_tokens_do_not_change_the_past)
{
    auto [Q, K, V] = random_inputs(30, 8, 4, 7);
    const auto before = attn::sliding_window_attention(Q, K, V, 6);
    xt::view(K, xt::range(20, 30), xt::all()) *= -3.0;
    xt::view(V, xt::range(20, 30), xt::all()) += 5.0;
    const auto after = attn::sliding_window_attention(Q, K, V, 6);
    for (std::size_t i = 0; i < 20; ++i)
        for (std::size_t c = 0; c < 4; ++c) BOOST_TEST(after(i, c) == before(i, c));
}

BOOST_AUTO_TEST_CASE(tokens_outside_the_window_do_not_change_the_output)
{
    auto [Q, K, V] = random_inputs(30, 8, 4, 8);
    const auto before = attn::sliding_window_attention(Q, K, V, 6);
    xt::view(K, xt::range(0, 10), xt::all()) *= 4.0;  // tokens 0..9 are outside the window of rows ≥ 15
    xt::view(V, xt::range(0, 10), xt::all()) -= 2.0;
    const auto after = attn::sliding_window_attention(Q, K, V, 6);
    for (std::size_t i = 15; i < 30; ++i)
        for (std::size_t c = 0; c < 4; ++c) BOOST_TEST(after(i, c) == before(i, c));
}

BOOST_AUTO_TEST_CASE(receptive_field_grows_by_w_minus_one_per_layer)
{
    // L layers of a window w depend on exactly the window L(w − 1) + 1.
    for (std::size_t w : {1, 2, 3, 5}) {
        const attn::Mask mask = attn::sliding_window_mask(40, w);
        attn::Mask reach = mask;
        for (std::size_t L = 1; L <= 6; ++L) {
            BOOST_TEST(reach == attn::sliding_window_mask(40, L * (w - 1) + 1), "w=" << w << " L=" << L);
            reach = attn::compose_masks(reach, mask);
        }
    }
    BOOST_CHECK_THROW(attn::compose_masks(attn::Mask(xt::zeros<bool>({2, 3})), attn::Mask(xt::zeros<bool>({2, 3}))),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(the_kernel_scores_exactly_the_allowed_pairs)
{
    // A kernel that built Q·Kᵀ and masked it would give the same outputs but count n² scores.
    for (auto [n, w] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 8, 4, 50 + n);
        const attn::Mask mask = attn::sliding_window_mask(n, w);
        attn::KeyVisits visits;
        attn::sliding_window_attention(Q, K, V, w, &visits);
        const auto allowed = std::size_t(std::count(mask.begin(), mask.end(), true));
        BOOST_TEST(visits.scores == allowed, "n=" << n << " w=" << w);
    }
}

BOOST_AUTO_TEST_CASE(the_kernel_visits_far_fewer_than_n_squared_keys)
{
    const std::size_t n = 2048, w = 64;
    const auto [Q, K, V] = random_inputs(n, 8, 4, 60);
    attn::KeyVisits visits;
    attn::sliding_window_attention(Q, K, V, w, &visits);
    BOOST_TEST(visits.scores == n * w - w * (w - 1) / 2);  // rows i < w have i + 1 keys
    BOOST_TEST(visits.scores * 16 < n * n);
    attn::sliding_window_attention(Q, K, V, w, &visits);  // counts add up over calls
    BOOST_TEST(visits.scores == 2 * (n * w - w * (w - 1) / 2));
}

BOOST_AUTO_TEST_CASE(the_kernel_never_holds_an_n_by_n_matrix)
{
    // The kernel's peak is its n×d_v output and a window's scores.
    test_support::check_never_holds_an_n_by_n_matrix(
        [](const auto& Q, const auto& K, const auto& V) {
            return attn::sliding_window_attention(Q, K, V, 128);
        },
        61);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

using test_support::contract_violation;
using test_support::Poison;
using test_support::throws_invalid_argument;

BOOST_AUTO_TEST_CASE(shapes_self_attention_only)
{
    // The pattern is over one sequence: m = n, so n = 0 is m = 0, an error.
    const auto [Q0, K0, V0] = random_inputs(0, 4, 3, 70);
    BOOST_CHECK_THROW(attn::sliding_window_attention(Q0, K0, V0, 2), std::invalid_argument);
    const auto [Q, K, V] = random_inputs(5, 6, 4, 3, 71);  // 5 queries, 6 keys
    BOOST_CHECK_THROW(attn::sliding_window_attention(Q, K, V, 2), std::invalid_argument);
    BOOST_CHECK_THROW(attn::sliding_window_attention_by_rows(Q, K, V, 2),
                      std::invalid_argument);
    BOOST_CHECK_THROW(attn::decode_with_rolling_cache(Q, K, V, 2), std::invalid_argument);
    const auto [Qe, Ke, Ve] = random_inputs(5, 4, 0, 72);  // d_v = 0
    BOOST_TEST(attn::sliding_window_attention(Qe, Ke, Ve, 2).shape(1) == 0u);
    BOOST_TEST(attn::decode_with_rolling_cache(Qe, Ke, Ve, 2).shape(0) == 5u);
}

BOOST_AUTO_TEST_CASE(a_huge_window_is_clamped_and_a_huge_cache_refused)
{
    const std::size_t huge = std::numeric_limits<std::size_t>::max();
    const auto [Q, K, V] = random_inputs(9, 4, 3, 73);
    const auto causal = attn::sliding_window_attention(Q, K, V, 9);
    check_close(attn::sliding_window_attention(Q, K, V, huge), causal, 1e-12, 1e-14, "w = max");
    check_close(attn::decode_with_rolling_cache(Q, K, V, huge), causal, 1e-12, 1e-14,
                "rolling, w = max");
    BOOST_CHECK_THROW(attn::decode_with_rolling_cache(Q, K, V, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::RollingKVCache<double>(huge, 4, 4), std::invalid_argument);
    BOOST_CHECK_THROW(attn::RollingKVCache<double>(huge / 4, 4, 4), std::invalid_argument);
    BOOST_CHECK_THROW(attn::RollingKVCache<double>(0, 4, 4), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(a_nan_in_a_query_reaches_its_row)
{
    // The old online softmax took std::max(−∞, NaN) = −∞ and wrote a NaN total as 0.
    const auto clean = random_inputs(8, 4, 3, 74);
    for (const char operand : {'Q', 'K', 'V'}) {
        Inputs x = clean;
        Poison p{operand, 3, 1, std::numeric_limits<double>::quiet_NaN()};
        (operand == 'Q' ? x.Q : operand == 'K' ? x.K : x.V)(3, 1) = p.value;
        const std::size_t w = 3;
        const auto allowed = [&](std::size_t i, std::size_t j) { return j <= i && i - j < w; };
        for (const auto& O : {attn::sliding_window_attention(x.Q, x.K, x.V, w),
                              attn::sliding_window_attention_by_rows(x.Q, x.K, x.V, w),
                              attn::decode_with_rolling_cache(x.Q, x.K, x.V, w)}) {
            const std::string wrong = contract_violation(O, clean, p, allowed);
            BOOST_TEST(wrong.empty(), operand << ": " << wrong);
        }
    }
}

BOOST_AUTO_TEST_CASE(fuzz_every_kernel_against_the_masked_reference)
{
    const std::size_t cases = test_support::fuzz_cases(300, 606, [](std::mt19937_64& rng,
                                                                     std::size_t k) {
        const std::size_t n = test_support::draw_size(rng, 40);
        const std::size_t d_k = test_support::draw_size(rng, 40);
        const std::size_t d_v = rng() % 8 == 0 ? 0 : test_support::draw_size(rng, 40);
        const std::size_t w = test_support::draw_option(rng, n);
        const Inputs clean = random_inputs(n, d_k, d_v, rng());
        Inputs x = clean;
        const Poison p = test_support::draw_poison(rng, x);
        const auto at = [&] {
            return "case " + std::to_string(k) + ": n = " + std::to_string(n) + ", d_k = " +
                   std::to_string(d_k) + ", d_v = " + std::to_string(d_v) + ", w = " +
                   std::to_string(w) + ", poison " + (p.operand ? p.operand : '-');
        };
        const auto sliding = [&] { return attn::sliding_window_attention(x.Q, x.K, x.V, w); };
        const auto by_rows = [&] {
            return attn::sliding_window_attention_by_rows(x.Q, x.K, x.V, w);
        };
        const auto rolling = [&] { return attn::decode_with_rolling_cache(x.Q, x.K, x.V, w); };
        if (w == 0) {
            BOOST_CHECK_MESSAGE(throws_invalid_argument(sliding), at());
            BOOST_CHECK_MESSAGE(throws_invalid_argument(by_rows), at());
            BOOST_CHECK_MESSAGE(throws_invalid_argument(rolling), at());
            return;
        }
        const auto allowed = [&](std::size_t i, std::size_t j) { return j <= i && i - j < w; };
        for (const auto& O : {sliding(), by_rows(), rolling()}) {
            const std::string wrong = contract_violation(O, clean, p, allowed);
            if (!wrong.empty()) BOOST_ERROR(at() << ": " << wrong);
        }
    });
    BOOST_TEST_MESSAGE(cases << " cases");
}

BOOST_AUTO_TEST_SUITE_END()
