// Chapter 14: the efficiency zoo.
#define BOOST_TEST_MODULE ch14_efficiency_zoo
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>
#include <set>
#include <stdexcept>
#include <string>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/long_range.hpp"
#include "attn/random.hpp"
#include "attn/zoo.hpp"
#include "test_support.hpp"

using test_support::as_type;
using test_support::check_close;

namespace {

attn::ZooInputs zoo_inputs(std::size_t n, std::uint64_t seed, std::size_t d = 64)
{
    const test_support::Inputs in = test_support::random_inputs(n, d, d, seed);
    return {as_type<float>(in.Q), as_type<float>(in.K), as_type<float>(in.V)};
}

/// The mechanism of the zoo with this name.
const attn::Mechanism& find(const std::vector<attn::Mechanism>& zoo, const std::string& name)
{
    for (const attn::Mechanism& m : zoo)
        if (m.name == name) return m;
    throw std::logic_error("no mechanism " + name);
}

/// A model trained briefly on the far task with dense attention (n = 32).
attn::TinyModel<float> briefly_trained_model(std::uint64_t seed, std::size_t steps = 20)
{
    const auto zoo = attn::zoo_mechanisms(attn::short_sequence_parameters(32));
    std::mt19937_64 rng(seed);
    attn::TinyModel<float> model = attn::recall_model(32, rng);
    attn::TrainingConfig config;
    config.steps = steps;
    config.batch = 4;
    attn::train_recall(model, true, zoo[0].weights, config, rng);
    return model;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(efficiency_zoo)

BOOST_AUTO_TEST_CASE(relative_error_is_zero_for_equal_outputs_and_scale_free)
{
    const auto in = zoo_inputs(10, 1);
    BOOST_TEST(attn::relative_error(in.Q, in.Q) == 0.0);
    const xt::xtensor<float, 2> zero = xt::zeros<float>(in.Q.shape());
    BOOST_TEST(attn::relative_error(zero, in.Q) == 1.0, boost::test_tools::tolerance(1e-12));
    const xt::xtensor<float, 2> Q2 = in.Q * 2.0f, K2 = in.K * 2.0f;
    BOOST_TEST(attn::relative_error(in.K, in.Q) == attn::relative_error(K2, Q2), boost::test_tools::tolerance(1e-6));
    BOOST_CHECK_THROW(attn::relative_error(in.Q, xt::xtensor<float, 2>(xt::zeros<float>({3, 3}))), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(dense_attention_comes_first_and_every_name_is_unique)
{
    const auto zoo = attn::zoo_mechanisms();
    BOOST_REQUIRE(zoo.size() == 12u);
    BOOST_TEST(zoo.front().name == "dense (ch. 1)");
    BOOST_TEST((zoo.front().exact == attn::Exact::full));
    std::set<std::string> names;
    for (const attn::Mechanism& m : zoo) names.insert(m.name);
    BOOST_TEST(names.size() == zoo.size());
}

BOOST_AUTO_TEST_CASE(every_mechanism_gives_finite_outputs_of_the_right_shape)
{
    const auto in = zoo_inputs(256, 2);
    for (const attn::Mechanism& mechanism : attn::zoo_mechanisms()) {
        const xt::xtensor<float, 2> O = mechanism.prepare(in, 1)();
        BOOST_TEST_CONTEXT(mechanism.name)
        {
            BOOST_TEST(O.shape(0) == 256u);
            BOOST_TEST(O.shape(1) == 64u);
            BOOST_TEST(test_support::all_finite(O));
        }
    }
}

BOOST_AUTO_TEST_CASE(the_thread_count_does_not_change_the_output)
{
    const auto in = zoo_inputs(512, 5);  // whole blocks, an even number of buckets
    for (const attn::Mechanism& mechanism : attn::zoo_mechanisms()) {
        const xt::xtensor<float, 2> one = mechanism.prepare(in, 1)();
        const xt::xtensor<float, 2> two = mechanism.prepare(in, 2)();
        BOOST_TEST_CONTEXT(mechanism.name) { BOOST_TEST(attn::relative_error(two, one) < 1e-6); }
    }
}

BOOST_AUTO_TEST_CASE(exact_mechanisms_have_rounding_error_only)
{
    const test_support::Inputs in = test_support::random_inputs(300, 64, 64, 3);
    const attn::ZooInputs f{as_type<float>(in.Q), as_type<float>(in.K), as_type<float>(in.V)};
    const auto full = as_type<float>(test_support::naive_attention(in.Q, in.K, in.V));
    const auto causal = as_type<float>(
        test_support::naive_attention(in.Q, in.K, in.V, [](std::size_t i, std::size_t j) { return j <= i; }));
    for (const attn::Mechanism& mechanism : attn::zoo_mechanisms()) {
        if (mechanism.family != "exact") continue;
        const auto& expected = mechanism.exact == attn::Exact::causal ? causal : full;
        BOOST_TEST_CONTEXT(mechanism.name) { BOOST_TEST(attn::relative_error(mechanism.prepare(f, 1)(), expected) < 1e-5); }
    }
}

BOOST_AUTO_TEST_CASE(one_chunk_lsh_attention_equals_chapter_12s_shared_qk_reference)
{
    const auto in = zoo_inputs(128, 4);
    check_close(attn::lsh_attention(in.Q, in.V, 4, 2, 128, 7), attn::shared_qk_attention(in.Q, in.V), 1e-4, 1e-5,
                "one chunk");
}

BOOST_AUTO_TEST_CASE(the_reformer_uses_chapter_12s_bucket_rule)
{
    BOOST_TEST(attn::reformer_buckets(4096) == 128u);
    BOOST_TEST(attn::reformer_buckets(256) == 8u);
    BOOST_TEST(attn::reformer_buckets(96) == 2u);  // 3, rounded down to an even number
    BOOST_TEST(attn::reformer_buckets(16) == 2u);
}

BOOST_AUTO_TEST_CASE(implied_weights_times_v_equal_each_kernel)
{
    // The patterns, exact attention, Linformer and Performer: weights·V is their output.
    const std::size_t n = 128;
    const attn::ZooParameters p = attn::short_sequence_parameters(n);
    const auto in = zoo_inputs(n, 6, 16);
    for (const attn::Mechanism& mechanism : attn::zoo_mechanisms(p)) {
        if (mechanism.family == "hashing") continue;  // its weights hash Q and K apart
        const xt::xtensor<float, 2> P = mechanism.weights(in.Q, in.K);  // n×n
        const xt::xtensor<float, 2> O = xt::linalg::dot(P, in.V);
        BOOST_TEST_CONTEXT(mechanism.name)
        {
            BOOST_TEST(attn::relative_error(O, mechanism.prepare(in, 1)()) < 1e-4);
        }
    }
}

BOOST_AUTO_TEST_CASE(weights_of_the_last_queries_are_the_last_rows_of_all_weights)
{
    const std::size_t n = 64, q = 8;
    const auto in = zoo_inputs(n, 7, 16);
    const xt::xtensor<float, 2> last = xt::view(in.Q, xt::range(n - q, n), xt::all());
    for (const attn::Mechanism& mechanism : attn::zoo_mechanisms(attn::short_sequence_parameters(n))) {
        const xt::xtensor<float, 2> all = mechanism.weights(in.Q, in.K);
        const xt::xtensor<float, 2> expected = xt::view(all, xt::range(n - q, n), xt::all());
        BOOST_TEST_CONTEXT(mechanism.name) { check_close(mechanism.weights(last, in.K), expected, 1e-5, 1e-7); }
    }
}

BOOST_AUTO_TEST_CASE(a_pattern_misses_exactly_its_weight_error)
{
    const std::size_t n = 128;
    const auto in = zoo_inputs(n, 8, 16);
    const auto zoo = attn::zoo_mechanisms(attn::short_sequence_parameters(n));
    const xt::xtensor<float, 2> full = attn::attention_weights(in.Q, in.K);
    const xt::xtensor<float, 2> causal = attn::attention_weights(in.Q, in.K, attn::causal_mask(n));
    for (const attn::Mechanism& mechanism : zoo) {
        const auto& exact = mechanism.exact == attn::Exact::causal ? causal : full;
        const attn::WeightMiss miss = attn::weight_miss(mechanism.weights(in.Q, in.K), exact);
        BOOST_TEST_CONTEXT(mechanism.name)
        {
            if (mechanism.family == "exact") BOOST_TEST(miss.weight_error < 1e-6);
            if (mechanism.family == "pattern") {
                BOOST_TEST(miss.missed_mass > 0.1);  // a pattern of n/8 keys on random inputs
                BOOST_TEST(miss.missed_mass == miss.weight_error, boost::test_tools::tolerance(1e-4));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(weight_miss_counts_an_empty_row_as_all_missed)
{
    const xt::xtensor<float, 2> exact = {{0.25f, 0.75f}, {0.5f, 0.5f}};
    const xt::xtensor<float, 2> approx = {{0.0f, 0.0f}, {0.5f, 0.5f}};
    const attn::WeightMiss miss = attn::weight_miss(approx, exact);
    BOOST_TEST(miss.missed_mass == 0.5, boost::test_tools::tolerance(1e-12));   // (1 + 0) / 2
    BOOST_TEST(miss.weight_error == 0.25, boost::test_tools::tolerance(1e-12));  // (½ + 0) / 2
    BOOST_CHECK_THROW(attn::weight_miss(approx, xt::xtensor<float, 2>(xt::zeros<float>({3, 2}))),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(shared_bucket_mask_lets_a_query_see_exactly_its_bucket)
{
    const std::size_t n = 96, rounds = 2;
    const auto in = zoo_inputs(n, 9, 16);
    const attn::Mask mask = attn::shared_bucket_mask(in.Q, in.K, rounds, 3);
    const std::size_t b = attn::reformer_buckets(n);
    const auto bq = attn::lsh_buckets(attn::unit_keys(in.Q), b, rounds, 3);
    const auto bk = attn::lsh_buckets(attn::unit_keys(in.K), b, rounds, 3);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j) {
            const bool shared = bq(0, i) == bk(0, j) || bq(1, i) == bk(1, j);
            BOOST_TEST(mask(i, j) == shared);
        }
    // with Q = K every query shares its bucket with its own key
    const attn::Mask self = attn::shared_bucket_mask(in.Q, in.Q, rounds, 3);
    for (std::size_t i = 0; i < n; ++i) BOOST_TEST(self(i, i));
}

BOOST_AUTO_TEST_CASE(recall_examples_hold_each_key_once_and_ask_for_it_once)
{
    using V = attn::RecallVocabulary;
    std::mt19937_64 rng(10);
    for (const bool far : {true, false})
        for (int trial = 0; trial < 20; ++trial) {
            const std::size_t n = 64;
            const attn::RecallExample e = attn::recall_example(n, far, rng);
            BOOST_REQUIRE(e.tokens.size() == n);
            BOOST_REQUIRE(e.answers.size() == V::keys);
            std::set<std::size_t> asked;
            for (std::size_t q = 0; q < V::keys; ++q) {
                const std::size_t question = e.tokens[n - V::keys + q];
                BOOST_REQUIRE(question >= V::question(0));
                const std::size_t key = question - V::question(0);
                asked.insert(key);
                // the answer is a pair of that key, and it stands in the sequence exactly once
                const std::size_t pair = e.answers[q];
                BOOST_TEST((pair - V::fillers) / V::values == key);
                std::size_t where = n, count = 0;
                for (std::size_t i = 0; i < n - V::keys; ++i)
                    if (e.tokens[i] == pair) where = i, ++count;
                BOOST_TEST(count == 1u);
                if (!far) BOOST_TEST(where >= n - 2 * V::keys);  // just before the questions
            }
            BOOST_TEST(asked.size() == V::keys);
        }
    BOOST_CHECK_THROW(attn::recall_example(15, true, rng), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(score_answers_scores_only_the_questions)
{
    std::mt19937_64 rng(11);
    const std::size_t n = 20, vocab = attn::RecallVocabulary::size;
    const xt::xtensor<float, 2> logits = attn::random_normal<float>(n, vocab, 1.0, rng);
    const std::vector<std::size_t> answers = {16, 17, 18, 19, 20, 21, 22, 23};
    const attn::SequenceLoss<float> scored = attn::score_answers(logits, answers);
    const xt::xtensor<float, 2> asked = xt::view(logits, xt::range(n - 8, n), xt::all());
    const attn::SequenceLoss<float> expected = attn::cross_entropy(asked, answers);
    BOOST_TEST(scored.loss == expected.loss, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(scored.correct == expected.correct);
    for (std::size_t i = 0; i < n - 8; ++i)
        for (std::size_t c = 0; c < vocab; ++c) BOOST_TEST(scored.d_logits(i, c) == 0.0f);
}

BOOST_AUTO_TEST_CASE(the_forward_pass_with_dense_weights_is_chapter_4s)
{
    std::mt19937_64 rng(12);
    const attn::TinyModel<float> model = attn::recall_model(32, rng);
    const attn::RecallExample e = attn::recall_example(32, true, rng);
    const auto zoo = attn::zoo_mechanisms(attn::short_sequence_parameters(32));
    const xt::xtensor<float, 2> expected = attn::model_forward(model, e.tokens).logits;
    const attn::MechanismAttention every_row(zoo[0].weights, 32), questions_only(zoo[0].weights, 8);
    check_close(attn::model_forward(model, e.tokens, every_row).logits, expected, 1e-5, 1e-6, "every row");
    // one layer: the questions' logits do not depend on the other rows' attention
    const xt::xtensor<float, 2> questions = attn::model_forward(model, e.tokens, questions_only).logits;
    check_close(xt::xtensor<float, 2>(xt::view(questions, xt::range(24, 32), xt::all())),
                xt::xtensor<float, 2>(xt::view(expected, xt::range(24, 32), xt::all())), 1e-5, 1e-6,
                "the questions");
    BOOST_CHECK_THROW(attn::model_forward(model, e.tokens, attn::MechanismAttention(zoo[0].weights, 33)),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(the_backward_pass_of_the_attending_rows_is_chapter_4s_on_all_rows)
{
    // P is zero outside the last 8 rows; dO is anything, zero rows included
    const std::size_t n = 32, rows = 8;
    const auto zoo = attn::zoo_mechanisms(attn::short_sequence_parameters(n));
    const attn::ZooInputs in = zoo_inputs(n, 20, 16);
    xt::xtensor<float, 2> dO = zoo_inputs(n, 21, 16).V;  // n×d_v
    xt::view(dO, xt::range(0, 3), xt::all()) = 0.0f;
    for (const char* name : {"dense (ch. 1)", "sliding window (ch. 6)", "BigBird (ch. 9)"}) {
        const attn::MechanismAttention questions(find(zoo, name).weights, rows);
        const xt::xtensor<float, 2> P = questions.weights(in.Q, in.K);  // n×n
        const auto rows_only = questions.backward(in.Q, in.K, in.V, P, dO);
        const auto all_rows = attn::attention_backward(in.Q, in.K, in.V, P, dO);
        check_close(rows_only.dQ, all_rows.dQ, 1e-5, 1e-6, std::string(name) + " dQ");
        check_close(rows_only.dK, all_rows.dK, 1e-5, 1e-6, std::string(name) + " dK");
        check_close(rows_only.dV, all_rows.dV, 1e-5, 1e-6, std::string(name) + " dV");
        BOOST_TEST(xt::amax(xt::abs(xt::view(rows_only.dQ, xt::range(0, n - rows), xt::all())))() ==
                   0.0f);
    }
}

BOOST_AUTO_TEST_CASE(dense_attention_swapped_in_scores_what_the_model_scores_itself)
{
    const attn::TinyModel<float> model = briefly_trained_model(13);
    const auto zoo = attn::zoo_mechanisms(attn::short_sequence_parameters(32));
    std::mt19937_64 swap_rng(14), own_rng(14);
    const double swapped = attn::recall_accuracy(model, true, zoo[0].weights, 100, swap_rng);
    std::size_t right = 0;  // the model's own forward pass, chapter 4's
    for (int s = 0; s < 100; ++s) {
        const attn::RecallExample e = attn::recall_example(32, true, own_rng);
        right += attn::score_answers(attn::model_forward(model, e.tokens).logits, e.answers).correct;
    }
    BOOST_TEST(swapped == double(right) / 800.0);
    std::mt19937_64 flash_rng(14);
    BOOST_TEST(attn::recall_accuracy(model, true, find(zoo, "flash (ch. 13)").weights, 100, flash_rng) == swapped);
}

BOOST_AUTO_TEST_CASE(a_mechanism_that_attends_to_nothing_scores_at_chance)
{
    const attn::TinyModel<float> model = briefly_trained_model(15, 60);
    const attn::WeightsOf nothing = [](const xt::xtensor<float, 2>& Q, const xt::xtensor<float, 2>& K) {
        return xt::xtensor<float, 2>(xt::zeros<float>({Q.shape(0), K.shape(0)}));
    };
    std::mt19937_64 rng(16);
    const double accuracy = attn::recall_accuracy(model, true, nothing, 400, rng);
    // 3200 questions; chance is 1/8, standard deviation about 0.006
    BOOST_TEST(std::abs(accuracy - 0.125) < 0.03);
}

BOOST_AUTO_TEST_CASE(training_is_deterministic_for_a_fixed_seed)
{
    const attn::TinyModel<float> a = briefly_trained_model(17, 5), b = briefly_trained_model(17, 5),
                                 c = briefly_trained_model(18, 5);
    const auto pa = attn::parameters(a), pb = attn::parameters(b), pc = attn::parameters(c);
    bool all_equal = true, any_differs = false;
    for (std::size_t p = 0; p < pa.size(); ++p) {
        all_equal = all_equal && *pa[p].second == *pb[p].second;
        any_differs = any_differs || *pa[p].second != *pc[p].second;
    }
    BOOST_TEST(all_equal);
    BOOST_TEST(any_differs);
}

BOOST_AUTO_TEST_CASE(a_pattern_trains_through_chapter_4s_backward_pass)
{
    // Training with a pattern changes the weights and leaves every weight finite, and the
    // gradient of a key outside the pattern is zero: the loss does not depend on it.
    const std::size_t n = 32;
    const auto zoo = attn::zoo_mechanisms(attn::short_sequence_parameters(n));
    const attn::Mechanism& window = find(zoo, "sliding window (ch. 6)");
    std::mt19937_64 rng(19);
    attn::TinyModel<float> model = attn::recall_model(n, rng);
    const attn::RecallExample e = attn::recall_example(n, true, rng);
    const attn::MechanismAttention in_the_window(window.weights, 8);
    const attn::TinyModelForward<float> f = attn::model_forward(model, e.tokens, in_the_window);
    const attn::SequenceLoss<float> scored = attn::score_answers(f.logits, e.answers);
    attn::TinyModel<float> grad = attn::zero_model<float>(model.shape);
    attn::model_backward(model, e.tokens, f, scored.d_logits, grad, in_the_window);
    // a position no question's window reaches gets no gradient through attention, and no
    // gradient of its own (it is not scored): its position embedding's gradient is zero
    const std::size_t far_away = 0;  // the window is n/8 = 4 keys; the questions are 24..31
    for (std::size_t c = 0; c < model.shape.d_model; ++c) BOOST_TEST(grad.position_embedding(far_away, c) == 0.0f);
    bool some_gradient = false;
    for (std::size_t c = 0; c < model.shape.d_model; ++c)
        some_gradient = some_gradient || grad.position_embedding(n - 1, c) != 0.0f;
    BOOST_TEST(some_gradient);
}

BOOST_AUTO_TEST_SUITE_END()
