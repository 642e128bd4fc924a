// Chapter 2: masked attention.
#define BOOST_TEST_MODULE ch02_masked_attention
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xview.hpp>

#include "attn/masked_attention.hpp"
#include "attn/random.hpp"
#include "attn/sentence.hpp"
#include "test_support.hpp"

using test_support::as_type;
using test_support::check_close;
using test_support::naive_attention;
using test_support::Inputs;
using test_support::random_inputs;

namespace {

/// An n×m mask with each pair allowed with probability `p`.
attn::Mask random_mask(std::size_t n, std::size_t m, double p, std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution allow(p);
    attn::Mask mask = xt::zeros<bool>({n, m});
    for (bool& a : mask) a = allow(rng);
    return mask;
}

/// The predicate test_support::naive_attention takes, read from a mask.
auto allowed_by(const attn::Mask& mask)
{
    return [&mask](std::size_t i, std::size_t j) { return mask(i, j); };
}

/// A golden 0/1 matrix as a mask.
attn::Mask golden_mask(const std::string& name)
{
    const auto ones = test_support::read_golden<double>(name);
    return attn::Mask(xt::equal(ones, 1.0));
}

/// Golden inputs of a chapter-2 case, in T.
template <class T>
std::array<xt::xtensor<T, 2>, 3> golden_inputs(const std::string& prefix)
{
    return {test_support::read_golden<T>(prefix + "_Q.txt"), test_support::read_golden<T>(prefix + "_K.txt"),
            test_support::read_golden<T>(prefix + "_V.txt")};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(masks)

BOOST_AUTO_TEST_CASE(causal_mask_allows_exactly_the_keys_up_to_the_query)
{
    const attn::Mask mask = attn::causal_mask(7);
    BOOST_TEST(mask.shape(0) == 7u);
    BOOST_TEST(mask.shape(1) == 7u);
    for (std::size_t i = 0; i < 7; ++i)
        for (std::size_t j = 0; j < 7; ++j) BOOST_TEST(mask(i, j) == (j <= i), "at (" << i << ", " << j << ")");
}

BOOST_AUTO_TEST_CASE(padding_mask_hides_the_pad_columns_for_every_query)
{
    const std::vector<bool> real = {true, false, true, true, false};
    const attn::Mask mask = attn::padding_mask(3, real);
    BOOST_TEST(mask.shape(0) == 3u);
    BOOST_TEST(mask.shape(1) == 5u);
    for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t j = 0; j < 5; ++j) BOOST_TEST(mask(i, j) == bool(real[j]));
}

BOOST_AUTO_TEST_CASE(masks_of_the_wrong_shape_are_rejected_with_a_message)
{
    const auto [Q, K, V] = random_inputs(3, 4, 2, 2, 1);
    BOOST_CHECK_THROW(attn::scaled_dot_product_attention(Q, K, V, attn::causal_mask(3)), std::invalid_argument);
    BOOST_CHECK_THROW(attn::scaled_dot_product_attention(Q, K, V, attn::causal_mask(4)), std::invalid_argument);
    BOOST_CHECK_THROW(attn::attention_weights(Q, K, attn::Mask(xt::ones<bool>({1, 4}))), std::invalid_argument);
    BOOST_CHECK_THROW(attn::masked_attention_by_rows(Q, K, V, attn::padding_mask(3, {true})), std::invalid_argument);
    try {
        attn::scaled_dot_product_attention(Q, K, V, attn::causal_mask(3));
        BOOST_ERROR("no exception");
    } catch (const std::invalid_argument& error) {
        BOOST_TEST(std::string(error.what()).find("3×3") != std::string::npos, error.what());
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(masked_attention)

BOOST_AUTO_TEST_CASE(equals_a_naive_masked_loop_in_double)
{
    const std::vector<std::array<std::size_t, 4>> shapes = {{1, 1, 1, 1}, {5, 5, 4, 3}, {6, 9, 8, 5}, {33, 17, 16, 8}};
    for (const auto& [n, m, d_k, d_v] : shapes) {
        const auto [Q, K, V] = random_inputs(n, m, d_k, d_v, 10 * n + m);
        std::vector<attn::Mask> masks = {random_mask(n, m, 0.5, n), random_mask(n, m, 0.1, m),
                                         attn::padding_mask(n, std::vector<bool>(m, true))};
        if (n == m) masks.push_back(attn::causal_mask(n));
        for (const attn::Mask& mask : masks) {
            const auto expected = naive_attention(Q, K, V, allowed_by(mask));
            check_close(attn::scaled_dot_product_attention(Q, K, V, mask), expected, 1e-12, 1e-13, "fast");
            check_close(attn::masked_attention_by_rows(Q, K, V, mask), expected, 1e-12, 1e-13, "by rows");
        }
    }
}

BOOST_AUTO_TEST_CASE(equals_a_naive_masked_loop_in_float)
{
    const auto [Q, K, V] = random_inputs(21, 30, 16, 12, 2);
    const auto Qf = as_type<float>(Q), Kf = as_type<float>(K), Vf = as_type<float>(V);
    const attn::Mask mask = random_mask(21, 30, 0.3, 3);
    check_close(attn::scaled_dot_product_attention(Qf, Kf, Vf, mask), naive_attention(Qf, Kf, Vf, allowed_by(mask)),
                1e-5, 1e-6, "float");
}

BOOST_AUTO_TEST_CASE(an_all_true_mask_equals_unmasked_attention)
{
    const auto [Q, K, V] = random_inputs(7, 11, 8, 4, 4);
    const attn::Mask everything = xt::ones<bool>({7, 11});
    check_close(attn::scaled_dot_product_attention(Q, K, V, everything), attn::scaled_dot_product_attention(Q, K, V),
                0, 0, "all true");
}

BOOST_AUTO_TEST_CASE(rows_sum_to_one_over_the_allowed_keys_and_zero_elsewhere)
{
    const auto [Q, K, V] = random_inputs(9, 13, 8, 4, 5);
    attn::Mask mask = random_mask(9, 13, 0.4, 6);
    xt::row(mask, 4) = false;  // one query with nothing to attend
    const xt::xtensor<double, 2> A = attn::attention_weights(Q, K, mask);
    for (std::size_t i = 0; i < 9; ++i) {
        double sum = 0;
        bool any = false;
        for (std::size_t j = 0; j < 13; ++j) {
            if (!mask(i, j)) BOOST_TEST(A(i, j) == 0.0);  // exactly zero
            BOOST_TEST(A(i, j) >= 0.0);
            sum += A(i, j);
            any = any || mask(i, j);
        }
        BOOST_TEST(sum == (any ? 1.0 : 0.0), boost::test_tools::tolerance(1e-12));
    }
}

BOOST_AUTO_TEST_CASE(future_tokens_do_not_change_the_past)
{
    // For every position i, replace every token after i (its query, key and value) with new random
    // numbers: outputs 0..i must stay bit for bit the same.
    const std::size_t n = 12;
    const auto [Q0, K0, V0] = random_inputs(n, n, 8, 6, 7);
    const auto Q = as_type<float>(Q0), K = as_type<float>(K0), V = as_type<float>(V0);
    const attn::Mask causal = attn::causal_mask(n);
    const xt::xtensor<float, 2> O = attn::scaled_dot_product_attention(Q, K, V, causal);
    for (std::size_t i = 0; i + 1 < n; ++i) {
        const auto [Qr, Kr, Vr] = random_inputs(n, n, 8, 6, 100 + i);
        xt::xtensor<float, 2> Q_c = Q, K_c = K, V_c = V;
        xt::view(Q_c, xt::range(i + 1, n), xt::all()) = xt::view(as_type<float>(Qr), xt::range(i + 1, n), xt::all()) * 50.0f;
        xt::view(K_c, xt::range(i + 1, n), xt::all()) = xt::view(as_type<float>(Kr), xt::range(i + 1, n), xt::all()) * 50.0f;
        xt::view(V_c, xt::range(i + 1, n), xt::all()) = xt::view(as_type<float>(Vr), xt::range(i + 1, n), xt::all()) * 1e6f;
        const xt::xtensor<float, 2> O_c = attn::scaled_dot_product_attention(Q_c, K_c, V_c, causal);
        const xt::xtensor<float, 2> past = xt::view(O, xt::range(0, i + 1), xt::all());
        const xt::xtensor<float, 2> past_c = xt::view(O_c, xt::range(0, i + 1), xt::all());
        BOOST_TEST((past == past_c), "outputs 0.." << i << " changed");
        BOOST_TEST(xt::amax(xt::abs(xt::row(O_c, n - 1) - xt::row(O, n - 1)))() > 0.0f);  // the test can fail
    }
}

BOOST_AUTO_TEST_CASE(padded_keys_get_exactly_zero_weight)
{
    const auto [Q, K, V] = random_inputs(6, 8, 4, 3, 8);
    const std::vector<bool> real = {true, true, true, true, true, false, false, false};
    const attn::Mask mask = attn::padding_mask(6, real);
    const xt::xtensor<double, 2> A = attn::attention_weights(Q, K, mask);
    BOOST_TEST(xt::amax(xt::view(A, xt::all(), xt::range(5, 8)))() == 0.0);
    // Whatever the pads hold, even keys that would win every softmax, the output is the same.
    xt::xtensor<double, 2> K_big = K, V_big = V;
    xt::view(K_big, xt::range(5, 8), xt::all()) = 1e4;
    xt::view(V_big, xt::range(5, 8), xt::all()) = -1e30;
    check_close(attn::scaled_dot_product_attention(Q, K_big, V_big, mask),
                attn::scaled_dot_product_attention(Q, K, V, mask), 0, 0, "pads changed");
    // And it equals attention over the real keys alone.
    const xt::xtensor<double, 2> K_real = xt::view(K, xt::range(0, 5), xt::all());
    const xt::xtensor<double, 2> V_real = xt::view(V, xt::range(0, 5), xt::all());
    check_close(attn::scaled_dot_product_attention(Q, K, V, mask), attn::scaled_dot_product_attention(Q, K_real, V_real),
                1e-14, 1e-15, "real keys only");
}

BOOST_AUTO_TEST_CASE(a_fully_masked_row_gives_zeros_and_no_nan)
{
    for (double scale : {1.0, 1e4}) {
        auto [Q, K, V] = random_inputs(5, 5, 4, 3, 9);
        Q *= scale;
        // Left padding under a causal mask: queries 0 and 1 may attend nothing.
        const attn::Mask mask = attn::causal_mask(5) && attn::padding_mask(5, {false, false, true, true, true});
        for (const auto& O : {attn::scaled_dot_product_attention(Q, K, V, mask),
                              attn::masked_attention_by_rows(Q, K, V, mask)}) {
            BOOST_TEST(test_support::all_finite(O));
            BOOST_TEST(xt::amax(xt::abs(xt::view(O, xt::range(0, 2), xt::all())))() == 0.0);
            BOOST_TEST(xt::amax(xt::abs(xt::view(O, xt::range(2, 5), xt::all())))() > 0.0);
        }
        const auto A = attn::attention_weights(as_type<float>(Q), as_type<float>(K), mask);
        BOOST_TEST(test_support::all_finite(A));
        BOOST_TEST(xt::amax(xt::view(A, xt::range(0, 2), xt::all()))() == 0.0f);
    }
    // Nothing allowed at all.
    const auto [Q, K, V] = random_inputs(3, 4, 2, 2, 10);
    const attn::Mask nothing = xt::zeros<bool>({3, 4});
    check_close(attn::scaled_dot_product_attention(Q, K, V, nothing), xt::xtensor<double, 2>(xt::zeros<double>({3, 2})),
                0, 0, "nothing allowed");
}

BOOST_AUTO_TEST_CASE(logits_of_plus_minus_1e4_stay_finite_under_a_mask)
{
    xt::xtensor<float, 2> Q = {{100.0f, 0.0f}, {0.0f, 100.0f}, {70.0f, -70.0f}};
    xt::xtensor<float, 2> K = {{141.5f, 0.0f}, {0.0f, -141.5f}, {-141.5f, 141.5f}};
    xt::xtensor<float, 2> V = {{1.0f, 0.0f}, {0.0f, 1.0f}, {0.5f, 0.5f}};
    const attn::Mask causal = attn::causal_mask(3);
    const auto O = attn::scaled_dot_product_attention(Q, K, V, causal);
    BOOST_TEST(test_support::all_finite(O));
    BOOST_TEST(O(0, 0) == 1.0f);  // query 0 sees only key 0
    check_close(O, naive_attention(Q, K, V, allowed_by(causal)), 1e-6, 1e-6, "large logits");
}

BOOST_AUTO_TEST_CASE(a_causal_row_is_attention_over_its_prefix)
{
    const auto [Q, K, V] = random_inputs(8, 8, 4, 4, 11);
    const auto O = attn::scaled_dot_product_attention(Q, K, V, attn::causal_mask(8));
    for (std::size_t i = 0; i < 8; ++i) {
        const xt::xtensor<double, 2> Q_i = xt::view(Q, xt::range(0, i + 1), xt::all());
        const xt::xtensor<double, 2> K_i = xt::view(K, xt::range(0, i + 1), xt::all());
        const xt::xtensor<double, 2> V_i = xt::view(V, xt::range(0, i + 1), xt::all());
        const xt::xtensor<double, 1> last = xt::row(attn::scaled_dot_product_attention(Q_i, K_i, V_i), i);
        const xt::xtensor<double, 1> row = xt::row(O, i);
        check_close(row, last, 1e-13, 1e-14, "prefix " + std::to_string(i));
    }
}

BOOST_AUTO_TEST_CASE(one_token_under_a_causal_mask_attends_to_itself)
{
    const xt::xtensor<double, 2> Q = {{0.3, -2.0}}, K = {{5.0, 1.0}}, V = {{7.0, -1.0, 2.5}};
    check_close(attn::scaled_dot_product_attention(Q, K, V, attn::causal_mask(1)), V, 0, 0, "n = 1");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(golden_values_from_pytorch)

BOOST_AUTO_TEST_CASE(causal_padding_and_large_logits_match_pytorch)
{
    for (const std::string prefix : {"ch02_causal", "ch02_padding", "ch02_causal_large_logits"}) {
        const attn::Mask mask = golden_mask(prefix + "_mask.txt");
        const auto [Qd, Kd, Vd] = golden_inputs<double>(prefix);
        check_close(attn::scaled_dot_product_attention(Qd, Kd, Vd, mask),
                    test_support::read_golden<double>(prefix + "_out_f64.txt"), 1e-12, 1e-13, prefix + " double");
        const auto [Qf, Kf, Vf] = golden_inputs<float>(prefix);
        check_close(attn::scaled_dot_product_attention(Qf, Kf, Vf, mask),
                    test_support::read_golden<float>(prefix + "_out_f32.txt"), 1e-5, 1e-6, prefix + " float");
    }
}

BOOST_AUTO_TEST_CASE(where_pytorch_gives_nan_this_book_gives_zeros)
{
    const attn::Mask mask = golden_mask("ch02_fully_masked_mask.txt");
    const auto check = [&](auto O, const std::string& tag, double rel, double abs) {
        const auto torch_out = test_support::read_golden<double>("ch02_fully_masked_out_" + tag + ".txt");
        const auto torch_nan = test_support::read_golden<double>("ch02_fully_masked_nan_" + tag + ".txt");
        BOOST_TEST(xt::sum(torch_nan)() == 2.0 * double(O.shape(1)));  // PyTorch: two NaN rows
        BOOST_TEST(test_support::all_finite(O));
        for (std::size_t i = 0; i < O.shape(0); ++i)
            for (std::size_t c = 0; c < O.shape(1); ++c)
                if (torch_nan(i, c) == 1.0) BOOST_TEST(double(O(i, c)) == 0.0);
        check_close(O, torch_out, rel, abs, "fully masked " + tag);  // NaNs are written as 0 in the file
    };
    const auto [Qd, Kd, Vd] = golden_inputs<double>("ch02_fully_masked");
    check(attn::scaled_dot_product_attention(Qd, Kd, Vd, mask), "f64", 1e-12, 1e-13);
    const auto [Qf, Kf, Vf] = golden_inputs<float>("ch02_fully_masked");
    check(attn::scaled_dot_product_attention(Qf, Kf, Vf, mask), "f32", 1e-5, 1e-6);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(sentence)

BOOST_AUTO_TEST_CASE(equal_words_get_equal_embeddings)
{
    const auto tokens = attn::split_words("the cat sat on  the mat");
    BOOST_TEST(tokens.size() == 6u);
    const auto X = attn::embed_words<double>(tokens, 8, 42);
    BOOST_TEST((xt::row(X, 0) == xt::row(X, 4)));
    BOOST_TEST(!(xt::row(X, 0) == xt::row(X, 1)));
    const auto X_alone = attn::embed_words<double>({"mat"}, 8, 42);
    BOOST_TEST((xt::row(X_alone, 0) == xt::row(X, 5)));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

using test_support::contract_violation;
using test_support::Poison;
using test_support::throws_invalid_argument;

BOOST_AUTO_TEST_CASE(shapes)
{
    const auto [Q, K, V] = random_inputs(0, 4, 5, 3, 110);  // no queries
    const attn::Mask no_rows = xt::zeros<bool>({0, 4});
    const auto O = attn::scaled_dot_product_attention(Q, K, V, no_rows);
    BOOST_TEST(O.shape(0) == 0u);
    BOOST_TEST(O.shape(1) == 3u);
    const auto [Q2, K2, V2] = random_inputs(3, 4, 5, 0, 111);  // d_v = 0
    const attn::Mask all = xt::ones<bool>({3, 4});
    BOOST_TEST(attn::scaled_dot_product_attention(Q2, K2, V2, all).shape(1) == 0u);
    BOOST_TEST(attn::masked_attention_by_rows(Q2, K2, V2, all).shape(0) == 3u);
    const auto [Q3, K3, V3] = random_inputs(3, 0, 5, 2, 112);  // no keys
    const attn::Mask none = xt::zeros<bool>({3, 0});
    BOOST_CHECK_THROW(attn::scaled_dot_product_attention(Q3, K3, V3, none), std::invalid_argument);
    BOOST_CHECK_THROW(attn::masked_attention_by_rows(Q3, K3, V3, none), std::invalid_argument);
    BOOST_CHECK_THROW(attn::scaled_dot_product_attention(Q2, K2, V2, attn::causal_mask(3)),
                      std::invalid_argument);  // the mask is 3×3, not 3×4
}

BOOST_AUTO_TEST_CASE(a_nan_query_behind_a_hidden_first_key_reaches_its_row)
{
    // Chapter 1's softmax takes its maximum with std::max_element: in the row
    // (−∞, NaN, NaN, NaN) the maximum stayed −∞ and the row came out as zeros.
    auto [Q, K, V] = random_inputs(3, 4, 5, 2, 113);
    Q(1, 2) = std::numeric_limits<double>::quiet_NaN();
    const attn::Mask mask = attn::padding_mask(3, {false, true, true, true});
    for (const auto& O : {attn::scaled_dot_product_attention(Q, K, V, mask),
                          attn::masked_attention_by_rows(Q, K, V, mask)})
        for (std::size_t c = 0; c < 2; ++c) {
            BOOST_TEST(!std::isfinite(O(1, c)));
            BOOST_TEST(std::isfinite(O(0, c)));
        }
    BOOST_TEST(!std::isfinite(attn::attention_weights(Q, K, mask)(1, 1)));
}

BOOST_AUTO_TEST_CASE(fuzz_every_kernel_against_the_masked_reference)
{
    const std::size_t cases = test_support::fuzz_cases(300, 202, [](std::mt19937_64& rng,
                                                                     std::size_t k) {
        const std::size_t n = rng() % 8 == 0 ? 0 : test_support::draw_size(rng, 40);
        const std::size_t m = rng() % 16 == 0 ? 0 : test_support::draw_size(rng, 40);
        const std::size_t d_k = test_support::draw_size(rng, 40);
        const std::size_t d_v = rng() % 8 == 0 ? 0 : test_support::draw_size(rng, 40);
        // A random mask: each row all hidden, all allowed, or each key with probability ρ.
        const std::size_t mask_n = rng() % 16 == 0 ? n + 1 : n;  // sometimes the wrong shape
        attn::Mask mask = xt::zeros<bool>({mask_n, m});
        const double rho = double(rng() % 101) / 100;
        for (std::size_t i = 0; i < mask_n; ++i) {
            const int kind = int(rng() % 6);
            for (std::size_t j = 0; j < m; ++j)
                mask(i, j) = kind == 0 ? false : kind == 1 ? true : double(rng() % 100) < 100 * rho;
        }
        const Inputs clean = test_support::random_inputs(n, m, d_k, d_v, rng());
        Inputs x = clean;
        const Poison p = test_support::draw_poison(rng, x);
        const auto at = [&] {
            return "case " + std::to_string(k) + ": n = " + std::to_string(n) + ", m = " +
                   std::to_string(m) + ", d_k = " + std::to_string(d_k) + ", d_v = " +
                   std::to_string(d_v) + ", poison " + (p.operand ? p.operand : '-');
        };
        const auto dense = [&] {
            return attn::scaled_dot_product_attention(x.Q, x.K, x.V, mask);
        };
        const auto by_rows = [&] { return attn::masked_attention_by_rows(x.Q, x.K, x.V, mask); };
        if (m == 0 || mask_n != n) {
            BOOST_CHECK_MESSAGE(throws_invalid_argument(dense), at());
            BOOST_CHECK_MESSAGE(throws_invalid_argument(by_rows), at());
            return;
        }
        const auto allowed = [&](std::size_t i, std::size_t j) { return mask(i, j); };
        // The dense kernel multiplies every value by its weight, zero or not: a poisoned
        // value may reach more rows of its column than those that see it.
        std::string wrong = contract_violation(dense(), clean, p, allowed, true);
        if (!wrong.empty()) BOOST_ERROR(at() << ", dense: " << wrong);
        wrong = contract_violation(by_rows(), clean, p, allowed);
        if (!wrong.empty()) BOOST_ERROR(at() << ", by rows: " << wrong);
    });
    BOOST_TEST_MESSAGE(cases << " cases");
}

BOOST_AUTO_TEST_SUITE_END()
