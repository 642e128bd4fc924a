// Chapter 10: Linformer.
#define BOOST_TEST_MODULE ch10_linformer
#define BOOST_TEST_DYN_LINK
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

#include "attn/linformer.hpp"
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

/// P·X in long double, by loops written independently of the library.
xt::xtensor<double, 2> naive_project(const xt::xtensor<double, 2>& P, const xt::xtensor<double, 2>& X)
{
    xt::xtensor<double, 2> Y = xt::zeros<double>({P.shape(0), X.shape(1)});
    for (std::size_t l = 0; l < P.shape(0); ++l)
        for (std::size_t c = 0; c < X.shape(1); ++c) {
            long double acc = 0;
            for (std::size_t j = 0; j < P.shape(1); ++j) acc += (long double)P(l, j) * (long double)X(j, c);
            Y(l, c) = double(acc);
        }
    return Y;
}

double rms(const xt::xtensor<double, 2>& x)
{
    return std::sqrt(xt::mean(x * x)());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(random_projection)

BOOST_AUTO_TEST_CASE(has_shape_k_by_n_and_variance_one_over_k)
{
    const auto E = attn::random_projection<double>(64, 1000, 7);
    BOOST_TEST(E.shape(0) == 64u);
    BOOST_TEST(E.shape(1) == 1000u);
    const double mean = xt::mean(E)();
    const double variance = xt::mean(xt::square(E - mean))();
    // 64000 draws: the sample mean has standard error 0.125/253 ≈ 5e-4, the variance ≈ 1.5/64000·(1/64)... ≈ 9e-5.
    BOOST_TEST(std::abs(mean) < 3e-3);
    BOOST_TEST(std::abs(variance * 64 - 1.0) < 0.03);
}

BOOST_AUTO_TEST_CASE(is_fixed_by_its_seed_and_agrees_across_types)
{
    const auto a = attn::random_projection<double>(8, 20, 3);
    const auto b = attn::random_projection<double>(8, 20, 3);
    const auto c = attn::random_projection<double>(8, 20, 4);
    const auto f = attn::random_projection<float>(8, 20, 3);
    BOOST_TEST(a == b);
    BOOST_TEST(a != c);
    check_close(f, a, 1e-7, 0, "float vs double draw");
}

BOOST_AUTO_TEST_CASE(preserves_dot_products_on_average)
{
    // E[EᵀE] = I: the projected dot product (Ex)·(Ey) is unbiased for x·y.
    std::mt19937_64 rng(11);
    const auto x = attn::random_normal<double>(200, 1, 1.0, rng), y = attn::random_normal<double>(200, 1, 1.0, rng);
    const double exact = xt::sum(x * y)();
    double mean = 0;
    const int draws = 400;
    for (int s = 0; s < draws; ++s) {
        const auto E = attn::random_projection<double>(32, 200, 100 + s);
        const xt::xtensor<double, 2> Ex = xt::linalg::dot(E, x), Ey = xt::linalg::dot(E, y);
        mean += xt::sum(Ex * Ey)() / draws;
    }
    // One draw has standard deviation ≈ √((|x|²|y|² + (x·y)²)/k) ≈ 35; the mean of 400, ≈ 1.8.
    BOOST_TEST(std::abs(mean - exact) < 8.0, "mean " << mean << " vs exact " << exact);
}

BOOST_AUTO_TEST_CASE(rejects_empty_shapes)
{
    BOOST_CHECK_THROW(attn::random_projection<float>(0, 10, 1), std::invalid_argument);
    BOOST_CHECK_THROW(attn::random_projection<float>(4, 0, 1), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(linformer)

BOOST_AUTO_TEST_CASE(output_has_shape_n_by_d_v_and_weights_n_by_k)
{
    const auto [Q, K, V] = random_inputs(9, 12, 8, 5, 1);
    const auto E = attn::random_projection<double>(4, 12, 2), F = attn::random_projection<double>(4, 12, 3);
    const auto O = attn::linformer_attention(Q, K, V, E, F);
    BOOST_TEST(O.shape(0) == 9u);
    BOOST_TEST(O.shape(1) == 5u);
    const auto A = attn::linformer_weights(Q, K, E);
    BOOST_TEST(A.shape(0) == 9u);
    BOOST_TEST(A.shape(1) == 4u);
    const xt::xtensor<double, 1> sums = xt::sum(A, {1});
    check_close(sums, xt::xtensor<double, 1>(xt::ones<double>({9})), 0, 1e-12, "row sums");
}

BOOST_AUTO_TEST_CASE(rejects_projections_of_the_wrong_shape)
{
    const auto [Q, K, V] = random_inputs(6, 10, 4, 4, 2);
    const auto good = attn::random_projection<double>(3, 10, 1);
    const auto wrong_n = attn::random_projection<double>(3, 9, 1);
    const auto wrong_k = attn::random_projection<double>(4, 10, 1);
    BOOST_CHECK_THROW(attn::linformer_attention(Q, K, V, wrong_n, good), std::invalid_argument);
    BOOST_CHECK_THROW(attn::linformer_attention(Q, K, V, good, wrong_n), std::invalid_argument);
    BOOST_CHECK_THROW(attn::linformer_attention(Q, K, V, good, wrong_k), std::invalid_argument);
    BOOST_CHECK_THROW(attn::linformer_attention(Q, K, xt::xtensor<double, 2>(xt::zeros<double>({9, 4})), good, good),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(identity_projections_with_k_equal_n_give_dense_attention_exactly)
{
    for (std::size_t n : {1, 7, 64}) {
        const auto [Q, K, V] = random_inputs(n, n, 16, 8, 10 + n);
        const xt::xtensor<float, 2> Qf(Q), Kf(K), Vf(V);
        const xt::xtensor<float, 2> I = xt::eye<float>(n);
        const auto linformer = attn::linformer_attention(Qf, Kf, Vf, I, I);
        const auto dense = attn::scaled_dot_product_attention(Qf, Kf, Vf);
        BOOST_TEST(linformer == dense, "n = " << n << ": max difference " << xt::amax(xt::abs(linformer - dense))());
    }
}

BOOST_AUTO_TEST_CASE(equals_naive_attention_over_naively_projected_rows)
{
    for (auto [n, k, d_k, d_v] : std::vector<std::array<std::size_t, 4>>{{1, 1, 1, 1}, {5, 2, 3, 4}, {33, 8, 16, 8}}) {
        const auto [Q, K, V] = random_inputs(n, n, d_k, d_v, 100 + n);
        const auto E = attn::random_projection<double>(k, n, 1), F = attn::random_projection<double>(k, n, 2);
        const auto expected = naive_attention(Q, naive_project(E, K), naive_project(F, V));
        check_close(attn::linformer_attention(Q, K, V, E, F), expected, 1e-12, 1e-13, "fast vs naive");
        check_close(attn::linformer_attention_by_rows(Q, K, V, E, F), expected, 1e-12, 1e-13, "loops vs naive");
    }
}

BOOST_AUTO_TEST_CASE(float_agrees_with_double)
{
    const auto [Q, K, V] = random_inputs(40, 40, 32, 16, 5);
    const auto E = attn::random_projection<double>(10, 40, 1);
    const auto expected = attn::linformer_attention(Q, K, V, E, E);
    const xt::xtensor<float, 2> Qf(Q), Kf(K), Vf(V), Ef(E);
    check_close(attn::linformer_attention(Qf, Kf, Vf, Ef, Ef), expected, 1e-4, 1e-5, "float vs double");
}

BOOST_AUTO_TEST_CASE(mean_error_falls_as_k_grows)
{
    // Random projections E = F ~ N(0, 1/k), averaged over draws: the RMS error against dense
    // attention must fall strictly from k = 8 to 32 to 128 (n = 256).
    const std::size_t n = 256;
    const auto [Q, K, V] = random_inputs(n, n, 32, 32, 8);
    const auto dense = naive_attention(Q, K, V);
    std::vector<double> errors;
    for (std::size_t k : {8, 32, 128}) {
        double mean = 0;
        for (int draw = 0; draw < 8; ++draw) {
            const auto E = attn::random_projection<double>(k, n, 1000 * k + draw);
            mean += rms(attn::linformer_attention(Q, K, V, E, E) - dense) / 8;
        }
        errors.push_back(mean);
    }
    BOOST_TEST_MESSAGE("mean RMS errors at k = 8, 32, 128: " << errors[0] << " " << errors[1] << " " << errors[2]);
    BOOST_TEST(errors[1] < 0.8 * errors[0]);
    BOOST_TEST(errors[2] < 0.8 * errors[1]);
}

BOOST_AUTO_TEST_CASE(mean_pooling_is_the_identity_at_k_equal_n_and_averages_segments)
{
    const std::size_t n = 64;
    const auto [Q, K, V] = random_inputs(n, n, 8, 8, 9);
    const auto I = attn::pooling_projection<double>(n, n);
    const xt::xtensor<double, 2> identity = xt::eye<double>(n);
    BOOST_TEST(I == identity);
    const auto P = attn::pooling_projection<double>(5, 13);  // uneven segments
    const xt::xtensor<double, 1> sums = xt::sum(P, {1});
    check_close(sums, xt::xtensor<double, 1>(xt::ones<double>({5})), 0, 1e-15, "pooling rows sum to 1");
    BOOST_CHECK_THROW(attn::pooling_projection<double>(14, 13), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(zero_padding_equals_truncated_projections)
{
    // A sequence of n' < n tokens padded with zero keys and values to the model's n gives the same
    // result as the first n' columns of E and F: padded rows add nothing to E·K or F·V.
    const std::size_t n = 20, n_short = 13, k = 6;
    const auto [Q, K, V] = random_inputs(n_short, n_short, 8, 4, 12);
    const auto E = attn::random_projection<double>(k, n, 1), F = attn::random_projection<double>(k, n, 2);
    xt::xtensor<double, 2> K_pad = xt::zeros<double>({n, std::size_t(8)}), V_pad = xt::zeros<double>({n, std::size_t(4)});
    xt::view(K_pad, xt::range(0, n_short), xt::all()) = K;
    xt::view(V_pad, xt::range(0, n_short), xt::all()) = V;
    const xt::xtensor<double, 2> E_cut = xt::view(E, xt::all(), xt::range(0, n_short));
    const xt::xtensor<double, 2> F_cut = xt::view(F, xt::all(), xt::range(0, n_short));
    check_close(attn::linformer_attention(Q, K_pad, V_pad, E, F), attn::linformer_attention(Q, K, V, E_cut, F_cut),
                1e-13, 1e-14, "padded vs truncated");
}

BOOST_AUTO_TEST_CASE(every_output_depends_on_the_last_token)
{
    // The limit of the mechanism: no causality. Changing only the last key moves the first output.
    const std::size_t n = 16;
    auto [Q, K, V] = random_inputs(n, n, 8, 8, 13);
    const auto E = attn::random_projection<double>(4, n, 1);
    const auto before = attn::linformer_attention(Q, K, V, E, E);
    xt::row(K, n - 1) += 1.0;
    const auto after = attn::linformer_attention(Q, K, V, E, E);
    BOOST_TEST(xt::amax(xt::abs(xt::row(after, 0) - xt::row(before, 0)))() > 1e-6);
}

BOOST_AUTO_TEST_CASE(huge_logits_stay_finite)
{
    auto [Q, K, V] = random_inputs(8, 8, 4, 4, 14);
    Q *= 1e4;
    const auto E = attn::random_projection<float>(3, 8, 1);
    const xt::xtensor<float, 2> Qf(Q), Kf(K), Vf(V);
    BOOST_TEST(test_support::all_finite(attn::linformer_attention(Qf, Kf, Vf, E, E)));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

namespace {

constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();
constexpr std::size_t huge = std::numeric_limits<std::size_t>::max();


}  // namespace

BOOST_AUTO_TEST_CASE(degenerate_shapes_throw_or_give_empty_results)
{
    const auto [Q, K, V] = random_inputs(5, 7, 4, 3, 301);
    const auto E = attn::random_projection<double>(3, 7, 1);
    const xt::xtensor<double, 2> Q_none = xt::zeros<double>({0, 4});
    const auto O = attn::linformer_attention(Q_none, K, V, E, E);
    BOOST_TEST(O.shape(0) == 0u);
    BOOST_TEST(O.shape(1) == 3u);
    const xt::xtensor<double, 2> V_thin = xt::zeros<double>({7, 0});
    const auto O_thin = attn::linformer_attention(Q, K, V_thin, E, E);
    BOOST_TEST(O_thin.shape(0) == 5u);
    BOOST_TEST(O_thin.shape(1) == 0u);
    // d_k = 0 (was NaN), m = 0, mismatched widths and projections: all rejected.
    const xt::xtensor<double, 2> Q_flat = xt::zeros<double>({5, 0}), K_flat = xt::zeros<double>({7, 0});
    BOOST_CHECK_THROW(attn::linformer_attention(Q_flat, K_flat, V, E, E), std::invalid_argument);
    BOOST_CHECK_THROW(attn::linformer_weights(Q_flat, K_flat, E), std::invalid_argument);
    const xt::xtensor<double, 2> K_none = xt::zeros<double>({0, 4}), V_none = xt::zeros<double>({0, 3});
    const xt::xtensor<double, 2> E_none = xt::zeros<double>({3, 0});
    BOOST_CHECK_THROW(attn::linformer_attention(Q, K_none, V_none, E_none, E_none),
                      std::invalid_argument);
    const xt::xtensor<double, 2> Q_wide = xt::zeros<double>({5, 5});
    BOOST_CHECK_THROW(attn::linformer_attention(Q_wide, K, V, E, E), std::invalid_argument);
    BOOST_CHECK_THROW(attn::linformer_weights(Q_wide, K, E), std::invalid_argument);
    const auto F_other_k = attn::random_projection<double>(2, 7, 2);
    BOOST_CHECK_THROW(attn::linformer_attention(Q, K, V, E, F_other_k), std::invalid_argument);
    try {
        attn::linformer_attention(Q, K, V, E, F_other_k);
    } catch (const std::invalid_argument& e) {
        BOOST_TEST(std::string(e.what()).find("3×7") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(projection_sizes_are_checked_before_any_memory_is_touched)
{
    BOOST_CHECK_NO_THROW(attn::random_projection<double>(8, 4, 1));  // k > n: only more work
    BOOST_CHECK_THROW(attn::pooling_projection<double>(8, 4), std::invalid_argument);  // empty
    BOOST_CHECK_THROW(attn::random_projection<double>(huge, huge, 1), std::invalid_argument);
    BOOST_CHECK_THROW(attn::random_projection<double>(2, huge / 2, 1), std::invalid_argument);
    BOOST_CHECK_THROW(attn::pooling_projection<double>(2, huge / 2), std::invalid_argument);
    BOOST_CHECK_THROW(attn::pooling_projection<double>(0, 4), std::invalid_argument);
    BOOST_CHECK_NO_THROW(attn::random_projection<double>(4, 4, 1));  // k = n
}

BOOST_AUTO_TEST_CASE(a_nan_reaches_the_outputs_the_projection_carries_it_to)
{
    const std::size_t n = 9, k = 4;
    const auto E = attn::random_projection<double>(k, n, 1), F = attn::random_projection<double>(k, n, 2);
    {  // a key: every output, through every row of E·K
        auto [Q, K, V] = random_inputs(n, n, 5, 3, 302);
        K(6, 2) = nan_value;
        const auto O = attn::linformer_attention(Q, K, V, E, F);
        for (std::size_t i = 0; i < n; ++i) BOOST_TEST(!row_finite(O, i));
    }
    {  // a query: its own row only
        auto [Q, K, V] = random_inputs(n, n, 5, 3, 303);
        Q(3, 0) = nan_value;
        const auto O = attn::linformer_attention(Q, K, V, E, F);
        for (std::size_t i = 0; i < n; ++i) BOOST_TEST(row_finite(O, i) == (i != 3));
    }
    for (double bad : {nan_value, std::numeric_limits<double>::infinity()}) {  // a value
        auto [Q, K, V] = random_inputs(n, n, 5, 3, 304);
        V(8, 1) = bad;
        const auto O = attn::linformer_attention(Q, K, V, E, F);
        BOOST_TEST(!column_finite(O, 1));
        for (std::size_t i = 0; i < n; ++i) BOOST_TEST(!std::isfinite(O(i, 1)));
        BOOST_TEST(column_finite(O, 0));
        BOOST_TEST(column_finite(O, 2));
    }
}

BOOST_AUTO_TEST_CASE(fuzz_linformer_against_dense_attention_on_projected_rows)
{
    std::mt19937_64 rng(20261130);
    const std::vector<std::size_t> sizes = {1, 2, 3, 5, 7, 11, 13, 17, 23, 31, 37, 40};
    auto pick = [&](const std::vector<std::size_t>& from) { return from[rng() % from.size()]; };
    FuzzBudget budget(6000);
    while (budget.another()) {
        const std::size_t n = pick(sizes), m = pick(sizes), d_k = pick({0, 1, 2, 5, 8});
        const std::size_t d_v = pick({0, 1, 3, 4});
        const std::size_t k = pick({0, 1, 2, m, m + 1, huge, 1 + rng() % m});
        const bool pooling = rng() % 2 == 1;
        auto [Q, K, V] = random_inputs(n, m, d_k, d_v, rng());
        BOOST_TEST_CONTEXT("case " << budget.drawn() << ": n = " << n << ", m = " << m
                                   << ", d_k = " << d_k << ", d_v = " << d_v << ", k = " << k
                                   << (pooling ? ", pooling" : ", random"))
        {
            if (k == 0 || k > m) {  // pooling rejects it; random only k = 0 or k·m too big
                BOOST_CHECK_THROW(attn::pooling_projection<double>(k, m), std::invalid_argument);
                if (k == 0 || k == huge) {
                    BOOST_CHECK_THROW(attn::random_projection<double>(k, m, 1),
                                      std::invalid_argument);
                    continue;
                }
                if (pooling) continue;
            }
            const auto E = pooling ? attn::pooling_projection<double>(k, m)
                                   : attn::random_projection<double>(k, m, rng());
            const auto F = pooling ? E : attn::random_projection<double>(k, m, rng());
            if (d_k == 0) {
                BOOST_CHECK_THROW(attn::linformer_attention(Q, K, V, E, F), std::invalid_argument);
                continue;
            }
            const int poison = int(rng() % 4);  // 0: none; 1: NaN in Q; 2: NaN in K; 3: inf in V
            const std::size_t j = rng() % std::max(n, m);
            if (poison == 1 && n > 0) Q(j % n, rng() % d_k) = nan_value;
            if (poison == 2) K(j % m, rng() % d_k) = nan_value;
            if (poison == 3 && d_v > 0) V(j % m, 0) = -std::numeric_limits<double>::infinity();
            const auto O = attn::linformer_attention(Q, K, V, E, F);
            BOOST_TEST_REQUIRE(O.shape(0) == n);
            BOOST_TEST_REQUIRE(O.shape(1) == d_v);
            if (poison == 0) {
                check_close(O, naive_attention(Q, naive_project(E, K), naive_project(F, V)), 1e-11,
                            1e-12, "dense attention on the projected rows");
                continue;
            }
            for (std::size_t i = 0; i < n; ++i) {
                if (poison == 1 && d_v > 0) BOOST_TEST(row_finite(O, i) == (i != j % n));
                // A random projection carries a bad key to every row of E·K, pooling only
                // to its segment's row, whose weight is then NaN in every output.
                if (poison == 2 && d_v > 0) BOOST_TEST(!row_finite(O, i));
                if (poison == 3 && d_v > 0) BOOST_TEST(!std::isfinite(O(i, 0)));
            }
        }
    }
    BOOST_TEST_MESSAGE("fuzz: " << budget.drawn() - 1 << " cases");
}

BOOST_AUTO_TEST_CASE(the_figures_name_their_axes_and_curves)
{
    using test_support::svg_says;
    const auto dir = test_support::run_chapter_program("ch10_linformer");
    const auto out = dir / "out";
    BOOST_TEST(test_support::figure_data(out / "spectrum.tsv").names ==
                   (std::vector<std::string>{"random", "positions", "vocabulary"}),
               boost::test_tools::per_element());
    for (const char* text : {"index r", "cr", "random", "positions", "vocabulary"})  // c_r: c, subscript r
        BOOST_TEST(svg_says(out / "spectrum.svg", text), "spectrum.svg lacks " << text);
    for (const char* figure : {"weights_dense.svg", "weights_linformer.svg"})
        BOOST_TEST(svg_says(out / figure, "attention weight"), figure);
    test_support::check_cost_figure(out / "cost_time.svg", "seconds");
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
