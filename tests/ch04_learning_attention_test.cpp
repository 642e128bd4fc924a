// Chapter 4: the backward pass of attention, gradient checks, and the tiny model trained on reversal.
#define BOOST_TEST_MODULE ch04_learning_attention
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/multi_head_attention.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"
#include "attn/tiny_model.hpp"
#include "test_support.hpp"

using test_support::check_close;
using test_support::scratch_dir;

namespace {

/// The model trained once with the chapter's default settings, shared by the training tests.
struct TrainedModel {
    attn::TinyModel<float> model;
    std::vector<attn::TrainingPoint> curve;
    TrainedModel()
    {
        std::mt19937_64 rng(20240611);
        model = attn::init_tiny_model<float>(attn::TinyModelShape{}, rng);
        curve = attn::train_reversal(model, attn::TrainingConfig{}, rng, [](std::size_t, const auto&) {});
    }
};

const TrainedModel& trained()
{
    static const TrainedModel instance;
    return instance;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(backward_pass)

BOOST_AUTO_TEST_CASE(cheap_softmax_backward_equals_the_full_jacobian_product)
{
    std::mt19937_64 rng(1);
    const xt::xtensor<double, 2> P = attn::softmax_rows(attn::random_normal<double>(3, 7, 2.0, rng));  // 3×7
    const xt::xtensor<double, 2> dP = attn::random_normal<double>(3, 7, 1.0, rng);
    const xt::xtensor<double, 2> dS = attn::softmax_rows_backward(P, dP);
    xt::xtensor<double, 2> expected = xt::zeros<double>({3, 7});
    for (std::size_t i = 0; i < 3; ++i) {
        const xt::xtensor<double, 1> p = xt::row(P, i);
        const xt::xtensor<double, 2> J = attn::softmax_jacobian(p);
        for (std::size_t l = 0; l < 7; ++l)
            for (std::size_t j = 0; j < 7; ++j) expected(i, l) += J(j, l) * dP(i, j);
    }
    check_close(dS, expected, 1e-12, 1e-14, "dS");
}

BOOST_AUTO_TEST_CASE(softmax_backward_rows_sum_to_zero)
{
    // Adding a constant to every score of a row changes nothing, so dS sums to zero along each row.
    std::mt19937_64 rng(2);
    const xt::xtensor<double, 2> P = attn::softmax_rows(attn::random_normal<double>(4, 5, 1.0, rng));
    const xt::xtensor<double, 2> dS = attn::softmax_rows_backward(P, attn::random_normal<double>(4, 5, 1.0, rng));
    for (std::size_t i = 0; i < 4; ++i) BOOST_TEST(std::abs(double(xt::sum(xt::row(dS, i))())) < 1e-14);
}

BOOST_AUTO_TEST_CASE(a_fully_masked_row_passes_back_zeros)
{
    const xt::xtensor<double, 2> P = {{0.0, 0.0, 0.0}, {0.2, 0.3, 0.5}};
    const xt::xtensor<double, 2> dP = {{1.0, -2.0, 3.0}, {1.0, -2.0, 3.0}};
    const xt::xtensor<double, 2> dS = attn::softmax_rows_backward(P, dP);
    for (std::size_t j = 0; j < 3; ++j) BOOST_TEST(dS(0, j) == 0.0);
    BOOST_TEST(std::abs(dS(1, 1)) > 0.1);
}

BOOST_AUTO_TEST_CASE(numerical_gradient_of_a_quadratic_is_exact)
{
    xt::xtensor<double, 2> x = {{1.0, -2.0}, {0.5, 3.0}};
    auto loss = [&] { return double(xt::sum(x * x * x)()); };  // d/dx x³ = 3x²
    const xt::xtensor<double, 2> expected = 3.0 * x * x;
    check_close(attn::numerical_gradient(x, loss), expected, 1e-9, 1e-9, "d(x³)");
    BOOST_TEST(x(0, 1) == -2.0);  // restored
}

/// Every error of a gradient check is below `bound`, and the check covered `count` gradients.
void check_errors(const attn::GradientErrors& errors, std::size_t count, double bound = 1e-6)
{
    BOOST_TEST(errors.size() == count);
    for (const auto& [name, error] : errors) BOOST_TEST(error < bound, name << ": relative error " << error);
}

BOOST_AUTO_TEST_CASE(attention_gradients_match_central_differences)
{
    std::mt19937_64 rng(3);
    const auto Q = attn::random_normal<double>(5, 4, 1.0, rng);  // n×d_k, n ≠ m
    const auto K = attn::random_normal<double>(7, 4, 1.0, rng);  // m×d_k
    const auto V = attn::random_normal<double>(7, 3, 1.0, rng);  // m×d_v
    const auto G = attn::random_normal<double>(5, 3, 1.0, rng);  // n×d_v
    check_errors(attn::check_attention_gradients(Q, K, V, G, xt::ones<bool>({5, 7})), 3);
}

BOOST_AUTO_TEST_CASE(under_a_mask_hidden_keys_get_zero_gradient_and_the_rest_match)
{
    std::mt19937_64 rng(31);
    const std::size_t n = 6, m = 8;
    const auto Q = attn::random_normal<double>(n, 4, 1.0, rng);  // n×d_k
    const auto K = attn::random_normal<double>(m, 4, 1.0, rng);  // m×d_k
    const auto V = attn::random_normal<double>(m, 3, 1.0, rng);  // m×d_v
    const auto G = attn::random_normal<double>(n, 3, 1.0, rng);  // n×d_v
    // Causal over the first 6 keys, keys 6 and 7 padding (hidden from every query),
    // query 5 sees nothing at all.
    attn::Mask mask = xt::zeros<bool>({n, m});
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j <= i && j < 6; ++j) mask(i, j) = true;
    xt::row(mask, 5) = false;
    check_errors(attn::check_attention_gradients(Q, K, V, G, mask), 3);
    // Exactly zero: a hidden key gets no gradient, nor does a query that sees nothing,
    // nor any masked score.
    const auto grad = attn::attention_backward(Q, K, V, attn::attention_weights(Q, K, mask), G);
    for (std::size_t j : {6, 7}) {
        for (std::size_t c = 0; c < 4; ++c) BOOST_TEST(grad.dK(j, c) == 0.0, "dK(" << j << ", " << c << ")");
        for (std::size_t c = 0; c < 3; ++c) BOOST_TEST(grad.dV(j, c) == 0.0, "dV(" << j << ", " << c << ")");
    }
    for (std::size_t c = 0; c < 4; ++c) BOOST_TEST(grad.dQ(5, c) == 0.0, "dQ(5, " << c << ")");
    const xt::xtensor<double, 2> P = attn::attention_weights(Q, K, mask);
    const xt::xtensor<double, 2> dP = attn::random_normal<double>(n, m, 1.0, rng);
    const xt::xtensor<double, 2> dS = attn::softmax_rows_backward(P, dP);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < m; ++j)
            if (!mask(i, j)) BOOST_TEST(dS(i, j) == 0.0, "dS(" << i << ", " << j << ")");
    // ...and the visible keys do get a gradient: the check is not passing on zeros.
    BOOST_TEST(std::abs(grad.dK(0, 0)) > 1e-6);
    BOOST_TEST(std::abs(grad.dV(4, 0)) > 1e-6);  // key 5: only query 5 may see it
}

BOOST_AUTO_TEST_CASE(a_wrong_gradient_fails_the_check)
{
    // The check must be able to fail: dropping the 1/√d_k from dQ is caught.
    std::mt19937_64 rng(4);
    xt::xtensor<double, 2> Q = attn::random_normal<double>(5, 4, 1.0, rng);
    const xt::xtensor<double, 2> K = attn::random_normal<double>(7, 4, 1.0, rng);
    const xt::xtensor<double, 2> V = attn::random_normal<double>(7, 3, 1.0, rng);
    const xt::xtensor<double, 2> G = attn::random_normal<double>(5, 3, 1.0, rng);
    auto loss = [&] { return double(xt::sum(G * attn::scaled_dot_product_attention(Q, K, V))()); };
    const xt::xtensor<double, 2> unscaled = attn::attention_backward(Q, K, V, attn::attention_weights(Q, K), G).dQ * 2.0;
    BOOST_TEST(attn::relative_error(unscaled, attn::numerical_gradient(Q, loss)) > 0.1);
}

BOOST_AUTO_TEST_CASE(layer_forward_equals_chapter_1_per_head)
{
    std::mt19937_64 rng(5);
    const std::size_t n = 6, d = 8, h = 2, d_k = 4;
    attn::AttentionLayer<double> layer{h, attn::random_normal<double>(d, d, 0.35, rng),
                                       attn::random_normal<double>(d, d, 0.35, rng),
                                       attn::random_normal<double>(d, d, 0.35, rng),
                                       attn::random_normal<double>(d, d, 0.35, rng)};
    const xt::xtensor<double, 2> X = attn::random_normal<double>(n, d, 1.0, rng);
    const auto f = attn::attention_layer_forward(layer, X);
    // Independently: project, split by columns, attend with the naive loop, concatenate, project.
    const xt::xtensor<double, 2> Q = xt::linalg::dot(X, layer.W_q), K = xt::linalg::dot(X, layer.W_k),
                                 V = xt::linalg::dot(X, layer.W_v);
    xt::xtensor<double, 2> concat = xt::zeros<double>({n, d});
    for (std::size_t head = 0; head < h; ++head) {
        const auto cols = [&](const xt::xtensor<double, 2>& M) {
            return xt::xtensor<double, 2>(xt::view(M, xt::all(), xt::range(head * d_k, (head + 1) * d_k)));
        };
        xt::view(concat, xt::all(), xt::range(head * d_k, (head + 1) * d_k)) =
            test_support::naive_attention(cols(Q), cols(K), cols(V));
    }
    const xt::xtensor<double, 2> expected = xt::linalg::dot(concat, layer.W_o);
    check_close(f.output, expected, 1e-12, 1e-12, "layer output");
    for (const auto& P : f.weights)
        for (std::size_t i = 0; i < n; ++i) BOOST_TEST(std::abs(double(xt::sum(xt::row(P, i))()) - 1.0) < 1e-12);
}

BOOST_AUTO_TEST_CASE(layer_forward_equals_chapter_3_multi_head_attention)
{
    std::mt19937_64 rng(13);
    const std::size_t n = 7, d = 12;
    for (std::size_t h : {1, 2, 3, 4}) {
        const attn::AttentionLayer<double> layer{h, attn::random_normal<double>(d, d, 0.3, rng),
                                                 attn::random_normal<double>(d, d, 0.3, rng),
                                                 attn::random_normal<double>(d, d, 0.3, rng),
                                                 attn::random_normal<double>(d, d, 0.3, rng)};
        const xt::xtensor<double, 2> X = attn::random_normal<double>(n, d, 1.0, rng);
        const xt::xtensor<double, 2> expected =
            attn::multi_head_attention(X, X, layer.W_q, layer.W_k, layer.W_v, layer.W_o, h);
        check_close(attn::attention_layer_forward(layer, X).output, expected, 1e-12, 1e-12,
                    "h = " + std::to_string(h));
    }
}

BOOST_AUTO_TEST_CASE(layer_gradients_match_central_differences)
{
    std::mt19937_64 rng(6);
    const std::size_t n = 5, d = 6;
    attn::AttentionLayer<double> layer{3, attn::random_normal<double>(d, d, 0.4, rng),
                                       attn::random_normal<double>(d, d, 0.4, rng),
                                       attn::random_normal<double>(d, d, 0.4, rng),
                                       attn::random_normal<double>(d, d, 0.4, rng)};
    const xt::xtensor<double, 2> X = attn::random_normal<double>(n, d, 1.0, rng);
    const xt::xtensor<double, 2> G = attn::random_normal<double>(n, d, 1.0, rng);
    check_errors(attn::check_layer_gradients(layer, X, G), 5);
}

BOOST_AUTO_TEST_CASE(model_gradients_match_central_differences)
{
    std::mt19937_64 rng(7);
    const attn::TinyModelShape shape{6, 5, 8, 2, 2};
    const attn::TinyModel<double> model = attn::init_tiny_model<double>(shape, rng);
    const attn::ReversalExample example = attn::reversal_example(shape.n, shape.vocab, rng);
    check_errors(attn::check_model_gradients(model, example), 2 + 4 * shape.layers + 1);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tiny_model)

BOOST_AUTO_TEST_CASE(cross_entropy_equals_minus_log_softmax)
{
    const xt::xtensor<double, 2> logits = {{1.0, 2.0, 0.5}, {-1.0, 0.0, 3.0}};
    const auto scored = attn::cross_entropy(logits, {1, 0});
    const double expected = -std::log(std::exp(2.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(0.5))) -
                            std::log(std::exp(-1.0) / (std::exp(-1.0) + std::exp(0.0) + std::exp(3.0)));
    BOOST_TEST(std::abs(scored.loss - expected) < 1e-12);
    BOOST_TEST(scored.correct == 1u);
    for (std::size_t i = 0; i < 2; ++i) BOOST_TEST(std::abs(double(xt::sum(xt::row(scored.d_logits, i))())) < 1e-12);
}

BOOST_AUTO_TEST_CASE(cross_entropy_stays_finite_for_confident_mistakes)
{
    const xt::xtensor<float, 2> logits = {{1e4f, -1e4f}};
    const auto scored = attn::cross_entropy(logits, {1});
    BOOST_TEST(std::isfinite(scored.loss));
    BOOST_TEST(std::abs(scored.loss - 2e4) < 1.0);
}

BOOST_AUTO_TEST_CASE(reversal_targets_are_the_tokens_reversed)
{
    std::mt19937_64 rng(8);
    const auto example = attn::reversal_example(10, 26, rng);
    const auto ideal = attn::reversal_ideal_keys(10);
    for (std::size_t i = 0; i < 10; ++i) {
        BOOST_TEST(example.targets[i] == example.tokens[9 - i]);
        BOOST_TEST(example.targets[i] == example.tokens[ideal[i]]);
    }
}

BOOST_AUTO_TEST_CASE(letters_convert_both_ways)
{
    const auto tokens = attn::letter_tokens("azby");
    BOOST_TEST(tokens == (std::vector<std::size_t>{0, 25, 1, 24}), boost::test_tools::per_element());
    BOOST_TEST(attn::token_letters(tokens) == (std::vector<std::string>{"a", "z", "b", "y"}),
               boost::test_tools::per_element());
    BOOST_CHECK_THROW(attn::letter_tokens("Abc"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(adam_first_step_moves_each_parameter_by_the_learning_rate)
{
    // With bias correction, the first step is α·g/(|g| + ε): ±α for every nonzero gradient.
    std::mt19937_64 rng(9);
    const attn::TinyModelShape shape{4, 3, 4, 2, 1};
    attn::TinyModel<double> model = attn::init_tiny_model<double>(shape, rng);
    const attn::TinyModel<double> before = model;
    attn::TinyModel<double> grad = attn::init_tiny_model<double>(shape, rng);  // any nonzero gradient
    attn::Adam<double> adam(model, 0.01);
    adam.step(model, grad);
    const auto now = attn::parameters(model), g = attn::parameters(grad);
    const auto was = attn::parameters(before);
    for (std::size_t p = 0; p < now.size(); ++p)
        for (std::size_t k = 0; k < now[p].second->size(); ++k) {
            const double moved = now[p].second->data()[k] - was[p].second->data()[k];
            const double sign = g[p].second->data()[k] > 0 ? 1.0 : -1.0;
            BOOST_TEST(std::abs(moved + 0.01 * sign) < 1e-6);
        }
}

BOOST_AUTO_TEST_CASE(a_saved_model_reads_back_bit_for_bit)
{
    std::mt19937_64 rng(10);
    const attn::TinyModel<float> model = attn::init_tiny_model<float>(attn::TinyModelShape{}, rng);
    const auto dir = scratch_dir("ch04_test_save");
    attn::save_model(dir / "model.txt", model);
    const attn::TinyModel<float> loaded = attn::load_model<float>(dir / "model.txt");
    const auto a = attn::parameters(model), b = attn::parameters(loaded);
    BOOST_REQUIRE(a.size() == b.size());
    for (std::size_t p = 0; p < a.size(); ++p) BOOST_TEST((*a[p].second == *b[p].second), a[p].first);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_bad_model_file_is_rejected)
{
    const auto dir = scratch_dir("ch04_test_bad");
    std::ofstream(dir / "model.txt") << "tiny-attention-model 1\nshape 3 2 4 2 1\ntoken_embedding 3 4\n1 2 3\n";
    BOOST_CHECK_THROW(attn::load_model<float>(dir / "model.txt"), std::runtime_error);
    BOOST_CHECK_THROW(attn::load_model<float>(dir / "missing.txt"), std::runtime_error);
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(snapshots_read_back)
{
    std::mt19937_64 rng(11);
    const attn::TinyModel<float> model = attn::init_tiny_model<float>(attn::TinyModelShape{}, rng);
    const auto probe = attn::letter_tokens("attentions");
    const std::vector<attn::AttentionSnapshot> saved = {{0, attn::attention_maps(model, probe)},
                                                        {20, attn::attention_maps(model, probe)}};
    const auto dir = scratch_dir("ch04_test_snapshots");
    attn::save_snapshots(dir / "snapshots.txt", probe, saved);
    std::vector<std::size_t> read_probe;
    const auto loaded = attn::load_snapshots(dir / "snapshots.txt", read_probe);
    BOOST_TEST(read_probe == probe, boost::test_tools::per_element());
    BOOST_REQUIRE(loaded.size() == 2u);
    BOOST_TEST(loaded[1].step == 20u);
    for (std::size_t l = 0; l < 2; ++l)
        for (std::size_t h = 0; h < 2; ++h) BOOST_TEST((loaded[1].maps[l][h] == saved[1].maps[l][h]));
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(training_is_deterministic_for_a_seed)
{
    auto train = [] {
        std::mt19937_64 rng(12);
        attn::TinyModel<float> model = attn::init_tiny_model<float>(attn::TinyModelShape{}, rng);
        attn::TrainingConfig config;
        config.steps = 20;
        attn::train_reversal(model, config, rng, [](std::size_t, const auto&) {});
        return model;
    };
    const auto a = train(), b = train();
    BOOST_TEST((a.W_out == b.W_out));
    BOOST_TEST((a.layers[1].W_q == b.layers[1].W_q));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(training)

BOOST_AUTO_TEST_CASE(loss_falls_below_0_01_within_the_step_budget)
{
    const auto& curve = trained().curve;
    BOOST_TEST(curve.front().loss > 2.0);  // starts near chance (ln 26 ≈ 3.26) or worse
    BOOST_TEST(curve.back().loss < 0.01);
    BOOST_TEST(curve.back().step + 1 == attn::TrainingConfig{}.steps);
}

BOOST_AUTO_TEST_CASE(held_out_accuracy_is_above_99_percent)
{
    std::mt19937_64 heldout(777);
    const attn::Evaluation evaluation = attn::evaluate_reversal(trained().model, 500, heldout);
    BOOST_TEST(evaluation.token_accuracy > 0.99);
    BOOST_TEST(evaluation.sequence_accuracy > 0.95);
}

BOOST_AUTO_TEST_CASE(a_head_attends_along_the_anti_diagonal)
{
    std::mt19937_64 rng(778);
    const auto agreement = attn::ideal_key_agreement(trained().model, attn::reversal_ideal_keys(10), 100, rng);
    double best = 0;
    for (const auto& layer : agreement)
        for (double a : layer) best = std::max(best, a);
    BOOST_TEST(best > 0.9);  // the largest weight is on key n−1−i for more than 90% of queries
}

BOOST_AUTO_TEST_CASE(an_untrained_model_does_not_attend_along_the_anti_diagonal)
{
    std::mt19937_64 rng(20240611);
    const attn::TinyModel<float> model = attn::init_tiny_model<float>(attn::TinyModelShape{}, rng);
    const auto agreement = attn::ideal_key_agreement(model, attn::reversal_ideal_keys(10), 100, rng);
    for (const auto& layer : agreement)
        for (double a : layer) BOOST_TEST(a < 0.5);
}

BOOST_AUTO_TEST_SUITE_END()
