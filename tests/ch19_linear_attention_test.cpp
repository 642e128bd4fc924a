// Chapter 19: linear attention in its matrix, blocked and recurrent forms, the decaying
// state, the backward pass, and the kernel contract of chapter 1.
#define BOOST_TEST_MODULE ch19_linear_attention
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/attention_backward.hpp"
#include "attn/causal_decoder.hpp"
#include "attn/linear_attention.hpp"
#include "attn/measure.hpp"
#include "attn/performer.hpp"
#include "attn/random.hpp"
#include "sparsity_support.hpp"
#include "test_support.hpp"

using test_support::as_type;
using test_support::check_close;
using test_support::random_inputs;
using test_support::throws_invalid_argument;

namespace {

using Matrix = xt::xtensor<double, 2>;

/// φ(x) = elu(x) + 1 in long double, written apart from the library.
long double phi(long double x)
{
    return x > 0 ? x + 1 : std::exp(x);
}

/// o_i = Σ_j γ^(i−j) φ(q_i)·φ(k_j) v_j / Σ_j γ^(i−j) φ(q_i)·φ(k_j) by plain loops in
/// long double, over every key (γ unused) or, if causal, the keys j ≤ i.
Matrix naive_linear_attention(const Matrix& Q, const Matrix& K, const Matrix& V,
                              bool causal, long double gamma = 1)
{
    const std::size_t n = Q.shape(0), m = K.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    Matrix O = xt::zeros<double>({n, d_v});
    for (std::size_t i = 0; i < n; ++i) {
        std::vector<long double> numerator(d_v, 0);
        long double denominator = 0;
        for (std::size_t j = 0; j < (causal ? i + 1 : m); ++j) {
            long double kernel = 0;
            for (std::size_t c = 0; c < d_k; ++c) kernel += phi(Q(i, c)) * phi(K(j, c));
            if (causal) kernel *= std::pow(gamma, (long double)(i - j));
            for (std::size_t c = 0; c < d_v; ++c) numerator[c] += kernel * V(j, c);
            denominator += kernel;
        }
        for (std::size_t c = 0; c < d_v; ++c) O(i, c) = double(numerator[c] / denominator);
    }
    return O;
}

/// Whether rows [0, rows) of a and b are identical bit for bit.
bool same_leading_rows(const Matrix& a, const Matrix& b, std::size_t rows)
{
    for (std::size_t i = 0; i < rows; ++i)
        for (std::size_t c = 0; c < a.shape(1); ++c)
            if (!(a(i, c) == b(i, c))) return false;
    return true;
}

/// The message of the std::invalid_argument f() throws ("" if none).
template <class F>
std::string invalid_argument_message(F f)
{
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(reference)

BOOST_AUTO_TEST_CASE(equals_a_naive_loop_in_long_double)
{
    for (const bool causal : {false, true})
        for (const std::size_t n : {1, 5, 33, 70}) {
            const std::size_t m = causal ? n : n + 3;
            const auto x = random_inputs(n, m, 7, 5, 100 + n);
            const Matrix expected = naive_linear_attention(x.Q, x.K, x.V, causal);
            check_close(attn::linear_attention(x.Q, x.K, x.V, causal, 16), expected, 1e-12,
                        1e-13, "double, n = " + std::to_string(n));
            const xt::xtensor<float, 2> O_f = attn::linear_attention(
                as_type<float>(x.Q), as_type<float>(x.K), as_type<float>(x.V), causal, 16);
            check_close(O_f, expected, 1e-4, 1e-5, "float, n = " + std::to_string(n));
        }
}

BOOST_AUTO_TEST_CASE(weights_are_a_causal_average)
{
    const auto x = random_inputs(9, 4, 3, 7);
    const Matrix A = attn::linear_attention_weights(x.Q, x.K, true);
    for (std::size_t i = 0; i < 9; ++i) {
        double total = 0;
        for (std::size_t j = 0; j < 9; ++j) {
            BOOST_TEST(A(i, j) >= 0.0);
            if (j > i) BOOST_TEST(A(i, j) == 0.0);
            total += A(i, j);
        }
        BOOST_TEST(total == 1.0, boost::test_tools::tolerance(1e-14));
    }
    const Matrix O = xt::linalg::dot(A, x.V);
    check_close(O, naive_linear_attention(x.Q, x.K, x.V, true), 1e-12, 1e-13);
}

BOOST_AUTO_TEST_CASE(feature_map_is_elu_plus_one)
{
    const Matrix X = {{-2.0, 0.0, 0.5, 3.0}};
    const Matrix expected = {{std::exp(-2.0), 1.0, 1.5, 4.0}};
    check_close(attn::elu_feature_map(X), expected, 1e-15, 0);
    BOOST_TEST(attn::elu_feature_slope(-1.0) == std::exp(-1.0));
    BOOST_TEST(attn::elu_feature_slope(2.0) == 1.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(forms)

BOOST_AUTO_TEST_CASE(parallel_equals_recurrent_at_ragged_sizes)
{
    for (const std::size_t n : {1, 2, 31, 64, 65, 130})
        for (const std::size_t block : {1, 7, 64, 200}) {
            const auto x = random_inputs(n, 6, 9, 1000 + n + block);
            const Matrix parallel = attn::linear_attention(x.Q, x.K, x.V, true, block);
            const Matrix recurrent = attn::recurrent_linear_attention(x.Q, x.K, x.V);
            check_close(recurrent, parallel, 1e-12, 1e-13,
                        "n = " + std::to_string(n) + ", block " + std::to_string(block));
        }
}

BOOST_AUTO_TEST_CASE(state_step_returns_each_causal_row)
{
    const auto x = random_inputs(12, 5, 4, 3);
    const Matrix parallel = attn::linear_attention(x.Q, x.K, x.V, true);
    attn::LinearAttentionState<double> state(5, 4);
    for (std::size_t i = 0; i < 12; ++i) {
        const xt::xtensor<double, 1> o =
            state.step(xt::xtensor<double, 1>(xt::row(x.Q, i)),
                       xt::xtensor<double, 1>(xt::row(x.K, i)),
                       xt::xtensor<double, 1>(xt::row(x.V, i)));
        for (std::size_t c = 0; c < 4; ++c)
            BOOST_TEST(o(c) == parallel(i, c), boost::test_tools::tolerance(1e-12));
    }
    BOOST_TEST(state.tokens() == 12u);
}

BOOST_AUTO_TEST_CASE(causal_rows_are_independent_of_later_tokens)
{
    const std::size_t n = 50, t = 23;  // tokens from t on are changed
    const auto x = random_inputs(n, 8, 8, 11);
    auto y = random_inputs(n, 8, 8, 12);
    xt::view(y.Q, xt::range(0, t), xt::all()) = xt::view(x.Q, xt::range(0, t), xt::all());
    xt::view(y.K, xt::range(0, t), xt::all()) = xt::view(x.K, xt::range(0, t), xt::all());
    xt::view(y.V, xt::range(0, t), xt::all()) = xt::view(x.V, xt::range(0, t), xt::all());
    y.K(t + 1, 2) = std::numeric_limits<double>::quiet_NaN();  // inside t's block
    y.V(t + 2, 3) = std::numeric_limits<double>::infinity();
    for (const std::size_t block : {1, 16, 64}) {
        BOOST_TEST(same_leading_rows(attn::linear_attention(x.Q, x.K, x.V, true, block),
                                     attn::linear_attention(y.Q, y.K, y.V, true, block), t),
                   "block " << block);
    }
    BOOST_TEST(same_leading_rows(attn::recurrent_linear_attention(x.Q, x.K, x.V, 0.9),
                                 attn::recurrent_linear_attention(y.Q, y.K, y.V, 0.9), t));
}

BOOST_AUTO_TEST_CASE(favor_features_through_the_prefix_sums_are_causal_favor)
{
    const auto x = random_inputs(40, 8, 6, 21);
    const Matrix W = attn::orthogonal_features<double>(32, 8, 5);
    const Matrix O = attn::feature_attention(attn::favor_features(x.Q, W),
                                             attn::favor_features(x.K, W), x.V, true, 16);
    check_close(O, attn::performer_causal_attention(x.Q, x.K, x.V, W), 1e-11, 1e-12);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(decay)

BOOST_AUTO_TEST_CASE(decay_of_one_equals_no_decay)
{
    const auto x = random_inputs(37, 6, 5, 31);
    const Matrix plain = attn::recurrent_linear_attention(x.Q, x.K, x.V);
    const Matrix gamma_one = attn::recurrent_linear_attention(x.Q, x.K, x.V, 1.0);
    BOOST_TEST(same_leading_rows(plain, gamma_one, 37));  // bit for bit
    check_close(gamma_one, attn::linear_attention(x.Q, x.K, x.V, true), 1e-12, 1e-13);
}

BOOST_AUTO_TEST_CASE(decayed_state_equals_a_naive_loop)
{
    for (const double gamma : {0.99, 0.8, 0.3}) {
        const auto x = random_inputs(45, 7, 4, 41);
        check_close(attn::recurrent_linear_attention(x.Q, x.K, x.V, gamma),
                    naive_linear_attention(x.Q, x.K, x.V, true, gamma), 1e-12, 1e-13,
                    "γ = " + std::to_string(gamma));
    }
}

BOOST_AUTO_TEST_CASE(decay_favours_recent_tokens)
{
    // Every key alike: the output is Σ γ^(i−j) v_j / Σ γ^(i−j), nearer v_i as γ falls.
    const std::size_t n = 20;
    const Matrix Q = xt::zeros<double>({n, std::size_t(3)});
    const Matrix K = Q;
    Matrix V = xt::zeros<double>({n, std::size_t(1)});
    V(n - 1, 0) = 1.0;  // only the newest token carries a 1
    const double plain = attn::recurrent_linear_attention(Q, K, V)(n - 1, 0);
    const double decayed = attn::recurrent_linear_attention(Q, K, V, 0.5)(n - 1, 0);
    BOOST_TEST(plain == 1.0 / n, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(decayed == 0.5 / (1 - std::pow(0.5, double(n))),
               boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(contract)

BOOST_AUTO_TEST_CASE(bad_shapes_throw_with_a_clear_message)
{
    const Matrix A = xt::ones<double>({4, 3}), B = xt::ones<double>({4, 2});
    const Matrix C = xt::ones<double>({5, 3}), none = xt::ones<double>({0, 3});
    BOOST_TEST(invalid_argument_message([&] { attn::linear_attention(A, B, A, false); })
                   .find("one width") != std::string::npos);
    BOOST_TEST(invalid_argument_message([&] { attn::linear_attention(A, A, C, false); })
                   .find("one value per key") != std::string::npos);
    BOOST_TEST(invalid_argument_message([&] { attn::linear_attention(A, none, none, false); })
                   .find("m = 0") != std::string::npos);
    BOOST_TEST(invalid_argument_message([&] { attn::linear_attention(C, A, A, true); })
                   .find("one key per query") != std::string::npos);
    BOOST_TEST(throws_invalid_argument([&] { attn::linear_attention(A, A, A, true, 0); }));
    BOOST_TEST(throws_invalid_argument([&] { attn::recurrent_linear_attention(C, A, A); }));
    BOOST_TEST(throws_invalid_argument([&] { attn::linear_attention_weights(A, B, true); }));
}

BOOST_AUTO_TEST_CASE(d_k_of_zero_is_rejected)
{
    const Matrix Q = xt::zeros<double>({3, 0}), K = Q, V = xt::ones<double>({3, 2});
    for (const bool causal : {false, true})
        BOOST_TEST(invalid_argument_message([&] { attn::linear_attention(Q, K, V, causal); })
                       .find("d_k = 0") != std::string::npos);
    BOOST_TEST(throws_invalid_argument([] { attn::LinearAttentionState<float>(0, 4); }));
    BOOST_TEST(throws_invalid_argument([] { attn::LinearAttentionState<float>(4, 0); }));
}

BOOST_AUTO_TEST_CASE(the_state_rejects_bad_decays_and_rows)
{
    for (const double gamma : {0.0, -0.5, 1.5, std::nan("")})
        BOOST_TEST(invalid_argument_message([&] {
                       attn::LinearAttentionState<double>(3, 2, gamma);
                   }).find("decay") != std::string::npos,
                   "γ = " << gamma);
    attn::LinearAttentionState<double> state(3, 2);
    const xt::xtensor<double, 1> three = xt::ones<double>({3}), two = xt::ones<double>({2});
    BOOST_TEST(throws_invalid_argument([&] { state.step(two, three, two); }));
    BOOST_TEST(throws_invalid_argument([&] { state.step(three, two, two); }));
    BOOST_TEST(throws_invalid_argument([&] { state.step(three, three, three); }));
    BOOST_TEST(state.tokens() == 0u);
}

BOOST_AUTO_TEST_CASE(no_queries_give_an_empty_result)
{
    const Matrix Q = xt::zeros<double>({0, 4}), K = xt::ones<double>({3, 4});
    const Matrix V = xt::ones<double>({3, 5});
    const Matrix O = attn::linear_attention(Q, K, V, false);
    BOOST_TEST(O.shape(0) == 0u);
    BOOST_TEST(O.shape(1) == 5u);
}

BOOST_AUTO_TEST_CASE(nan_in_a_query_reaches_its_row_only)
{
    const auto x = random_inputs(30, 6, 4, 51);
    for (const bool causal : {false, true}) {
        Matrix Q = x.Q;
        Q(17, 2) = std::numeric_limits<double>::quiet_NaN();
        const Matrix clean = attn::linear_attention(x.Q, x.K, x.V, causal, 8);
        const Matrix O = attn::linear_attention(Q, x.K, x.V, causal, 8);
        for (std::size_t i = 0; i < 30; ++i)
            for (std::size_t c = 0; c < 4; ++c) {
                if (i == 17) BOOST_TEST(std::isnan(O(i, c)));
                else BOOST_TEST(O(i, c) == clean(i, c));
            }
    }
}

BOOST_AUTO_TEST_CASE(nan_in_a_key_or_value_reaches_the_rows_that_read_it)
{
    const auto x = random_inputs(30, 6, 4, 52);
    const std::size_t j = 13;
    Matrix K = x.K, V = x.V;
    K(j, 1) = std::numeric_limits<double>::quiet_NaN();
    V(j, 2) = std::numeric_limits<double>::quiet_NaN();
    const Matrix clean = attn::linear_attention(x.Q, x.K, x.V, true, 8);
    const Matrix key_poisoned = attn::linear_attention(x.Q, K, x.V, true, 8);
    const Matrix value_poisoned = attn::linear_attention(x.Q, x.K, V, true, 8);
    const Matrix recurrent = attn::recurrent_linear_attention(x.Q, x.K, V);
    for (std::size_t i = 0; i < 30; ++i)
        for (std::size_t c = 0; c < 4; ++c) {
            if (i >= j) BOOST_TEST(std::isnan(key_poisoned(i, c)));
            else BOOST_TEST(key_poisoned(i, c) == clean(i, c));
            if (i >= j && c == 2) {
                BOOST_TEST(std::isnan(value_poisoned(i, c)));
                BOOST_TEST(std::isnan(recurrent(i, c)));
            } else {
                BOOST_TEST(value_poisoned(i, c) == clean(i, c));
                BOOST_TEST(std::isfinite(recurrent(i, c)));
            }
        }
}

BOOST_AUTO_TEST_CASE(causal_pass_never_holds_an_n_by_n_matrix)
{
    test_support::check_never_holds_an_n_by_n_matrix(
        [](const auto& Q, const auto& K, const auto& V) {
            return attn::linear_attention(Q, K, V, true);
        },
        61);
    test_support::check_never_holds_an_n_by_n_matrix(
        [](const auto& Q, const auto& K, const auto& V) {
            return attn::linear_attention(Q, K, V, false);
        },
        62);
}

BOOST_AUTO_TEST_CASE(the_state_takes_constant_memory)
{
    attn::LinearAttentionState<float> state(64, 32);
    const std::size_t before = state.bytes();
    BOOST_TEST(before == (64u * 32u + 64u + 64u) * sizeof(float));
    const xt::xtensor<float, 1> q = xt::ones<float>({64}), v = xt::ones<float>({32});
    const auto run = [&](std::size_t tokens) {
        float sum = 0;
        for (std::size_t i = 0; i < tokens; ++i) sum += state.step(q, q, v)(0);
        return sum;
    };
    run(1000);
    BOOST_TEST(state.bytes() == before);
#if !defined(__SANITIZE_ADDRESS__)
    // 100 000 more tokens: no more than a few pages, where a KV cache would take 37 MiB
    const std::size_t peak = attn::largest_peak_memory_bytes([&] { return run(100000); });
    BOOST_TEST(peak < 64u * 1024u, "peak " << peak << " bytes");
#endif
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(learning)

BOOST_AUTO_TEST_CASE(backward_matches_finite_differences)
{
    for (const bool causal : {false, true}) {
        auto x = random_inputs(7, 4, 3, 71);
        std::mt19937_64 rng(72);
        const Matrix R = attn::random_normal<double>(7, 3, 1.0, rng);  // L = Σ R ⊙ O
        const auto loss = [&] {
            return double(xt::sum(R * attn::linear_attention(x.Q, x.K, x.V, causal))());
        };
        const attn::AttentionGradients<double> g =
            attn::linear_attention_backward(x.Q, x.K, x.V, R, causal);
        BOOST_TEST(attn::relative_error(g.dQ, attn::numerical_gradient(x.Q, loss)) < 1e-7);
        BOOST_TEST(attn::relative_error(g.dK, attn::numerical_gradient(x.K, loss)) < 1e-7);
        BOOST_TEST(attn::relative_error(g.dV, attn::numerical_gradient(x.V, loss)) < 1e-7);
    }
}

BOOST_AUTO_TEST_CASE(model_backward_matches_finite_differences)
{
    const attn::ReversalTask task{3};
    std::mt19937_64 rng(81);
    attn::TinyModel<double> model =
        attn::init_tiny_model<double>(attn::causal_model_shape(task), rng);
    const std::vector<std::size_t> tokens = {4, 0, 19, 26, 19, 0};
    const std::vector<std::size_t> targets = {5, 1, 2, 7, 9, 3};
    for (const double gamma : {1.0, 0.8}) {
        const auto loss = [&] {
            const auto f = attn::linear_model_forward(model, tokens, gamma);
            return attn::cross_entropy(f.logits, targets).loss;
        };
        const auto f = attn::linear_model_forward(model, tokens, gamma);
        attn::TinyModel<double> grad = attn::zero_model<double>(model.shape);
        attn::model_backward(model, tokens, f,
                             attn::cross_entropy(f.logits, targets).d_logits, grad,
                             attn::CausalLinearAttention{gamma});
        for (auto [name, W] : attn::parameters(model)) {
            const Matrix expected = attn::numerical_gradient(*W, loss);
            const Matrix* analytic = nullptr;
            for (auto [other, G] : attn::parameters(grad))
                if (other == name) analytic = G;
            BOOST_TEST(attn::relative_error(*analytic, expected) < 1e-6,
                       name << ", γ = " << gamma);
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(decay_in_matrix_form)

BOOST_AUTO_TEST_CASE(decayed_weights_equal_the_decayed_state)
{
    const auto x = random_inputs(29, 5, 4, 91);
    const Matrix A = attn::linear_attention_weights(x.Q, x.K, true, 0.75);
    check_close(Matrix(xt::linalg::dot(A, x.V)),
                attn::recurrent_linear_attention(x.Q, x.K, x.V, 0.75), 1e-12, 1e-13);
    BOOST_TEST(invalid_argument_message([&] {
                   attn::linear_attention_weights(x.Q, x.K, false, 0.75);
               }).find("causal") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(decayed_backward_matches_finite_differences)
{
    auto x = random_inputs(8, 4, 3, 92);
    std::mt19937_64 rng(93);
    const Matrix R = attn::random_normal<double>(8, 3, 1.0, rng);  // L = Σ R ⊙ O
    const auto loss = [&] {
        const Matrix A = attn::linear_attention_weights(x.Q, x.K, true, 0.6);
        return double(xt::sum(R * Matrix(xt::linalg::dot(A, x.V)))());
    };
    const auto g = attn::linear_attention_backward(x.Q, x.K, x.V, R, true, 0.6);
    BOOST_TEST(attn::relative_error(g.dQ, attn::numerical_gradient(x.Q, loss)) < 1e-7);
    BOOST_TEST(attn::relative_error(g.dK, attn::numerical_gradient(x.K, loss)) < 1e-7);
    BOOST_TEST(attn::relative_error(g.dV, attn::numerical_gradient(x.V, loss)) < 1e-7);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(decoding)

BOOST_AUTO_TEST_CASE(the_decoder_steps_through_the_parallel_logits)
{
    const attn::ReversalTask task{4};
    std::mt19937_64 rng(101);
    const attn::TinyModel<double> model =
        attn::init_tiny_model<double>(attn::causal_model_shape(task), rng);
    const std::vector<std::size_t> tokens = {3, 17, 0, 25, 26, 25, 0, 17};
    for (const double gamma : {1.0, 0.7}) {
        const Matrix parallel = attn::linear_model_forward(model, tokens, gamma).logits;
        attn::LinearDecoder<double> decoder(model, gamma);
        const std::size_t bytes = decoder.state_bytes();
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            const xt::xtensor<double, 1> logits = decoder.step(tokens[i]);
            for (std::size_t c = 0; c < logits.size(); ++c)
                BOOST_TEST(logits(c) == parallel(i, c), boost::test_tools::tolerance(1e-12));
        }
        BOOST_TEST(decoder.state_bytes() == bytes);
        BOOST_TEST(throws_invalid_argument([&] { decoder.step(0); }));  // past position n
    }
}

BOOST_AUTO_TEST_SUITE_END()
