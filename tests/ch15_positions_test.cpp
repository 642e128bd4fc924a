// Chapter 15: positions: equivariance, sinusoids, T5 buckets, ALiBi, RoPE, the position model.
#define BOOST_TEST_MODULE ch15_positions
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/masked_attention.hpp"
#include "attn/position_model.hpp"
#include "attn/positions.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"
#include "test_support.hpp"

using test_support::check_close;
using test_support::naive_attention;
using test_support::random_inputs;
using Matrix = xt::xtensor<double, 2>;

namespace {

Matrix permute_rows(const Matrix& X, const std::vector<std::size_t>& order)
{
    Matrix Y = xt::zeros<double>({order.size(), X.shape(1)});
    for (std::size_t r = 0; r < order.size(); ++r) xt::row(Y, r) = xt::row(X, order[r]);
    return Y;
}

Matrix permute_columns(const Matrix& X, const std::vector<std::size_t>& order)
{
    Matrix Y = xt::zeros<double>({X.shape(0), order.size()});
    for (std::size_t c = 0; c < order.size(); ++c) xt::col(Y, c) = xt::col(X, order[c]);
    return Y;
}

Matrix matmul_t(const Matrix& A, const Matrix& B)  // A·Bᵀ by loops
{
    Matrix C = xt::zeros<double>({A.shape(0), B.shape(0)});
    for (std::size_t i = 0; i < A.shape(0); ++i)
        for (std::size_t j = 0; j < B.shape(0); ++j)
            for (std::size_t c = 0; c < A.shape(1); ++c) C(i, j) += A(i, c) * B(j, c);
    return C;
}

/// split-halves column c + s·d/2 goes to interleaved column 2c + s.
std::vector<std::size_t> interleaving(std::size_t d)
{
    std::vector<std::size_t> order(d);
    for (std::size_t c = 0; c < d / 2; ++c) order[2 * c] = c, order[2 * c + 1] = c + d / 2;
    return order;
}

/// RoPE by the textbook formula, one pair at a time, in long double.
Matrix rope_reference(const Matrix& X, std::int64_t first, double base, attn::RopeLayout layout)
{
    const std::size_t d = X.shape(1);
    Matrix Y = X;
    for (std::size_t i = 0; i < X.shape(0); ++i)
        for (std::size_t c = 0; c < d / 2; ++c) {
            const std::size_t a = layout == attn::RopeLayout::interleaved ? 2 * c : c;
            const std::size_t b = layout == attn::RopeLayout::interleaved ? 2 * c + 1 : c + d / 2;
            const long double theta = std::pow((long double)base, -2.0L * c / (long double)d);
            const long double angle = (long double)(first + std::int64_t(i)) * theta;
            Y(i, a) = double(X(i, a) * std::cos(angle) - X(i, b) * std::sin(angle));
            Y(i, b) = double(X(i, a) * std::sin(angle) + X(i, b) * std::cos(angle));
        }
    return Y;
}

const std::vector<attn::PositionScheme> all_schemes = {
    attn::PositionScheme::none,    attn::PositionScheme::sinusoidal,
    attn::PositionScheme::learned, attn::PositionScheme::t5_bias,
    attn::PositionScheme::alibi,   attn::PositionScheme::rope};

}  // namespace

BOOST_AUTO_TEST_SUITE(equivariance)

BOOST_AUTO_TEST_CASE(shuffling_the_tokens_shuffles_the_outputs)
{
    const auto in = random_inputs(9, 6, 5, 1501);
    std::vector<std::size_t> order = {3, 0, 8, 1, 7, 2, 6, 4, 5};
    const Matrix O = attn::scaled_dot_product_attention(in.Q, in.K, in.V);
    const Matrix O_shuffled = attn::scaled_dot_product_attention(
        permute_rows(in.Q, order), permute_rows(in.K, order), permute_rows(in.V, order));
    check_close(O_shuffled, permute_rows(O, order), 1e-12, 1e-13, "Attention(ΠX) = Π Attention(X)");
}

BOOST_AUTO_TEST_CASE(sinusoidal_positions_break_the_equivariance)
{
    std::mt19937_64 rng(1502);
    const Matrix X = attn::random_normal<double>(8, 8, 1.0, rng);
    const Matrix W = attn::random_normal<double>(8, 8, 0.5, rng);
    const std::vector<std::size_t> order = {7, 6, 5, 4, 3, 2, 1, 0};
    const Matrix P = attn::sinusoidal_positions<double>(8, 8);
    auto attend = [&](const Matrix& Y) {
        const Matrix Q = xt::linalg::dot(Y, W);
        return Matrix(attn::scaled_dot_product_attention(Q, Q, Y));
    };
    const Matrix change = attend(Matrix(permute_rows(X, order) + P)) -
                          permute_rows(attend(Matrix(X + P)), order);
    BOOST_TEST(xt::amax(xt::abs(change))() > 1e-3);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(sinusoidal)

BOOST_AUTO_TEST_CASE(table_follows_the_formula)
{
    const std::size_t n = 50, d = 12;
    const Matrix P = attn::sinusoidal_positions<double>(n, d);
    BOOST_REQUIRE(P.shape(0) == n && P.shape(1) == d);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t c = 0; c < d / 2; ++c) {
            const double omega = 1.0 / std::pow(10000.0, double(2 * c) / double(d));
            BOOST_TEST(std::abs(P(i, 2 * c) - std::sin(i * omega)) < 1e-12);
            BOOST_TEST(std::abs(P(i, 2 * c + 1) - std::cos(i * omega)) < 1e-12);
        }
}

BOOST_AUTO_TEST_CASE(dot_products_depend_only_on_the_distance)
{
    const Matrix P = attn::sinusoidal_positions<double>(40, 16);
    const Matrix G = matmul_t(P, P);
    for (std::size_t i = 0; i < 40; ++i)
        for (std::size_t j = 0; j <= i; ++j) BOOST_TEST(std::abs(G(i, j) - G(i - j, 0)) < 1e-10);
}

BOOST_AUTO_TEST_CASE(odd_width_is_rejected)
{
    BOOST_CHECK_THROW(attn::sinusoidal_positions<double>(4, 7), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(t5)

BOOST_AUTO_TEST_CASE(buckets_match_the_reference_implementation)
{
    // Values of Hugging Face's T5Attention._relative_position_bucket (bidirectional,
    // 32 buckets, max_distance 128) for relative positions j − i, worked out by hand
    // from its formula: exact below 8, then 8 + ⌊log(δ/8)/log(16)·8⌋, capped at 15;
    // keys after the query add 16.
    const std::vector<std::pair<std::int64_t, std::size_t>> cases = {
        {0, 0},     {-1, 1},    {-7, 7},    {-8, 8},    {-9, 8},   {-15, 9},   {-16, 10},
        {-31, 11},  {-32, 12},  {-64, 14},  {-127, 15}, {-128, 15}, {-1000, 15}, {1, 17},
        {7, 23},    {16, 26},   {1000, 31}};
    for (auto [relative, bucket] : cases)
        BOOST_TEST(attn::t5_bucket(relative, true, 32, 128) == bucket, "relative " << relative);
}

BOOST_AUTO_TEST_CASE(causal_buckets_put_every_later_key_in_bucket_zero)
{
    for (std::int64_t relative = 0; relative < 50; ++relative)
        BOOST_TEST(attn::t5_bucket(relative, false, 16, 16) == 0u);
    BOOST_TEST(attn::t5_bucket(-3, false, 16, 16) == 3u);
    BOOST_TEST(attn::t5_bucket(-15, false, 16, 16) == 15u);
    BOOST_TEST(attn::t5_bucket(-500, false, 16, 16) == 15u);
}

BOOST_AUTO_TEST_CASE(buckets_never_decrease_with_distance)
{
    for (bool bidirectional : {true, false}) {
        std::size_t previous = 0;
        for (std::int64_t distance = 0; distance < 3000; ++distance) {
            const std::size_t bucket = attn::t5_bucket(-distance, bidirectional, 32, 128);
            BOOST_TEST(bucket >= previous);
            BOOST_TEST(bucket < (bidirectional ? 16u : 32u));
            previous = bucket;
        }
    }
}

BOOST_AUTO_TEST_CASE(bias_looks_up_the_table)
{
    std::vector<double> table(16);
    std::iota(table.begin(), table.end(), 100.0);
    const Matrix B = attn::t5_bias<double>(20, table, false, 16);
    for (std::size_t i = 0; i < 20; ++i)
        for (std::size_t j = 0; j < 20; ++j)
            BOOST_TEST(B(i, j) ==
                       table[attn::t5_bucket(std::int64_t(j) - std::int64_t(i), false, 16, 16)]);
}

BOOST_AUTO_TEST_CASE(settings_without_an_exact_range_are_rejected)
{
    BOOST_CHECK_THROW(attn::t5_bucket(-3, false, 1, 128), std::invalid_argument);
    BOOST_CHECK_THROW(attn::t5_bucket(-3, true, 2, 128), std::invalid_argument);
    BOOST_CHECK_THROW(attn::t5_bucket(-3, false, 16, 8), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(alibi)

BOOST_AUTO_TEST_CASE(slopes_of_a_power_of_two_are_geometric)
{
    const std::vector<double> eight = attn::alibi_slopes(8);
    BOOST_REQUIRE(eight.size() == 8u);
    for (std::size_t k = 0; k < 8; ++k) BOOST_TEST(eight[k] == std::ldexp(1.0, -int(k + 1)));
    const std::vector<double> four = attn::alibi_slopes(4);
    const std::vector<double> expected = {0.25, 0.0625, 0.015625, 0.00390625};
    for (std::size_t k = 0; k < 4; ++k) BOOST_TEST(four[k] == expected[k]);
}

BOOST_AUTO_TEST_CASE(slopes_of_other_head_counts_follow_the_paper_code)
{
    // get_slopes(6) = get_slopes_power_of_2(4) + get_slopes(8)[0::2][:2]
    const std::vector<double> six = attn::alibi_slopes(6);
    const std::vector<double> expected = {1.0 / 4, 1.0 / 16, 1.0 / 64, 1.0 / 256, 1.0 / 2, 1.0 / 8};
    BOOST_REQUIRE(six.size() == 6u);
    for (std::size_t k = 0; k < 6; ++k) BOOST_TEST(std::abs(six[k] - expected[k]) < 1e-15);
    // 12 heads: the 8 slopes of 8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (every other of 16)
    const std::vector<double> twelve = attn::alibi_slopes(12);
    BOOST_REQUIRE(twelve.size() == 12u);
    for (std::size_t k = 0; k < 4; ++k)
        BOOST_TEST(std::abs(twelve[8 + k] - std::pow(2.0, -0.5 - double(k))) < 1e-15);
    BOOST_TEST(attn::alibi_slopes(1)[0] == 1.0 / 256);
}

BOOST_AUTO_TEST_CASE(zero_heads_are_rejected)
{
    BOOST_CHECK_THROW(attn::alibi_slopes(0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(bias_is_minus_slope_times_distance)
{
    const Matrix B = attn::alibi_bias<double>(9, 0.25);
    for (std::size_t i = 0; i < 9; ++i)
        for (std::size_t j = 0; j <= i; ++j) BOOST_TEST(B(i, j) == -0.25 * double(i - j));
}

BOOST_AUTO_TEST_CASE(biased_attention_equals_a_plain_loop)
{
    const auto in = random_inputs(7, 7, 4, 3, 1503);
    const Matrix bias = attn::alibi_bias<double>(7, 0.5);
    const attn::Mask causal = attn::causal_mask(7);
    const Matrix P = attn::biased_attention_weights(in.Q, in.K, bias, causal);
    for (std::size_t i = 0; i < 7; ++i) {
        double total = 0;
        std::vector<double> e(7, 0.0);
        for (std::size_t j = 0; j <= i; ++j) {
            double s = 0;
            for (std::size_t c = 0; c < 4; ++c) s += in.Q(i, c) * in.K(j, c);
            total += e[j] = std::exp(s / 2.0 - 0.5 * double(i - j));
        }
        for (std::size_t j = 0; j < 7; ++j) BOOST_TEST(std::abs(P(i, j) - e[j] / total) < 1e-13);
    }
}

BOOST_AUTO_TEST_CASE(zero_bias_is_masked_attention)
{
    const auto in = random_inputs(6, 6, 5, 2, 1504);
    const attn::Mask causal = attn::causal_mask(6);
    const Matrix P = attn::biased_attention_weights(in.Q, in.K, Matrix(xt::zeros<double>({6, 6})),
                                                    causal);
    check_close(P, attn::attention_weights(in.Q, in.K, causal), 0, 1e-15, "zero bias");
}

BOOST_AUTO_TEST_CASE(a_bias_of_the_wrong_shape_is_rejected)
{
    const auto in = random_inputs(6, 6, 5, 2, 1505);
    BOOST_CHECK_THROW(attn::biased_attention_weights(in.Q, in.K, Matrix(xt::zeros<double>({6, 5})),
                                                     attn::causal_mask(6)),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(rope)

BOOST_AUTO_TEST_CASE(rotates_like_the_textbook_formula)
{
    std::mt19937_64 rng(1506);
    const Matrix X = attn::random_normal<double>(11, 10, 1.0, rng);
    for (auto layout : {attn::RopeLayout::interleaved, attn::RopeLayout::split_halves})
        for (std::int64_t first : {std::int64_t(0), std::int64_t(5), std::int64_t(-3),
                                   std::int64_t(100000)})
            check_close(attn::rope(X, first, 10000, layout), rope_reference(X, first, 10000, layout),
                        1e-10, 1e-10, "rope vs formula");
}

BOOST_AUTO_TEST_CASE(one_pair_turns_by_the_position_in_radians)
{
    const Matrix x = {{1.0, 0.0}, {1.0, 0.0}, {1.0, 0.0}};  // d = 2: θ_0 = 1
    const Matrix y = attn::rope(x, 1);                       // positions 1, 2, 3
    for (std::size_t i = 0; i < 3; ++i) {
        BOOST_TEST(std::abs(y(i, 0) - std::cos(double(i + 1))) < 1e-15);
        BOOST_TEST(std::abs(y(i, 1) - std::sin(double(i + 1))) < 1e-15);
    }
}

BOOST_AUTO_TEST_CASE(layouts_agree_up_to_a_permutation_of_the_columns)
{
    std::mt19937_64 rng(1507);
    for (std::size_t d : {2u, 4u, 8u, 64u}) {
        const Matrix X = attn::random_normal<double>(13, d, 1.0, rng);  // split-halves order
        const std::vector<std::size_t> order = interleaving(d);
        const Matrix split = attn::rope(X, 3, 10000, attn::RopeLayout::split_halves);
        const Matrix interleaved =
            attn::rope(permute_columns(X, order), 3, 10000, attn::RopeLayout::interleaved);
        check_close(interleaved, permute_columns(split, order), 0, 1e-15, "layouts");
    }
}

BOOST_AUTO_TEST_CASE(scores_depend_only_on_the_distance)
{
    std::mt19937_64 rng(1508);
    const Matrix q = attn::random_normal<double>(10, 16, 1.0, rng);
    const Matrix k = attn::random_normal<double>(10, 16, 1.0, rng);
    for (auto layout : {attn::RopeLayout::interleaved, attn::RopeLayout::split_halves}) {
        // row i of q at position i (+ shift), row j of k at position 4 + j (+ shift)
        const Matrix S = matmul_t(attn::rope(q, 0, 10000, layout), attn::rope(k, 4, 10000, layout));
        for (std::int64_t shift : {std::int64_t(1), std::int64_t(37), std::int64_t(-20),
                                   std::int64_t(5000)}) {
            const Matrix S_shift = matmul_t(attn::rope(q, shift, 10000, layout),
                                            attn::rope(k, 4 + shift, 10000, layout));
            check_close(S_shift, S, 1e-9, 1e-9, "q_m·k_n depends on m − n only");
        }
    }
}

BOOST_AUTO_TEST_CASE(rotation_keeps_norms_and_backward_inverts_it)
{
    std::mt19937_64 rng(1509);
    const Matrix X = attn::random_normal<double>(9, 12, 1.0, rng);
    const Matrix Y = attn::rope(X, 17, 500);
    for (std::size_t i = 0; i < 9; ++i)
        BOOST_TEST(std::abs(xt::sum(xt::row(Y, i) * xt::row(Y, i))() -
                            xt::sum(xt::row(X, i) * xt::row(X, i))()) < 1e-12);
    check_close(attn::rope_backward(Y, 17, 500), X, 0, 1e-13, "inverse rotation");
    const Matrix at_zero = attn::rope(X, 0);  // row 0 is at position 0: not rotated
    for (std::size_t c = 0; c < 12; ++c) BOOST_TEST(at_zero(0, c) == X(0, c));
}

BOOST_AUTO_TEST_CASE(odd_width_and_bad_base_are_rejected)
{
    const Matrix X = xt::ones<double>({3, 5});
    BOOST_CHECK_THROW(attn::rope(X, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::rope(Matrix(xt::ones<double>({3, 4})), 0, 1.0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::rope_backward(X, 0), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(position_model)

BOOST_AUTO_TEST_CASE(gradients_match_finite_differences_for_every_scheme)
{
    for (attn::PositionScheme scheme : all_schemes) {
        attn::PositionModelShape shape;
        shape.scheme = scheme;
        shape.vocab = 5, shape.d_model = 8, shape.heads = 2, shape.layers = 2, shape.max_n = 9;
        shape.buckets = 8, shape.max_distance = 6;
        std::mt19937_64 rng(1510);
        attn::PositionModel<double> model = attn::init_position_model<double>(shape, rng);
        if (scheme == attn::PositionScheme::t5_bias)  // away from zero, so all terms count
            for (auto& table : model.relative_bias)
                table = attn::random_normal<double>(table.shape(0), table.shape(1), 0.5, rng);
        const attn::TaskExample example = attn::copy_back_example(7, shape.vocab, 2, rng);
        auto loss = [&] {
            const auto f = attn::position_model_forward(model, example.tokens);
            return attn::task_loss(f.logits, example.targets).loss;
        };
        attn::PositionModel<double> grad = attn::zero_position_model<double>(shape);
        const auto f = attn::position_model_forward(model, example.tokens);
        const auto scored = attn::task_loss(f.logits, example.targets);
        attn::position_model_backward(model, example.tokens, f, scored.d_logits, grad);
        auto params = attn::position_model_parameters(model);
        const auto grads = attn::position_model_parameters(grad);
        for (std::size_t p = 0; p < params.size(); ++p) {
            if (params[p]->size() == 0) continue;
            const Matrix numerical = attn::numerical_gradient(*params[p], loss);
            const double error = attn::relative_error(*grads[p], numerical);
            BOOST_TEST(error < 1e-6, attn::scheme_name(scheme) << " parameter " << p
                                                               << " relative error " << error);
        }
    }
}

BOOST_AUTO_TEST_CASE(without_positions_the_model_is_masked_attention)
{
    attn::PositionModelShape shape;
    std::mt19937_64 rng(1511);
    const attn::PositionModel<double> model = attn::init_position_model<double>(shape, rng);
    const std::vector<std::size_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6};
    const auto f = attn::position_model_forward(model, tokens);
    const Matrix X = attn::embed_positions(model, tokens);
    const Matrix Q = xt::linalg::dot(X, model.layers[0].W_q);
    const Matrix K = xt::linalg::dot(X, model.layers[0].W_k);
    const std::size_t d_k = shape.d_model / shape.heads;
    for (std::size_t h = 0; h < shape.heads; ++h)
        check_close(f.layers[0].weights[h],
                    attn::attention_weights<double>(attn::head_columns(Q, h, d_k),
                                                    attn::head_columns(K, h, d_k),
                                                    attn::causal_mask(tokens.size())),
                    0, 1e-14, "scheme none = chapter 2's causal attention");
}

BOOST_AUTO_TEST_CASE(rope_scores_ignore_a_shift_of_every_position)
{
    // one query five positions after six keys, then the same a hundred positions later
    std::mt19937_64 rng(1512);
    const Matrix q = attn::random_normal<double>(1, 8, 1.0, rng);
    const Matrix k = attn::random_normal<double>(6, 8, 1.0, rng);
    const Matrix near = matmul_t(attn::rope(q, 5), attn::rope(k, 0));
    const Matrix far = matmul_t(attn::rope(q, 105), attn::rope(k, 100));
    check_close(far, near, 1e-10, 1e-10, "same distances, same scores");
}

BOOST_AUTO_TEST_CASE(tasks_have_the_right_targets)
{
    std::mt19937_64 rng(1513);
    const attn::TaskExample copy = attn::copy_back_example(30, 16, 3, rng);
    for (std::size_t i = 0; i < 30; ++i) {
        BOOST_TEST(copy.targets[i] == (i < 3 ? attn::no_target : copy.tokens[i - 3]));
        BOOST_TEST(copy.sources[i] == (i < 3 ? attn::no_target : i - 3));
    }
    const attn::TaskExample marker = attn::last_marker_example(200, 16, 8, 0.25, rng);
    std::size_t last = attn::no_target, markers = 0;
    for (std::size_t i = 0; i < 200; ++i) {
        if (marker.tokens[i] < 8) last = i, ++markers;
        BOOST_TEST(marker.sources[i] == last);
        BOOST_TEST(marker.targets[i] == (last == attn::no_target ? attn::no_target
                                                                 : marker.tokens[last]));
    }
    BOOST_TEST(markers > 20u);
    BOOST_TEST(markers < 80u);
}

BOOST_AUTO_TEST_CASE(learned_table_refuses_longer_sequences)
{
    attn::PositionModelShape shape;
    shape.scheme = attn::PositionScheme::learned;
    shape.max_n = 8;
    std::mt19937_64 rng(1514);
    const auto model = attn::init_position_model<float>(shape, rng);
    BOOST_CHECK_THROW(attn::position_model_forward(model, std::vector<std::size_t>(9, 0)),
                      std::invalid_argument);
    BOOST_CHECK_NO_THROW(attn::position_model_forward(model, std::vector<std::size_t>(8, 0)));
}

BOOST_AUTO_TEST_CASE(rope_model_learns_to_copy_back)
{
    attn::PositionModelShape shape;
    shape.scheme = attn::PositionScheme::rope;
    std::mt19937_64 rng(1515);
    attn::PositionModel<float> model = attn::init_position_model<float>(shape, rng);
    const attn::PositionTask task{"copy", [](std::size_t n, std::mt19937_64& r) {
        return attn::copy_back_example(n, 16, 3, r);
    }};
    attn::PositionTraining config;
    config.steps = 300;
    attn::train_position_model(model, task, config, rng);
    std::mt19937_64 test_rng(1516);
    BOOST_TEST(attn::position_accuracy(model, task, 16, 50, test_rng) > 0.95);
    const attn::SourceAttention focus = attn::source_attention(model, task, 16, 10, test_rng);
    BOOST_TEST(focus.source > 2 * focus.rival);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(bad_arguments)

BOOST_AUTO_TEST_CASE(tasks_and_losses_reject_what_they_cannot_use)
{
    std::mt19937_64 rng(1517);
    BOOST_CHECK_THROW(attn::copy_back_example(5, 0, 1, rng), std::invalid_argument);
    BOOST_CHECK_THROW(attn::last_marker_example(5, 8, 8, 0.25, rng), std::invalid_argument);
    BOOST_CHECK_THROW(attn::last_marker_example(5, 8, 0, 0.25, rng), std::invalid_argument);
    BOOST_CHECK_THROW(attn::last_marker_example(5, 8, 4, 1.5, rng), std::invalid_argument);
    const Matrix logits = xt::zeros<double>({3, 4});
    BOOST_CHECK_THROW(attn::task_loss(logits, {0, 1}), std::invalid_argument);
    BOOST_CHECK_THROW(attn::task_loss(logits, {0, 1, 4}), std::invalid_argument);
    BOOST_CHECK_NO_THROW(attn::task_loss(logits, {0, attn::no_target, 3}));
    attn::PositionModelShape shape;
    shape.heads = 5;  // does not divide d_model = 32
    BOOST_CHECK_THROW(attn::zero_position_model<double>(shape), std::invalid_argument);
    const auto model = attn::zero_position_model<double>(attn::PositionModelShape{});
    BOOST_CHECK_THROW(attn::position_model_forward(model, {0, 16}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(a_loss_counts_only_positions_with_a_target)
{
    const Matrix logits = {{0.0, 3.0}, {5.0, 0.0}, {0.0, 1.0}};
    const auto scored = attn::task_loss(logits, {1, attn::no_target, 0});
    BOOST_TEST(scored.counted == 2u);
    BOOST_TEST(scored.correct == 1u);
    for (std::size_t c = 0; c < 2; ++c) BOOST_TEST(scored.d_logits(1, c) == 0.0);
    const double expected = std::log(1 + std::exp(-3.0)) + std::log(1 + std::exp(1.0));
    BOOST_TEST(std::abs(scored.loss - expected) < 1e-12);
}

BOOST_AUTO_TEST_SUITE_END()
