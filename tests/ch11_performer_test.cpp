// Chapter 11: Performer (FAVOR+).
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE ch11_performer
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/performer.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"
#include "test_support.hpp"

using test_support::check_close;
using test_support::column_finite;
using test_support::FuzzBudget;
using test_support::row_finite;
using test_support::naive_attention;
using test_support::Inputs;
using test_support::random_inputs;

namespace {

/// φ(x) = exp(W·x̃ − ‖x̃‖²/2)/√r, x̃ = x·d^(−1/4), for one row, in long double (independent of the library).
std::vector<long double> naive_features(const xt::xtensor<double, 2>& X, std::size_t i, const xt::xtensor<double, 2>& W)
{
    const std::size_t d = X.shape(1), r = W.shape(0);
    const long double scale = std::pow((long double)d, -0.25L);
    long double norm2 = 0;
    for (std::size_t c = 0; c < d; ++c) norm2 += (long double)X(i, c) * X(i, c) * scale * scale;
    std::vector<long double> phi(r);
    for (std::size_t l = 0; l < r; ++l) {
        long double dot = 0;
        for (std::size_t c = 0; c < d; ++c) dot += (long double)W(l, c) * X(i, c) * scale;
        phi[l] = std::exp(dot - norm2 / 2) / std::sqrt((long double)r);
    }
    return phi;
}

/// D⁻¹·φ(Q)·φ(K)ᵀ·V by loops in long double, keys j with allowed(i, j) only.
template <class Allowed>
xt::xtensor<double, 2> naive_favor(const Inputs& in, const xt::xtensor<double, 2>& W, Allowed allowed)
{
    const std::size_t n = in.Q.shape(0), m = in.K.shape(0), d_v = in.V.shape(1);
    std::vector<std::vector<long double>> phi_K;
    for (std::size_t j = 0; j < m; ++j) phi_K.push_back(naive_features(in.K, j, W));
    xt::xtensor<double, 2> O = xt::zeros<double>({n, d_v});
    for (std::size_t i = 0; i < n; ++i) {
        const auto phi_q = naive_features(in.Q, i, W);
        std::vector<long double> numerator(d_v, 0);
        long double denominator = 0;
        for (std::size_t j = 0; j < m; ++j) {
            if (!allowed(i, j)) continue;
            long double kernel = 0;
            for (std::size_t l = 0; l < W.shape(0); ++l) kernel += phi_q[l] * phi_K[j][l];
            denominator += kernel;
            for (std::size_t c = 0; c < d_v; ++c) numerator[c] += kernel * in.V(j, c);
        }
        for (std::size_t c = 0; c < d_v; ++c) O(i, c) = double(numerator[c] / denominator);
    }
    return O;
}

/// Estimate of exp(x·y/√d) from features of one row each.
double estimate(const xt::xtensor<double, 2>& phi_x, const xt::xtensor<double, 2>& phi_y)
{
    return xt::sum(phi_x * phi_y)();
}

/// One row x with ‖x̃‖ = norm (x̃ = x·d^(−1/4)) and a row y at `degrees` from it.
std::pair<xt::xtensor<double, 2>, xt::xtensor<double, 2>> pair_at(std::size_t d, double norm, double degrees,
                                                                  std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    const auto g = attn::random_normal<double>(2, d, 1.0, rng);
    xt::xtensor<double, 1> u = xt::row(g, 0), v = xt::row(g, 1);
    u /= std::sqrt(xt::sum(u * u)());
    v -= xt::sum(u * v)() * u;
    v /= std::sqrt(xt::sum(v * v)());
    const double angle = degrees * M_PI / 180, length = norm * std::pow(double(d), 0.25);
    xt::xtensor<double, 2> x = xt::zeros<double>({std::size_t(1), d}), y = x;
    xt::row(x, 0) = length * u;
    xt::row(y, 0) = length * (std::cos(angle) * u + std::sin(angle) * v);
    return {x, y};
}

/// Relative MSE of the positive estimate of SM over `draws` draws of W.
double relative_mse(const xt::xtensor<double, 2>& x, const xt::xtensor<double, 2>& y, std::size_t r, bool orthogonal,
                    int draws, std::uint64_t seed)
{
    const std::size_t d = x.shape(1);
    const double exact = std::exp(xt::sum(x * y)() / std::sqrt(double(d)));
    double total = 0;
    for (int s = 0; s < draws; ++s) {
        const auto W = orthogonal ? attn::orthogonal_features<double>(r, d, seed + s)
                                  : attn::iid_features<double>(r, d, seed + s);
        const double e = estimate(attn::favor_features(x, W), attn::favor_features(y, W));
        total += (e - exact) * (e - exact) / (exact * exact);
    }
    return total / draws;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(random_features)

BOOST_AUTO_TEST_CASE(orthogonal_features_have_orthogonal_blocks_and_chi_lengths)
{
    const std::size_t r = 40, d = 16;  // two full blocks and one of 8 rows
    const auto W = attn::orthogonal_features<double>(r, d, 5);
    BOOST_TEST(W.shape(0) == r);
    BOOST_TEST(W.shape(1) == d);
    for (std::size_t start = 0; start < r; start += d)
        for (std::size_t a = start; a < std::min(r, start + d); ++a)
            for (std::size_t b = a + 1; b < std::min(r, start + d); ++b) {
                const double cosine = xt::sum(xt::row(W, a) * xt::row(W, b))() /
                                      std::sqrt(xt::sum(xt::square(xt::row(W, a)))() * xt::sum(xt::square(xt::row(W, b)))());
                BOOST_TEST(std::abs(cosine) < 1e-12, "rows " << a << ", " << b << ": cosine " << cosine);
            }
    // Lengths are χ_d: not all equal, and over many rows E‖w‖² = d.
    const auto many = attn::orthogonal_features<double>(16 * 400, d, 6);
    const xt::xtensor<double, 1> lengths2 = xt::sum(xt::square(many), {1});
    const double mean = xt::mean(lengths2)();
    BOOST_TEST(std::abs(mean - double(d)) < 0.5, "mean squared length " << mean);  // std. error √(2d/6400) ≈ 0.07
    BOOST_TEST(xt::amax(lengths2)() - xt::amin(lengths2)() > 10.0);
}

BOOST_AUTO_TEST_CASE(features_are_fixed_by_their_seed)
{
    BOOST_TEST(attn::orthogonal_features<double>(20, 8, 1) == attn::orthogonal_features<double>(20, 8, 1));
    BOOST_TEST(attn::orthogonal_features<double>(20, 8, 1) != attn::orthogonal_features<double>(20, 8, 2));
    BOOST_TEST(attn::iid_features<double>(20, 8, 1) == attn::iid_features<double>(20, 8, 1));
    check_close(attn::orthogonal_features<float>(20, 8, 3), attn::orthogonal_features<double>(20, 8, 3), 1e-6, 1e-7,
                "float vs double draw");
    BOOST_CHECK_THROW(attn::orthogonal_features<double>(0, 8, 1), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(favor_features_equal_the_formula_and_are_positive)
{
    const auto [Q, K, V] = random_inputs(7, 3, 8, 2, 1);
    const auto W = attn::orthogonal_features<double>(12, 8, 2);
    const auto phi = attn::favor_features(Q, W);
    BOOST_TEST(phi.shape(0) == 7u);
    BOOST_TEST(phi.shape(1) == 12u);
    BOOST_TEST(xt::amin(phi)() > 0.0);
    xt::xtensor<double, 2> expected = xt::zeros<double>({std::size_t(7), std::size_t(12)});
    for (std::size_t i = 0; i < 7; ++i) {
        const auto row = naive_features(Q, i, W);
        for (std::size_t l = 0; l < 12; ++l) expected(i, l) = double(row[l]);
    }
    check_close(phi, expected, 1e-13, 0, "φ(Q)");
    BOOST_CHECK_THROW(attn::favor_features(Q, attn::orthogonal_features<double>(12, 5, 2)), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(positive_estimate_is_exact_for_y_equal_minus_x)
{
    // φ(x)·φ(−x) = (1/r) Σ_l e^{w_l·x̃ − ‖x̃‖²/2} e^{−w_l·x̃ − ‖x̃‖²/2} = e^{−‖x̃‖²} = SM(x̃, −x̃) for every W:
    // the estimator has zero variance there. Checked to 1e-12 relative for several W, lengths and kinds.
    for (double norm : {0.5, 1.0, 2.0})
        for (std::uint64_t seed : {1, 2, 3}) {
            const auto [x, y] = pair_at(16, norm, 180.0, seed);
            const double exact = std::exp(-norm * norm);
            for (const auto& W : {attn::iid_features<double>(64, 16, seed), attn::orthogonal_features<double>(64, 16, seed)}) {
                const double e = estimate(attn::favor_features(x, W), attn::favor_features(y, W));
                BOOST_TEST(std::abs(e - exact) <= 1e-12 * exact, "norm " << norm << ": " << e << " vs " << exact);
            }
        }
}

BOOST_AUTO_TEST_CASE(estimates_are_unbiased)
{
    // Mean of 20000 estimates (r = 8) of SM at ‖x̃‖ = ‖ỹ‖ = 0.8, 60°: within 4 standard errors
    // (the standard error measured from the same draws) of the exact kernel, iid and orthogonal,
    // positive and trigonometric.
    const std::size_t d = 8, r = 8;
    const int draws = 20000;
    const auto [x, y] = pair_at(d, 0.8, 60.0, 7);
    const double exact = std::exp(xt::sum(x * y)() / std::sqrt(double(d)));
    for (int kind = 0; kind < 4; ++kind) {
        double sum = 0, sum2 = 0;
        for (int s = 0; s < draws; ++s) {
            const auto W = kind % 2 ? attn::orthogonal_features<double>(r, d, 100 + s) : attn::iid_features<double>(r, d, 100 + s);
            const double e = kind < 2 ? estimate(attn::favor_features(x, W), attn::favor_features(y, W))
                                      : estimate(attn::trig_features(x, W), attn::trig_features(y, W));
            sum += e, sum2 += e * e;
        }
        const double mean = sum / draws, standard_error = std::sqrt((sum2 / draws - mean * mean) / draws);
        BOOST_TEST(std::abs(mean - exact) < 4 * standard_error,
                   "kind " << kind << ": mean " << mean << ", exact " << exact << ", s.e. " << standard_error);
    }
}

BOOST_AUTO_TEST_CASE(mse_falls_roughly_as_one_over_r)
{
    // Positive iid features, ‖x̃‖ = ‖ỹ‖ = 0.5, 60°, 4000 draws: MSE(r = 8)/MSE(r = 128) should be 16;
    // accepted within [10, 25]. Lemma 2 gives the value itself: (e^{‖x̃+ỹ‖²} − 1)/r relative to SM².
    const auto [x, y] = pair_at(16, 0.5, 60.0, 3);
    const double mse_8 = relative_mse(x, y, 8, false, 4000, 1), mse_128 = relative_mse(x, y, 128, false, 4000, 50000);
    BOOST_TEST(mse_8 / mse_128 > 10.0, "ratio " << mse_8 / mse_128);
    BOOST_TEST(mse_8 / mse_128 < 25.0, "ratio " << mse_8 / mse_128);
    const double sum2 = 0.25 + 0.25 + 2 * 0.25 * std::cos(M_PI / 3);  // ‖x̃ + ỹ‖²
    const double lemma2 = (std::exp(sum2) - 1) / 8;
    BOOST_TEST(std::abs(mse_8 / lemma2 - 1) < 0.15, "measured " << mse_8 << ", Lemma 2 " << lemma2);
}

BOOST_AUTO_TEST_CASE(orthogonal_features_beat_iid_on_average)
{
    // Mean relative MSE over 8 random pairs (‖x̃‖ = ‖ỹ‖ = 0.7, d = 16) and 3000 draws, at r = 16 and 64.
    for (std::size_t r : {16, 64}) {
        double iid = 0, orthogonal = 0;
        for (std::uint64_t p = 0; p < 8; ++p) {
            const auto [x, y] = pair_at(16, 0.7, 30.0 + 20.0 * double(p), 10 + p);  // 30° … 170°
            iid += relative_mse(x, y, r, false, 3000, 1000 * p);
            orthogonal += relative_mse(x, y, r, true, 3000, 1000 * p + 500000);
        }
        BOOST_TEST(orthogonal < 0.95 * iid, "r = " << r << ": orthogonal " << orthogonal / 8 << ", iid " << iid / 8);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(favor_attention)

BOOST_AUTO_TEST_CASE(output_has_shape_n_by_d_v)
{
    const auto [Q, K, V] = random_inputs(5, 9, 8, 3, 1);
    const auto W = attn::orthogonal_features<double>(16, 8, 1);
    const auto O = attn::performer_attention(Q, K, V, W);
    BOOST_TEST(O.shape(0) == 5u);
    BOOST_TEST(O.shape(1) == 3u);
    const auto [Qc, Kc, Vc] = random_inputs(6, 6, 8, 3, 2);
    BOOST_TEST(attn::performer_causal_attention(Qc, Kc, Vc, W).shape(0) == 6u);
    BOOST_CHECK_THROW(attn::performer_causal_attention(Q, K, V, W), std::invalid_argument);  // n ≠ m
    BOOST_CHECK_THROW(attn::performer_attention(Q, K, V, attn::orthogonal_features<double>(16, 4, 1)),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(equals_the_formula_computed_without_stabiliser)
{
    // D⁻¹·φ(Q)·(φ(K)ᵀ·V) with the stabilisers equals the plain formula by loops in long double.
    for (auto [n, m] : std::vector<std::pair<std::size_t, std::size_t>>{{1, 1}, {7, 11}, {20, 20}}) {
        Inputs in = random_inputs(n, m, 8, 4, 30 + n);
        const auto W = attn::iid_features<double>(24, 8, n);
        check_close(attn::performer_attention(in.Q, in.K, in.V, W),
                    naive_favor(in, W, [](std::size_t, std::size_t) { return true; }), 1e-12, 1e-13, "bidirectional");
    }
}

BOOST_AUTO_TEST_CASE(implied_weights_times_v_equal_the_fast_path)
{
    Inputs in = random_inputs(12, 12, 8, 5, 40);
    const auto W = attn::orthogonal_features<double>(32, 8, 4);
    const xt::xtensor<double, 2> slow = xt::linalg::dot(attn::performer_weights(in.Q, in.K, W), in.V);
    check_close(attn::performer_attention(in.Q, in.K, in.V, W), slow, 1e-12, 1e-13, "bidirectional");
    const xt::xtensor<double, 2> slow_causal = xt::linalg::dot(attn::performer_weights(in.Q, in.K, W, true), in.V);
    check_close(attn::performer_causal_attention(in.Q, in.K, in.V, W), slow_causal, 1e-12, 1e-13, "causal");
}

BOOST_AUTO_TEST_CASE(causal_equals_the_masked_formula_and_its_last_row_the_bidirectional_one)
{
    Inputs in = random_inputs(17, 17, 8, 4, 50);
    const auto W = attn::orthogonal_features<double>(24, 8, 5);
    const auto causal = attn::performer_causal_attention(in.Q, in.K, in.V, W);
    check_close(causal, naive_favor(in, W, [](std::size_t i, std::size_t j) { return j <= i; }), 1e-12, 1e-13,
                "causal vs masked formula");
    const auto bidirectional = attn::performer_attention(in.Q, in.K, in.V, W);
    const xt::xtensor<double, 2> last_causal = xt::view(causal, xt::range(16, 17), xt::all());
    const xt::xtensor<double, 2> last_bidirectional = xt::view(bidirectional, xt::range(16, 17), xt::all());
    check_close(last_causal, last_bidirectional, 1e-12, 1e-13, "last row");
}

BOOST_AUTO_TEST_CASE(causal_output_at_i_ignores_tokens_after_i)
{
    // Replacing every token after position 9 (queries, keys and values, with much larger keys, which
    // raise the running maximum) leaves outputs 0..9 bit-identical.
    const std::size_t n = 24, cut = 10;
    Inputs in = random_inputs(n, n, 8, 4, 60);
    const auto W = attn::orthogonal_features<float>(32, 8, 6);
    const xt::xtensor<float, 2> Q(in.Q), K(in.K), V(in.V);
    const auto before = attn::performer_causal_attention(Q, K, V, W);
    Inputs other = random_inputs(n, n, 8, 4, 61, 5.0);
    xt::xtensor<float, 2> Q2(Q), K2(K), V2(V);
    xt::view(Q2, xt::range(cut, n), xt::all()) = xt::view(xt::xtensor<float, 2>(other.Q), xt::range(cut, n), xt::all());
    xt::view(K2, xt::range(cut, n), xt::all()) = xt::view(xt::xtensor<float, 2>(other.K), xt::range(cut, n), xt::all());
    xt::view(V2, xt::range(cut, n), xt::all()) = xt::view(xt::xtensor<float, 2>(other.V), xt::range(cut, n), xt::all());
    const auto after = attn::performer_causal_attention(Q2, K2, V2, W);
    const xt::xtensor<float, 2> past_before = xt::view(before, xt::range(0, cut), xt::all());
    const xt::xtensor<float, 2> past_after = xt::view(after, xt::range(0, cut), xt::all());
    BOOST_TEST(past_before == past_after);
    const xt::xtensor<float, 2> future_before = xt::view(before, xt::range(cut, n), xt::all());
    const xt::xtensor<float, 2> future_after = xt::view(after, xt::range(cut, n), xt::all());
    BOOST_TEST(future_before != future_after);  // the test can fail: the future did change
}

BOOST_AUTO_TEST_CASE(approximates_dense_attention_with_many_features)
{
    // d = 8, small-norm inputs (entries N(0, 0.5²)), r = 8192 orthogonal features, mean over 4 draws:
    // bidirectional against chapter 1's attention, causal against the naive masked loop.
    const Inputs in = random_inputs(16, 16, 8, 4, 70, 0.5);
    const auto dense = attn::scaled_dot_product_attention(in.Q, in.K, in.V);
    const auto masked = naive_attention(in.Q, in.K, in.V, [](std::size_t i, std::size_t j) { return j <= i; });
    double error_few = 0, error_many = 0, error_causal = 0;
    for (std::uint64_t s = 0; s < 4; ++s) {
        const auto W_few = attn::orthogonal_features<double>(64, 8, 100 + s);
        const auto W_many = attn::orthogonal_features<double>(8192, 8, 200 + s);
        error_few += xt::amax(xt::abs(attn::performer_attention(in.Q, in.K, in.V, W_few) - dense))() / 4;
        error_many += xt::amax(xt::abs(attn::performer_attention(in.Q, in.K, in.V, W_many) - dense))() / 4;
        error_causal += xt::amax(xt::abs(attn::performer_causal_attention(in.Q, in.K, in.V, W_many) - masked))() / 4;
    }
    BOOST_TEST_MESSAGE("max errors: r = 64 " << error_few << ", r = 8192 " << error_many << ", causal " << error_causal);
    BOOST_TEST(error_many < 0.03);
    BOOST_TEST(error_causal < 0.03);
    BOOST_TEST(error_many < 0.5 * error_few);
}

BOOST_AUTO_TEST_CASE(large_inputs_stay_finite_thanks_to_the_stabiliser)
{
    // Queries and keys 8 times larger: ‖x̃‖²/2 ≈ 128, so the exponents of φ are around −128 and
    // e^{−128} underflows float to 0: without a stabiliser whole rows of φ(Q) vanish and D⁻¹ is 1/0.
    // With it, both attentions are finite and agree with the same computation in double.
    Inputs in = random_inputs(32, 32, 16, 4, 80, 8.0);
    const auto W_d = attn::orthogonal_features<double>(64, 16, 8);
    const xt::xtensor<float, 2> Q(in.Q), K(in.K), V(in.V), W(W_d);
    const xt::xtensor<float, 1> row_max = xt::amax(attn::favor_features(Q, W), {1});
    BOOST_TEST(xt::amin(row_max)() == 0.0f);  // the unstabilised features do underflow
    const auto O = attn::performer_attention(Q, K, V, W);
    const auto O_causal = attn::performer_causal_attention(Q, K, V, W);
    BOOST_TEST(test_support::all_finite(O));
    BOOST_TEST(test_support::all_finite(O_causal));
    check_close(O, attn::performer_attention(in.Q, in.K, in.V, W_d), 1e-3, 1e-3, "float vs double");
    check_close(O_causal, attn::performer_causal_attention(in.Q, in.K, in.V, W_d), 1e-3, 1e-3, "causal float vs double");
}

BOOST_AUTO_TEST_CASE(a_single_token_returns_its_value)
{
    const Inputs in = random_inputs(1, 1, 8, 5, 90);
    const auto W = attn::iid_features<double>(16, 8, 9);
    check_close(attn::performer_attention(in.Q, in.K, in.V, W), in.V, 1e-14, 1e-15, "bidirectional");
    check_close(attn::performer_causal_attention(in.Q, in.K, in.V, W), in.V, 1e-14, 1e-15, "causal");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(blocks)

BOOST_AUTO_TEST_CASE(blocked_kernels_equal_the_unblocked_ones_at_ragged_sizes)
{
    // n not a multiple of the block (and blocks of 1, of n, of more than n, and the
    // cache-sized default): the blocked kernels equal the whole-matrix references in
    // double to 1e-12 relative, bidirectional (m ≠ n) and causal, with the same W.
    using Sizes = std::vector<std::pair<std::size_t, std::size_t>>;
    for (auto [n, m] : Sizes{{37, 53}, {100, 61}}) {
        const auto W = attn::orthogonal_features<double>(40, 16, 11);
        const std::vector<std::size_t> blocks = {1, 7, 16, n, 2 * n, 0};  // 0: default
        {
            const auto [Q, K, V] = random_inputs(n, m, 16, 5, 110 + n, 1.5);
            const auto reference = attn::performer_attention_unblocked(Q, K, V, W);
            for (std::size_t block : blocks)
                check_close(attn::performer_attention(Q, K, V, W, block), reference,
                            1e-12, 1e-13,
                            "bidirectional, block " + std::to_string(block));
        }
        const auto [Q, K, V] = random_inputs(n, n, 16, 5, 120 + n, 1.5);
        const auto reference = attn::performer_causal_attention_unblocked(Q, K, V, W);
        for (std::size_t block : blocks)
            check_close(attn::performer_causal_attention(Q, K, V, W, block), reference,
                        1e-12, 1e-13, "causal, block " + std::to_string(block));
    }
}

BOOST_AUTO_TEST_CASE(a_block_holds_a_few_hundred_tokens_at_the_benchmark_size)
{
    const std::size_t block = attn::performer_block_rows<float>(64, 64, 256);
    BOOST_TEST_MESSAGE("tokens per block (r = 256, d = 64, float): " << block);
    BOOST_TEST(block >= 16u);
    BOOST_TEST(block <= 4096u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

namespace {

constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();
constexpr std::size_t huge = std::numeric_limits<std::size_t>::max();


/// The four public kernels, on the same inputs (causal ones only when n = m).
struct Outputs {
    xt::xtensor<double, 2> blocked, unblocked, causal, causal_unblocked;
};

Outputs all_kernels(const Inputs& in, const xt::xtensor<double, 2>& W, std::size_t block)
{
    Outputs o;
    o.blocked = attn::performer_attention(in.Q, in.K, in.V, W, block);
    o.unblocked = attn::performer_attention_unblocked(in.Q, in.K, in.V, W);
    if (in.Q.shape(0) == in.K.shape(0)) {
        o.causal = attn::performer_causal_attention(in.Q, in.K, in.V, W, block);
        o.causal_unblocked = attn::performer_causal_attention_unblocked(in.Q, in.K, in.V, W);
    }
    return o;
}

bool finite_at(const xt::xtensor<double, 2>& O, std::size_t i, std::size_t c)
{
    return std::isfinite(O(i, c));
}

}  // namespace

BOOST_AUTO_TEST_CASE(degenerate_shapes_throw_or_give_empty_results)
{
    const Inputs in = random_inputs(5, 5, 4, 3, 501);
    const auto W = attn::orthogonal_features<double>(8, 4, 1);
    const xt::xtensor<double, 2> Q_none = xt::zeros<double>({0, 4});
    BOOST_TEST(attn::performer_attention(Q_none, in.K, in.V, W).shape(0) == 0u);
    BOOST_TEST(attn::performer_attention(Q_none, in.K, in.V, W).shape(1) == 3u);
    BOOST_TEST(attn::performer_attention_unblocked(Q_none, in.K, in.V, W).shape(0) == 0u);
    const xt::xtensor<double, 2> V_thin = xt::zeros<double>({5, 0});
    BOOST_TEST(attn::performer_attention(in.Q, in.K, V_thin, W).shape(1) == 0u);
    BOOST_TEST(attn::performer_causal_attention(in.Q, in.K, V_thin, W).shape(0) == 5u);
    BOOST_TEST(attn::performer_causal_attention_unblocked(in.Q, in.K, V_thin, W).shape(1) == 0u);
    // d_k = 0 used to give NaN; r = 0 and W of the wrong width are rejected too.
    const xt::xtensor<double, 2> flat = xt::zeros<double>({5, 0}), W_flat = xt::zeros<double>({8, 0});
    BOOST_CHECK_THROW(attn::performer_attention(flat, flat, in.V, W_flat), std::invalid_argument);
    BOOST_CHECK_THROW(attn::performer_attention_unblocked(flat, flat, in.V, W_flat),
                      std::invalid_argument);
    BOOST_CHECK_THROW(attn::performer_causal_attention(flat, flat, in.V, W_flat),
                      std::invalid_argument);
    BOOST_CHECK_THROW(attn::performer_causal_attention_unblocked(flat, flat, in.V, W_flat),
                      std::invalid_argument);
    const xt::xtensor<double, 2> W_none = xt::zeros<double>({0, 4}), W_wide = xt::zeros<double>({8, 5});
    for (const auto* bad : {&W_none, &W_wide}) {
        BOOST_CHECK_THROW(attn::performer_attention(in.Q, in.K, in.V, *bad), std::invalid_argument);
        BOOST_CHECK_THROW(attn::performer_attention_unblocked(in.Q, in.K, in.V, *bad),
                          std::invalid_argument);
        BOOST_CHECK_THROW(attn::performer_causal_attention(in.Q, in.K, in.V, *bad),
                          std::invalid_argument);
        BOOST_CHECK_THROW(attn::performer_causal_attention_unblocked(in.Q, in.K, in.V, *bad),
                          std::invalid_argument);
    }
}

BOOST_AUTO_TEST_CASE(options_are_checked_or_clamped_before_any_memory_is_touched)
{
    BOOST_CHECK_THROW(attn::iid_features<double>(huge / 2, 4, 1), std::invalid_argument);
    BOOST_CHECK_THROW(attn::orthogonal_features<double>(huge / 2, 4, 1), std::invalid_argument);
    BOOST_CHECK_THROW(attn::iid_features<double>(0, 4, 1), std::invalid_argument);
    const Inputs in = random_inputs(9, 9, 4, 3, 502);
    const auto W = attn::orthogonal_features<double>(8, 4, 1);
    const auto reference = attn::performer_attention_unblocked(in.Q, in.K, in.V, W);
    const auto causal = attn::performer_causal_attention_unblocked(in.Q, in.K, in.V, W);
    for (std::size_t block : {std::size_t(1), std::size_t(9), std::size_t(10), huge}) {
        check_close(attn::performer_attention(in.Q, in.K, in.V, W, block), reference, 1e-12,
                    1e-13, "block " + std::to_string(block));
        check_close(attn::performer_causal_attention(in.Q, in.K, in.V, W, block), causal, 1e-12,
                    1e-13, "causal block " + std::to_string(block));
    }
}

BOOST_AUTO_TEST_CASE(a_nan_reaches_the_outputs_that_depend_on_it)
{
    const std::size_t n = 12, j = 5;
    const auto W = attn::orthogonal_features<double>(16, 6, 2);
    for (double bad : {nan_value, std::numeric_limits<double>::infinity()}) {
        {  // a key: every output through the key summaries; causal: rows from j on
            Inputs in = random_inputs(n, n, 6, 3, 503);
            in.K(j, 4) = bad;
            const auto o = all_kernels(in, W, 4);
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t c = 0; c < 3; ++c) {
                    BOOST_TEST(!finite_at(o.blocked, i, c));
                    BOOST_TEST(!finite_at(o.unblocked, i, c));
                    BOOST_TEST(finite_at(o.causal, i, c) == (i < j));
                    BOOST_TEST(finite_at(o.causal_unblocked, i, c) == (i < j));
                }
        }
        {  // a query: its own row only
            Inputs in = random_inputs(n, n, 6, 3, 504);
            in.Q(j, 0) = bad;
            const auto o = all_kernels(in, W, 4);
            for (std::size_t i = 0; i < n; ++i)
                for (const auto* O : {&o.blocked, &o.unblocked, &o.causal, &o.causal_unblocked})
                    BOOST_TEST(finite_at(*O, i, 1) == (i != j));
        }
        {  // a value: its column, of every row (causal: from j on)
            Inputs in = random_inputs(n, n, 6, 3, 505);
            in.V(j, 2) = -bad;
            const auto o = all_kernels(in, W, 4);
            for (std::size_t i = 0; i < n; ++i) {
                BOOST_TEST(!finite_at(o.blocked, i, 2));
                BOOST_TEST(!finite_at(o.unblocked, i, 2));
                BOOST_TEST(finite_at(o.causal, i, 2) == (i < j));
                BOOST_TEST(finite_at(o.causal_unblocked, i, 2) == (i < j));
                for (const auto* O : {&o.blocked, &o.unblocked, &o.causal, &o.causal_unblocked})
                    BOOST_TEST(finite_at(*O, i, 0));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(the_range_ends_where_the_squared_lengths_overflow)
{
    // d_k = 64. Entries of 10³ used to give NaN everywhere in double (from about 100 on):
    // one query's largest feature met keys whose matching features had underflowed, 0/0.
    // The per-feature stabiliser keeps every denominator ≥ 1: finite up to about 10^153
    // in double and 10^18 in float; beyond, the squared lengths overflow and the outputs
    // are NaN.
    const Inputs in = random_inputs(16, 16, 64, 4, 506);
    const auto W = attn::orthogonal_features<double>(64, 64, 3);
    auto run = [&](auto zero, double scale, auto kernel) {
        using T = decltype(zero);
        const xt::xtensor<T, 2> Q = in.Q * scale, K = in.K * scale, V = in.V, W_t = W;
        return test_support::all_finite(kernel(Q, K, V, W_t));
    };
    auto bidirectional = [](const auto& Q, const auto& K, const auto& V, const auto& W) {
        return attn::performer_attention(Q, K, V, W);
    };
    auto causal = [](const auto& Q, const auto& K, const auto& V, const auto& W) {
        return attn::performer_causal_attention(Q, K, V, W);
    };
    for (double scale : {1e2, 1e3, 1e8, 1e150}) {
        BOOST_TEST(run(0.0, scale, bidirectional), "double, entries ×" << scale);
        BOOST_TEST(run(0.0, scale, causal), "double causal, entries ×" << scale);
    }
    BOOST_TEST(!run(0.0, 1e155, bidirectional));
    BOOST_TEST(!run(0.0, 1e155, causal));
    for (double scale : {30.0, 1e3, 1e18}) {
        BOOST_TEST(run(0.0f, scale, bidirectional), "float, entries ×" << scale);
        BOOST_TEST(run(0.0f, scale, causal), "float causal, entries ×" << scale);
    }
    BOOST_TEST(!run(0.0f, 1e20, bidirectional));
    BOOST_TEST(!run(0.0f, 1e20, causal));
    // Inside the range the stabilised kernels still agree with each other.
    const xt::xtensor<double, 2> Q = in.Q * 1e3, K = in.K * 1e3;
    check_close(attn::performer_attention(Q, K, in.V, W, 5),
                attn::performer_attention_unblocked(Q, K, in.V, W), 1e-9, 1e-9, "×10³ blocked");
}

BOOST_AUTO_TEST_CASE(fuzz_performer_against_its_unblocked_reference)
{
    std::mt19937_64 rng(20261130);
    const std::vector<std::size_t> sizes = {1, 2, 3, 5, 7, 11, 13, 17, 23, 31, 37, 40};
    auto pick = [&](const std::vector<std::size_t>& from) { return from[rng() % from.size()]; };
    FuzzBudget budget(4000);
    while (budget.another()) {
        const std::size_t n = pick(sizes), m = rng() % 2 ? n : pick(sizes);
        const std::size_t d_k = pick({0, 1, 2, 5, 8}), d_v = pick({0, 1, 3});
        const std::size_t r = pick({0, 1, 2, 7, 16});
        const std::size_t block = pick({0, 1, 2, n, n + 1, huge, 1 + rng() % n});
        Inputs in = random_inputs(n, m, d_k, d_v, rng());
        const bool orthogonal = rng() % 2 == 1;
        xt::xtensor<double, 2> W = xt::zeros<double>({r, d_k});
        if (r > 0 && d_k > 0)
            W = orthogonal ? attn::orthogonal_features<double>(r, d_k, rng())
                           : attn::iid_features<double>(r, d_k, rng());
        BOOST_TEST_CONTEXT("case " << budget.drawn() << ": n = " << n << ", m = " << m
                                   << ", d_k = " << d_k << ", d_v = " << d_v << ", r = " << r
                                   << ", block = " << block)
        {
            if (d_k == 0 || r == 0) {
                BOOST_CHECK_THROW(attn::performer_attention(in.Q, in.K, in.V, W, block),
                                  std::invalid_argument);
                BOOST_CHECK_THROW(attn::performer_attention_unblocked(in.Q, in.K, in.V, W),
                                  std::invalid_argument);
                continue;
            }
            const int poison = int(rng() % 4);  // 0: none; 1: NaN in Q; 2: NaN in K; 3: inf in V
            const std::size_t j = rng() % m, c_bad = d_v > 0 ? rng() % d_v : 0;
            if (poison == 1) in.Q(j % n, rng() % d_k) = nan_value;
            if (poison == 2) in.K(j, rng() % d_k) = nan_value;
            if (poison == 3 && d_v > 0) in.V(j, c_bad) = std::numeric_limits<double>::infinity();
            const auto o = all_kernels(in, W, block);
            BOOST_TEST_REQUIRE(o.blocked.shape(0) == n);
            BOOST_TEST_REQUIRE(o.blocked.shape(1) == d_v);
            if (poison == 0 || d_v == 0) {
                if (poison != 0) continue;
                check_close(o.blocked, o.unblocked, 1e-11, 1e-12, "blocked vs unblocked");
                check_close(o.unblocked, naive_favor(in, W, [](std::size_t, std::size_t) {
                                return true;
                            }), 1e-9, 1e-10, "unblocked vs the formula");
                if (n == m) {
                    check_close(o.causal, o.causal_unblocked, 1e-11, 1e-12, "causal blocked");
                    check_close(o.causal_unblocked, naive_favor(in, W, [](std::size_t i, std::size_t k) {
                                    return k <= i;
                                }), 1e-9, 1e-10, "causal vs the formula");
                }
                continue;
            }
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t c = 0; c < d_v; ++c) {
                    const bool by_query = poison == 1 && i == j % n;
                    const bool bidirectional_bad = by_query || poison == 2 || (poison == 3 && c == c_bad);
                    const bool causal_bad = by_query || (poison != 1 && i >= j && (poison == 2 || c == c_bad));
                    BOOST_TEST(finite_at(o.blocked, i, c) == !bidirectional_bad);
                    BOOST_TEST(finite_at(o.unblocked, i, c) == !bidirectional_bad);
                    if (n == m) {
                        BOOST_TEST(finite_at(o.causal, i, c) == !causal_bad);
                        BOOST_TEST(finite_at(o.causal_unblocked, i, c) == !causal_bad);
                    }
                }
        }
    }
    BOOST_TEST_MESSAGE("fuzz: " << budget.drawn() - 1 << " cases");
}

BOOST_AUTO_TEST_CASE(the_weights_are_one_grid_on_their_own_scale)
{
    using test_support::svg_says;
    const auto dir = test_support::run_chapter_program("ch11_performer");
    const auto out = dir / "out";
    test_support::check_panels(out / "weights.tsv", {"dense", "FAVOR+, r = 256", "FAVOR+ − dense", "causal FAVOR+"});
    BOOST_TEST(svg_says(out / "weights.svg", "difference of weights"));
    BOOST_TEST(svg_says(out / "weights.svg", "0"));
    BOOST_TEST(!svg_says(out / "weights.svg", "0.8"));  // the weights are not drawn on [0, 1]
    const auto curves = test_support::figure_data(out / "mse_vs_r.tsv").names;
    for (const std::string& name : curves) BOOST_TEST(svg_says(out / "mse_vs_r.svg", name), name);
    BOOST_TEST(curves.size() == 6u);
    BOOST_TEST(svg_says(out / "mse_vs_r.svg", "r (random features)"));
    test_support::check_cost_figure(out / "cost_time.svg", "seconds");
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(the_stabilised_weights_equal_the_formula_from_the_features)
{
    Inputs in = random_inputs(10, 13, 8, 5, 41);
    const auto W = attn::orthogonal_features<double>(32, 8, 6);
    const xt::xtensor<double, 2> phi_Q = attn::favor_features(in.Q, W), phi_K = attn::favor_features(in.K, W);
    for (const bool causal : {false, true}) {
        const std::size_t n = in.Q.shape(0), m = in.K.shape(0);
        xt::xtensor<double, 2> expected = xt::zeros<double>({n, m});
        for (std::size_t i = 0; i < n; ++i) {
            double total = 0;
            for (std::size_t j = 0; j < m; ++j) {
                if (causal && j > m - n + i) continue;
                for (std::size_t l = 0; l < W.shape(0); ++l) expected(i, j) += phi_Q(i, l) * phi_K(j, l);
                total += expected(i, j);
            }
            for (std::size_t j = 0; j < m; ++j) expected(i, j) /= total;
        }
        check_close(attn::performer_weights(in.Q, in.K, W, causal), expected, 1e-12, 1e-13,
                    causal ? "causal" : "bidirectional");
    }
}

BOOST_AUTO_TEST_CASE(the_weights_stay_finite_on_sharp_inputs_and_match_the_kernels)
{
    // entries of 10³: the unstabilised features underflow to 0/0
    Inputs in = random_inputs(12, 12, 8, 12, 42);
    in.Q *= 1e3;
    in.K *= 1e3;
    const auto W = attn::orthogonal_features<double>(16, 8, 7);
    const xt::xtensor<double, 2> I = xt::eye<double>(12);
    const auto P = attn::performer_weights(in.Q, in.K, W);
    const auto P_causal = attn::performer_weights(in.Q, in.K, W, true);
    BOOST_TEST(xt::all(xt::isfinite(P)));
    BOOST_TEST(xt::all(xt::isfinite(P_causal)));
    check_close(P, attn::performer_attention(in.Q, in.K, I, W), 1e-6, 1e-9, "bidirectional");
    check_close(P_causal, attn::performer_causal_attention(in.Q, in.K, I, W), 1e-6, 1e-9, "causal");
}

BOOST_AUTO_TEST_CASE(causal_weights_of_the_last_queries_are_the_last_rows)
{
    Inputs in = random_inputs(14, 14, 8, 4, 43);
    const auto W = attn::orthogonal_features<double>(16, 8, 8);
    const xt::xtensor<double, 2> all = attn::performer_weights(in.Q, in.K, W, true);
    const xt::xtensor<double, 2> last_Q = xt::view(in.Q, xt::range(10, 14), xt::all());
    check_close(attn::performer_weights(last_Q, in.K, W, true),
                xt::xtensor<double, 2>(xt::view(all, xt::range(10, 14), xt::all())), 0.0, 0.0, "last rows");
    const xt::xtensor<double, 2> too_many = random_inputs(15, 8, 1, 44).Q;  // 15 > 14 queries
    BOOST_CHECK_THROW(attn::performer_weights(too_many, in.K, W, true), std::invalid_argument);
}
