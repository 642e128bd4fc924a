// Chapter 1: scaled dot-product self-attention.
#define BOOST_TEST_MODULE ch01_self_attention
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <unistd.h>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <utility>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "attn/random.hpp"
#include "attn/self_attention.hpp"
#include "test_support.hpp"

using test_support::as_type;
using test_support::check_close;
using test_support::naive_attention;
using test_support::Inputs;
using test_support::random_inputs;

namespace {

/// Rows of `x` in the order `order`.
xt::xtensor<double, 2> permute_rows(const xt::xtensor<double, 2>& x, const std::vector<std::size_t>& order)
{
    xt::xtensor<double, 2> y = xt::zeros<double>(x.shape());
    for (std::size_t i = 0; i < order.size(); ++i) xt::row(y, i) = xt::row(x, order[i]);
    return y;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(self_attention)

BOOST_AUTO_TEST_CASE(output_has_shape_n_by_d_v)
{
    const auto [Q, K, V] = random_inputs(5, 7, 4, 3, 1);
    const auto O = attn::scaled_dot_product_attention(Q, K, V);
    BOOST_TEST(O.shape(0) == 5u);
    BOOST_TEST(O.shape(1) == 3u);
    const auto A = attn::attention_weights(Q, K);
    BOOST_TEST(A.shape(0) == 5u);
    BOOST_TEST(A.shape(1) == 7u);
}

BOOST_AUTO_TEST_CASE(rows_sum_to_one)
{
    // n ≠ m, so a softmax over the wrong axis cannot pass.
    const auto [Q, K, V] = random_inputs(6, 11, 8, 4, 2);
    const xt::xtensor<double, 2> A = attn::attention_weights(Q, K);
    const xt::xtensor<double, 1> sums = xt::sum(A, {1});
    check_close(sums, xt::xtensor<double, 1>(xt::ones<double>({6})), 0, 1e-12, "row sums");
    BOOST_TEST(xt::amin(A)() >= 0.0);
}

BOOST_AUTO_TEST_CASE(equals_a_naive_triple_loop_in_double)
{
    for (auto [n, m, d_k, d_v] : std::vector<std::array<std::size_t, 4>>{{1, 1, 1, 1}, {3, 5, 4, 2}, {17, 9, 16, 8}, {64, 64, 32, 32}}) {
        const auto [Q, K, V] = random_inputs(n, m, d_k, d_v, n * 100 + m);
        check_close(attn::scaled_dot_product_attention(Q, K, V), naive_attention(Q, K, V), 1e-12, 1e-12, "double");
    }
}

BOOST_AUTO_TEST_CASE(equals_a_naive_triple_loop_in_float)
{
    const auto [Q, K, V] = random_inputs(33, 21, 16, 12, 3);
    const auto Qf = as_type<float>(Q), Kf = as_type<float>(K), Vf = as_type<float>(V);
    check_close(attn::scaled_dot_product_attention(Qf, Kf, Vf), naive_attention(Qf, Kf, Vf), 1e-5, 1e-6, "float");
}

BOOST_AUTO_TEST_CASE(row_form_equals_matrix_form)
{
    const auto [Q, K, V] = random_inputs(12, 9, 8, 5, 4);
    check_close(attn::attention_by_rows(Q, K, V), attn::scaled_dot_product_attention(Q, K, V), 1e-12, 1e-13, "rows");
}

BOOST_AUTO_TEST_CASE(permuting_queries_permutes_outputs)
{
    const auto [Q, K, V] = random_inputs(8, 8, 4, 4, 5);
    const std::vector<std::size_t> order = {3, 7, 0, 1, 6, 2, 5, 4};
    const auto O = attn::scaled_dot_product_attention(Q, K, V);
    check_close(attn::scaled_dot_product_attention(permute_rows(Q, order), K, V), permute_rows(O, order), 1e-12, 1e-13,
                "permuted queries");
}

BOOST_AUTO_TEST_CASE(permuting_keys_and_values_together_changes_nothing)
{
    const auto [Q, K, V] = random_inputs(8, 8, 4, 4, 6);
    const std::vector<std::size_t> order = {5, 2, 7, 0, 3, 1, 6, 4};
    check_close(attn::scaled_dot_product_attention(Q, permute_rows(K, order), permute_rows(V, order)),
                attn::scaled_dot_product_attention(Q, K, V), 1e-12, 1e-13, "permuted keys and values");
}

BOOST_AUTO_TEST_CASE(self_attention_is_permutation_equivariant)
{
    // Q = K = V = X: permuting the tokens permutes the outputs the same way.
    const auto [X, unused_K, unused_V] = random_inputs(9, 9, 6, 6, 7);
    const std::vector<std::size_t> order = {8, 0, 4, 2, 6, 1, 3, 7, 5};
    const auto X_p = permute_rows(X, order);
    check_close(attn::scaled_dot_product_attention(X_p, X_p, X_p),
                permute_rows(attn::scaled_dot_product_attention(X, X, X), order), 1e-12, 1e-13, "equivariance");
}

BOOST_AUTO_TEST_CASE(logits_of_plus_minus_1e4_stay_finite)
{
    // Scores of ±1e4: exp overflows in any precision without the max subtraction.
    for (double sign : {1.0, -1.0}) {
        xt::xtensor<float, 2> Q = {{100.0f, 0.0f}, {0.0f, 100.0f}};
        xt::xtensor<float, 2> K = {{float(sign) * 141.5f, 0.0f}, {0.0f, float(sign) * 141.5f}, {1.0f, 1.0f}};
        xt::xtensor<float, 2> V = {{1.0f, 0.0f}, {0.0f, 1.0f}, {0.5f, 0.5f}};
        const auto O = attn::scaled_dot_product_attention(Q, K, V);
        BOOST_TEST(test_support::all_finite(O));
        const auto A = attn::attention_weights(Q, K);
        BOOST_TEST(test_support::all_finite(A));
        if (sign > 0) BOOST_TEST(O(0, 0) == 1.0f);  // all weight on key 0
    }
    const xt::xtensor<float, 2> huge = {{1e4f, -1e4f, 0.0f}};
    const auto a = attn::softmax_rows(huge);
    BOOST_TEST(a(0, 0) == 1.0f);
    BOOST_TEST(a(0, 1) == 0.0f);
}

BOOST_AUTO_TEST_CASE(one_token_attends_to_itself)
{
    // n = m = 1: the only weight is 1 and the output is the value.
    const xt::xtensor<double, 2> Q = {{0.3, -2.0}}, K = {{5.0, 1.0}}, V = {{7.0, -1.0, 2.5}};
    check_close(attn::scaled_dot_product_attention(Q, K, V), V, 0, 0, "n = 1");
}

BOOST_AUTO_TEST_CASE(a_row_of_minus_infinity_gives_zeros)
{
    const double inf = std::numeric_limits<double>::infinity();
    const xt::xtensor<double, 2> scores = {{-inf, -inf, -inf}, {0.0, -inf, 0.0}};
    const auto a = attn::softmax_rows(scores);
    check_close(a, xt::xtensor<double, 2>{{0, 0, 0}, {0.5, 0, 0.5}}, 0, 0, "masked softmax");
}

BOOST_AUTO_TEST_CASE(softmax_ignores_a_constant_shift)
{
    const xt::xtensor<double, 2> s = {{0.5, -1.0, 2.0, 0.0}};
    const xt::xtensor<double, 2> shifted = s + 1000.0;
    check_close(attn::softmax_rows(shifted), attn::softmax_rows(s), 1e-12, 1e-15, "shift");
}

BOOST_AUTO_TEST_CASE(wrong_shapes_are_rejected_with_a_message)
{
    const auto [Q, K, V] = random_inputs(3, 4, 5, 2, 8);
    const xt::xtensor<double, 2> K_narrow = xt::zeros<double>({4, 3});
    const xt::xtensor<double, 2> V_short = xt::zeros<double>({3, 2});
    BOOST_CHECK_THROW(attn::scaled_dot_product_attention(Q, K_narrow, V), std::invalid_argument);
    BOOST_CHECK_THROW(attn::scaled_dot_product_attention(Q, K, V_short), std::invalid_argument);
    try {
        attn::scaled_dot_product_attention(Q, K_narrow, V);
    } catch (const std::invalid_argument& error) {
        BOOST_TEST(std::string(error.what()).find("d_k") != std::string::npos);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

BOOST_AUTO_TEST_CASE(no_queries_or_no_value_width_give_empty_results)
{
    const auto [Q, K, V] = random_inputs(0, 4, 5, 3, 8);
    const auto O = attn::scaled_dot_product_attention(Q, K, V);
    BOOST_TEST(O.shape(0) == 0u);
    BOOST_TEST(O.shape(1) == 3u);
    const auto [Q2, K2, V2] = random_inputs(3, 4, 5, 0, 8);
    const auto O2 = attn::scaled_dot_product_attention(Q2, K2, V2);
    BOOST_TEST(O2.shape(0) == 3u);
    BOOST_TEST(O2.shape(1) == 0u);
    BOOST_TEST(attn::attention_by_rows(Q2, K2, V2).shape(1) == 0u);
}

BOOST_AUTO_TEST_CASE(no_keys_or_zero_width_keys_are_errors)
{
    const auto [Q, K, V] = random_inputs(3, 0, 5, 2, 8);
    BOOST_CHECK_THROW(attn::scaled_dot_product_attention(Q, K, V), std::invalid_argument);
    const xt::xtensor<double, 2> Q0 = xt::zeros<double>({3, 0}), K0 = xt::zeros<double>({4, 0});
    const xt::xtensor<double, 2> V0 = xt::ones<double>({4, 2});
    BOOST_CHECK_THROW(attn::scaled_dot_product_attention(Q0, K0, V0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::attention_by_rows(Q0, K0, V0), std::invalid_argument);
}

/// The (row, column) entries of `O` that are not finite.
std::set<std::pair<std::size_t, std::size_t>> non_finite(const xt::xtensor<double, 2>& O)
{
    std::set<std::pair<std::size_t, std::size_t>> cells;
    for (std::size_t i = 0; i < O.shape(0); ++i)
        for (std::size_t c = 0; c < O.shape(1); ++c)
            if (!std::isfinite(O(i, c))) cells.emplace(i, c);
    return cells;
}

BOOST_AUTO_TEST_CASE(a_nan_reaches_exactly_the_outputs_that_depend_on_it)
{
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const std::size_t n = 5, m = 6, d_v = 3;
    auto [Q, K, V] = random_inputs(n, m, 4, d_v, 9);
    std::set<std::pair<std::size_t, std::size_t>> row_2, all_rows, column_1;
    for (std::size_t c = 0; c < d_v; ++c) row_2.emplace(2, c);
    for (std::size_t i = 0; i < n; ++i) {
        column_1.emplace(i, 1);
        for (std::size_t c = 0; c < d_v; ++c) all_rows.emplace(i, c);
    }
    auto Q_nan = Q;
    Q_nan(2, 3) = nan;  // query 2
    BOOST_TEST((non_finite(attn::scaled_dot_product_attention(Q_nan, K, V)) == row_2));
    BOOST_TEST((non_finite(attn::attention_by_rows(Q_nan, K, V)) == row_2));
    auto K_nan = K;
    K_nan(4, 0) = nan;  // key 4, which every query sees
    BOOST_TEST((non_finite(attn::scaled_dot_product_attention(Q, K_nan, V)) == all_rows));
    auto V_nan = V;
    V_nan(0, 1) = std::numeric_limits<double>::infinity();  // value 0, column 1
    BOOST_TEST((non_finite(attn::scaled_dot_product_attention(Q, K, V_nan)) == column_1));
}

BOOST_AUTO_TEST_CASE(a_nan_score_beside_hidden_keys_is_not_a_fully_masked_row)
{
    const double inf = std::numeric_limits<double>::infinity();
    const xt::xtensor<double, 2> scores = {{-inf, std::nan(""), -inf}, {-inf, -inf, -inf}};
    const auto weights = attn::softmax_rows(scores);
    for (std::size_t j = 0; j < 3; ++j) {
        BOOST_TEST(std::isnan(weights(0, j)));
        BOOST_TEST(weights(1, j) == 0.0);
    }
}

BOOST_AUTO_TEST_CASE(outputs_stay_finite_to_the_edge_of_float_and_fail_loudly_beyond)
{
    const std::size_t d_k = 64;
    auto [Q, K, V] = random_inputs(4, 5, d_k, 2, 10);
    auto big = [&](const xt::xtensor<double, 2>& X, double scale) {
        xt::xtensor<float, 2> Y = xt::sign(X) * scale;  // |entries| = scale
        return Y;
    };
    const xt::xtensor<float, 2> V_f = V;
    // |q·k| ≤ 64·1e36 = 6.4e37 < 3.4e38: finite scores, finite outputs.
    const auto inside = attn::scaled_dot_product_attention(big(Q, 1e18), big(K, 1e18), V_f);
    BOOST_TEST(xt::all(xt::isfinite(inside)));
    // Past the edge every row here has a score that overflows to +∞: the rows are NaN.
    const auto beyond = attn::scaled_dot_product_attention(big(Q, 1e19), big(K, 1e19), V_f);
    for (std::size_t i = 0; i < beyond.shape(0); ++i) {
        bool any_nan = false;
        for (std::size_t c = 0; c < beyond.shape(1); ++c) any_nan |= std::isnan(beyond(i, c));
        BOOST_TEST(any_nan, "row " << i << " is finite although its scores overflow");
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(golden_values_from_pytorch)

BOOST_AUTO_TEST_CASE(several_shapes_and_large_logits_match_pytorch)
{
    // tests/golden/generate.py: softmax(Q·Kᵀ/√d_k)·V by PyTorch in float32 and in float64.
    using test_support::read_golden;
    for (const std::string prefix :
         {"ch01_case0", "ch01_case1", "ch01_case2", "ch01_case3", "ch01_large_logits"}) {
        const auto Qd = read_golden<double>(prefix + "_Q.txt"), Kd = read_golden<double>(prefix + "_K.txt"),
                   Vd = read_golden<double>(prefix + "_V.txt");
        check_close(attn::scaled_dot_product_attention(Qd, Kd, Vd), read_golden<double>(prefix + "_out_f64.txt"),
                    1e-12, 1e-13, prefix + " double");
        const auto Qf = read_golden<float>(prefix + "_Q.txt"), Kf = read_golden<float>(prefix + "_K.txt"),
                   Vf = read_golden<float>(prefix + "_V.txt");
        check_close(attn::scaled_dot_product_attention(Qf, Kf, Vf), read_golden<float>(prefix + "_out_f32.txt"),
                    1e-5, 1e-6, prefix + " float");
    }
}

BOOST_AUTO_TEST_SUITE_END()
