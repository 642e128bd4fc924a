// Chapter 12: Reformer LSH attention with shared QK.
#define BOOST_TEST_MODULE ch12_reformer
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "attn/random.hpp"
#include "attn/reformer.hpp"
#include "test_support.hpp"

using test_support::check_close;
using test_support::column_finite;
using test_support::FuzzBudget;
using test_support::row_finite;
using test_support::naive_attention;

namespace {

struct Inputs {
    xt::xtensor<double, 2> QK, V;
};

/// Random QK (n×d_k) and V (n×d_v) with N(0, 1) entries.
Inputs random_inputs(std::size_t n, std::size_t d_k, std::size_t d_v, std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    return {attn::random_normal<double>(n, d_k, 1.0, rng), attn::random_normal<double>(n, d_v, 1.0, rng)};
}

/// n rows near `topics` random directions (noise `spread`), scaled so scores reach `sharpness`.
xt::xtensor<double, 2> clustered(std::size_t n, std::size_t d_k, std::size_t topics, double spread, double sharpness,
                                 std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    const auto centres = attn::random_normal<double>(topics, d_k, 1.0, rng);
    const auto noise = attn::random_normal<double>(n, d_k, 1.0, rng);
    xt::xtensor<double, 2> QK = xt::zeros<double>({n, d_k});
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t t = i % topics;
        const double centre_norm = std::sqrt(double(xt::sum(xt::square(xt::row(centres, t)))()));
        for (std::size_t c = 0; c < d_k; ++c)
            QK(i, c) = centres(t, c) / centre_norm + spread * noise(i, c) / std::sqrt(double(d_k));
        const double norm = std::sqrt(double(xt::sum(xt::square(xt::row(QK, i)))()));
        xt::row(QK, i) *= sharpness * std::sqrt(double(d_k)) / norm;
    }
    return QK;
}

/// Unit keys computed independently: q_j/‖q_j‖ in long double (a zero row stays zero).
xt::xtensor<double, 2> reference_keys(const xt::xtensor<double, 2>& QK)
{
    xt::xtensor<double, 2> K = QK;
    for (std::size_t j = 0; j < QK.shape(0); ++j) {
        long double norm_sq = 0;
        for (std::size_t c = 0; c < QK.shape(1); ++c) norm_sq += (long double)QK(j, c) * QK(j, c);
        if (norm_sq == 0) continue;
        for (std::size_t c = 0; c < QK.shape(1); ++c) K(j, c) = double(QK(j, c) / std::sqrt(norm_sq));
    }
    return K;
}

/// Dense shared-QK attention by the long-double triple loop: self only when n = 1.
template <class T>
xt::xtensor<T, 2> reference_dense(const xt::xtensor<double, 2>& QK, const xt::xtensor<double, 2>& V)
{
    const std::size_t n = QK.shape(0);
    const xt::xtensor<T, 2> Q = QK, K = reference_keys(QK), V_t = V;
    return naive_attention(Q, K, V_t, [n](std::size_t i, std::size_t j) { return i != j || n == 1; });
}

double relative_error(const xt::xtensor<double, 2>& O, const xt::xtensor<double, 2>& reference)
{
    const xt::xtensor<double, 2> difference = O - reference;
    return std::sqrt(double(xt::sum(difference * difference)()) / double(xt::sum(reference * reference)()));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(dense_reference)

BOOST_AUTO_TEST_CASE(dense_shared_qk_equals_a_naive_loop_with_the_self_rule)
{
    for (std::size_t n : {1, 2, 9, 40}) {
        const auto [QK, V] = random_inputs(n, 8, 5, 10 + n);
        check_close(attn::shared_qk_attention(QK, V), reference_dense<double>(QK, V), 0, 1e-12, "dense, double");
    }
}

BOOST_AUTO_TEST_CASE(row_form_equals_matrix_form)
{
    for (std::size_t n : {1, 2, 17}) {
        const auto [QK, V] = random_inputs(n, 6, 4, 20 + n);
        check_close(attn::shared_qk_attention_by_rows(QK, V), attn::shared_qk_attention(QK, V), 0, 1e-12,
                    "rows vs matrix");
    }
}

BOOST_AUTO_TEST_CASE(dense_weights_have_a_zero_diagonal_and_rows_summing_to_one)
{
    const auto [QK, V] = random_inputs(12, 6, 3, 4);
    const xt::xtensor<double, 2> A = attn::shared_qk_weights(QK);
    for (std::size_t i = 0; i < 12; ++i) {
        BOOST_TEST(A(i, i) == 0.0);
        BOOST_TEST(double(xt::sum(xt::row(A, i))()) == 1.0, boost::test_tools::tolerance(1e-12));
    }
}

BOOST_AUTO_TEST_CASE(unit_keys_have_length_one_and_a_zero_row_stays_zero)
{
    auto [QK, V] = random_inputs(5, 7, 2, 5);
    xt::row(QK, 3) = 0.0;
    const auto K = attn::unit_keys(QK);
    for (std::size_t j = 0; j < 5; ++j) {
        const double norm = std::sqrt(double(xt::sum(xt::square(xt::row(K, j)))()));
        BOOST_TEST(norm == (j == 3 ? 0.0 : 1.0), boost::test_tools::tolerance(1e-14));
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(hashing)

BOOST_AUTO_TEST_CASE(buckets_are_in_range_and_depend_on_direction_only)
{
    const auto [QK, V] = random_inputs(50, 16, 1, 7);
    const xt::xtensor<double, 2> scaled = 3.5 * QK;
    const auto buckets = attn::lsh_buckets(QK, 8, 3, 99);
    BOOST_TEST(buckets.shape(0) == 3u);
    BOOST_TEST(buckets.shape(1) == 50u);
    BOOST_TEST(xt::amax(buckets)() < 8u);
    BOOST_TEST(buckets == attn::lsh_buckets(scaled, 8, 3, 99));
}

BOOST_AUTO_TEST_CASE(the_opposite_vector_lands_in_the_opposite_bucket)
{
    // argmax [−xR; xR] is argmax [xR; −xR] shifted by b/2.
    const auto [QK, V] = random_inputs(40, 16, 1, 8);
    const xt::xtensor<double, 2> negated = -QK;
    const auto buckets = attn::lsh_buckets(QK, 10, 4, 5), opposite = attn::lsh_buckets(negated, 10, 4, 5);
    for (std::size_t k = 0; k < buckets.size(); ++k) BOOST_TEST(opposite.data()[k] == (buckets.data()[k] + 5) % 10);
}

BOOST_AUTO_TEST_CASE(sorting_orders_by_bucket_then_position)
{
    const std::vector<std::size_t> bucket = {3, 1, 3, 0, 1, 1, 2, 0, 3};
    const std::vector<std::size_t> order = attn::sort_by_bucket(bucket.data(), bucket.size(), 4);
    BOOST_TEST(order == (std::vector<std::size_t>{3, 7, 1, 4, 5, 6, 0, 2, 8}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(measured_collision_probability_is_within_sampling_error_of_theory)
{
    // Two unit vectors at angle θ, hashed in `rounds` independent rounds: the collision count is
    // binomial. b = 2 is compared with the exact 1 − θ/π; b = 4, 8 with the model's Monte Carlo
    // estimate (which never calls the hash). Tolerance: 4.5 combined standard errors.
    const double pi = std::acos(-1.0);
    const std::size_t d_k = 24, rounds = 6000;
    std::mt19937_64 rng(2024);
    for (std::size_t b : {2, 4, 8}) {
        for (double degrees : {0.0, 20.0, 45.0, 70.0, 90.0, 120.0, 160.0}) {
            const double theta = degrees * pi / 180;
            xt::xtensor<double, 2> pair = xt::zeros<double>({std::size_t(2), d_k});
            // x = e_a, y = cos θ e_a + sin θ e_b for two random distinct axes, then a random sign flip per axis
            const std::size_t a = rng() % d_k, b_axis = (a + 1 + rng() % (d_k - 1)) % d_k;
            pair(0, a) = 1;
            pair(1, a) = std::cos(theta), pair(1, b_axis) = std::sin(theta);
            const auto buckets = attn::lsh_buckets(pair, b, rounds, rng());
            double collisions = 0;
            for (std::size_t r = 0; r < rounds; ++r) collisions += buckets(r, 0) == buckets(r, 1);
            const double p = collisions / double(rounds);
            const auto [p_theory, p_error] = attn::collision_probability(theta, b, 400000, rng());
            const double sigma = std::sqrt(p_theory * (1 - p_theory) / double(rounds) + p_error * p_error);
            BOOST_TEST_CONTEXT("b = " << b << ", θ = " << degrees << "°: measured " << p << ", theory "
                                      << p_theory << " ± " << sigma)
            {
                BOOST_TEST(std::abs(p - p_theory) <= 4.5 * sigma + 1e-12);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(the_model_estimate_reproduces_one_minus_theta_over_pi_for_two_buckets)
{
    // collision_probability(θ, 2, …) returns the closed form; check the closed form against a
    // direct simulation of the one-column model: sign(u) = sign(w).
    const double pi = std::acos(-1.0);
    std::mt19937_64 rng(3);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (double theta : {0.3, 1.0, 2.0}) {
        const std::size_t samples = 200000;
        double same = 0;
        for (std::size_t t = 0; t < samples; ++t) {
            const double u = normal(rng), w = std::cos(theta) * u + std::sin(theta) * normal(rng);
            same += (u > 0) == (w > 0);
        }
        const double p = attn::collision_probability(theta, 2, 0, 0).first;
        BOOST_TEST(p == 1 - theta / pi, boost::test_tools::tolerance(1e-15));
        BOOST_TEST(std::abs(same / samples - p) <= 4.5 * std::sqrt(p * (1 - p) / samples));
    }
}

BOOST_AUTO_TEST_CASE(more_buckets_collide_less_at_every_angle)
{
    for (double theta : {0.2, 0.8, 1.5}) {
        double previous = 1.0;
        for (std::size_t b : {2, 4, 8, 16}) {
            const double p = attn::collision_probability(theta, b, 100000, 11).first;
            BOOST_TEST(p < previous);
            previous = p;
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(lsh_attention)

BOOST_AUTO_TEST_CASE(output_has_shape_n_by_d_v)
{
    const auto [QK, V] = random_inputs(37, 8, 5, 1);
    const auto O = attn::lsh_attention(QK, V, 4, 2, 8, 1);
    BOOST_TEST(O.shape(0) == 37u);
    BOOST_TEST(O.shape(1) == 5u);
}

BOOST_AUTO_TEST_CASE(one_chunk_equals_dense_in_double)
{
    for (std::size_t n : {1, 2, 7, 33})
        for (std::size_t b : {2, 4, 8, 16})
            for (std::size_t rounds : {1, 2, 3, 8}) {
                if (b > 2 * n && b > 2) continue;  // at most 2n buckets
                const auto [QK, V] = random_inputs(n, 12, 6, 100 * n + b);
                const auto expected = reference_dense<double>(QK, V);
                for (std::size_t chunk_len : {n, n + 5}) {
                    const auto O = attn::lsh_attention(QK, V, b, rounds, chunk_len, 7 * rounds + b);
                    BOOST_TEST_CONTEXT("n = " << n << ", b = " << b << ", rounds = " << rounds << ", L = " << chunk_len)
                    {
                        check_close(O, expected, 0, 1e-12, "one chunk, double");
                    }
                }
            }
}

BOOST_AUTO_TEST_CASE(one_chunk_equals_dense_in_float)
{
    for (std::size_t n : {1, 2, 7, 33})
        for (std::size_t b : {2, 4, 16})
            for (std::size_t rounds : {1, 2, 8}) {
                if (b > 2 * n && b > 2) continue;  // at most 2n buckets
                const auto [QK, V] = random_inputs(n, 12, 6, 200 * n + b);
                const xt::xtensor<float, 2> QK_f = QK, V_f = V;
                const auto O = attn::lsh_attention(QK_f, V_f, b, rounds, n, 3 * rounds + b);
                BOOST_TEST_CONTEXT("n = " << n << ", b = " << b << ", rounds = " << rounds)
                {
                    check_close(O, reference_dense<float>(QK, V), 0, 1e-5, "one chunk, float");
                }
            }
}

/// The keys LSH attention shows each query, written out from the rule rather than from
/// the kernel's helpers: in each round, sort the positions by (bucket, position), cut
/// the sorted list into chunks of L; query i sees the keys of its chunk and of the one
/// before. A query sees the union over rounds, less itself unless it sees nothing else.
xt::xtensor<bool, 2> union_of_views(const xt::xtensor<std::size_t, 2>& buckets, std::size_t L)
{
    const std::size_t rounds = buckets.shape(0), n = buckets.shape(1);
    xt::xtensor<bool, 2> seen = xt::zeros<bool>({n, n});
    for (std::size_t r = 0; r < rounds; ++r) {
        std::vector<std::size_t> sorted(n);  // positions, by (bucket, position)
        for (std::size_t i = 0; i < n; ++i) sorted[i] = i;
        std::sort(sorted.begin(), sorted.end(), [&](std::size_t a, std::size_t b) {
            return buckets(r, a) != buckets(r, b) ? buckets(r, a) < buckets(r, b) : a < b;
        });
        std::vector<std::size_t> chunk(n);  // chunk of each position
        for (std::size_t s = 0; s < n; ++s) chunk[sorted[s]] = s / L;
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j)
                if (chunk[j] == chunk[i] || chunk[j] + 1 == chunk[i]) seen(i, j) = true;
    }
    for (std::size_t i = 0; i < n; ++i) {
        bool another = false;
        for (std::size_t j = 0; j < n; ++j) another = another || (j != i && seen(i, j));
        seen(i, i) = !another;
    }
    return seen;
}

BOOST_AUTO_TEST_CASE(any_chunk_length_equals_dense_attention_over_the_union_of_views)
{
    // The log N_ij count makes the rounds' combination exactly softmax attention over the keys
    // some round shows, whatever the chunk length.
    for (auto [n, b, rounds, chunk_len] : std::vector<std::array<std::size_t, 4>>{
             {50, 8, 1, 4}, {50, 8, 3, 4}, {64, 4, 4, 8}, {31, 16, 6, 3}, {40, 2, 2, 1}, {9, 6, 5, 2}}) {
        const auto [QK, V] = random_inputs(n, 10, 4, n + rounds);
        const std::uint64_t seed = 1234 + chunk_len;
        const auto allowed = union_of_views(attn::lsh_buckets(QK, b, rounds, seed), chunk_len);
        const auto expected = naive_attention(QK, reference_keys(QK), V,
                                              [&](std::size_t i, std::size_t j) { return bool(allowed(i, j)); });
        BOOST_TEST_CONTEXT("n = " << n << ", b = " << b << ", rounds = " << rounds << ", L = " << chunk_len)
        {
            check_close(attn::lsh_attention(QK, V, b, rounds, chunk_len, seed), expected, 0, 1e-12, "union");
            const xt::xtensor<double, 2> via_weights = xt::linalg::dot(attn::lsh_weights(QK, b, rounds, chunk_len, seed), V);
            check_close(via_weights, expected, 0, 1e-12, "lsh_weights · V");
            BOOST_TEST((attn::lsh_pattern(QK, b, rounds, chunk_len, seed) == allowed), "lsh_pattern");
        }
    }
}

BOOST_AUTO_TEST_CASE(each_query_sees_at_most_two_chunks_per_round_and_not_itself)
{
    const std::size_t n = 60, L = 5, rounds = 3;
    const auto [QK, V] = random_inputs(n, 8, 2, 17);
    const auto one_round = attn::lsh_pattern(QK, 6, 1, L, 4);
    const auto allowed = attn::lsh_pattern(QK, 6, rounds, L, 4);
    for (std::size_t i = 0; i < n; ++i) {
        BOOST_TEST(!allowed(i, i));
        const std::size_t seen_1 = std::size_t(xt::sum(xt::row(one_round, i))());
        const std::size_t seen = std::size_t(xt::sum(xt::row(allowed, i))());
        BOOST_TEST(seen_1 <= 2 * L - 1);
        BOOST_TEST(seen_1 >= L - 1);  // at least its own chunk (every chunk here is full)
        BOOST_TEST(seen <= rounds * (2 * L - 1));
        for (std::size_t j = 0; j < n; ++j) BOOST_TEST((!one_round(i, j) || allowed(i, j)));  // rounds only add
    }
}

BOOST_AUTO_TEST_CASE(a_query_alone_in_view_attends_to_itself)
{
    // chunk_len = 1: the first token of the sorted order has no previous chunk and nothing else
    // in its own, so in a single round it sees only itself and its output is its own value.
    const auto [QK, V] = random_inputs(10, 6, 3, 21);
    const auto buckets = attn::lsh_buckets(QK, 4, 1, 77);
    const auto order = attn::sort_by_bucket(buckets.data(), 10, 4);
    const auto O = attn::lsh_attention(QK, V, 4, 1, 1, 77);
    for (std::size_t c = 0; c < 3; ++c) BOOST_TEST(O(order[0], c) == V(order[0], c));
    for (std::size_t s = 1; s < 10; ++s)  // every other query sees exactly its predecessor
        for (std::size_t c = 0; c < 3; ++c) BOOST_TEST(O(order[s], c) == V(order[s - 1], c), boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(error_falls_as_rounds_grow)
{
    // Averaged over hash seeds, the error against dense attention falls strictly from 1 to 2 to 4 to 8 rounds.
    const std::size_t n = 256, b = 16, L = 2 * n / b;
    const auto QK = clustered(n, 32, 16, 0.3, 5.0, 31);
    std::mt19937_64 rng(32);
    const auto V = attn::random_normal<double>(n, 16, 1.0, rng);
    const auto dense = attn::shared_qk_attention(QK, V);
    double previous = 1e300;
    for (std::size_t rounds : {1, 2, 4, 8}) {
        double error = 0;
        for (std::uint64_t seed = 0; seed < 8; ++seed)
            error += relative_error(attn::lsh_attention(QK, V, b, rounds, L, 1000 + seed), dense) / 8;
        BOOST_TEST_MESSAGE("rounds " << rounds << ": mean relative error " << error);
        BOOST_TEST(error < previous);
        previous = error;
    }
}

BOOST_AUTO_TEST_CASE(output_is_deterministic_for_a_seed)
{
    const auto [QK, V] = random_inputs(120, 16, 8, 41);
    const auto first = attn::lsh_attention(QK, V, 8, 3, 10, 5);
    const auto second = attn::lsh_attention(QK, V, 8, 3, 10, 5);
    BOOST_TEST(first == second);  // bit for bit
    const auto other_seed = attn::lsh_attention(QK, V, 8, 3, 10, 6);
    BOOST_TEST(double(xt::amax(xt::abs(first - other_seed))()) > 0.0);
}

BOOST_AUTO_TEST_CASE(logits_of_plus_minus_1e4_stay_finite)
{
    auto [QK, V] = random_inputs(40, 8, 4, 51);
    QK *= 1e4 * std::sqrt(8.0) / 3;  // scores up to about ±1e4
    xt::row(QK, 5) = 0.0;             // and a zero query
    const xt::xtensor<float, 2> QK_f = QK, V_f = V;
    BOOST_TEST(test_support::all_finite(attn::lsh_attention(QK, V, 4, 3, 8, 1)));
    BOOST_TEST(test_support::all_finite(attn::lsh_attention(QK_f, V_f, 4, 3, 8, 1)));
    check_close(attn::lsh_attention(QK, V, 4, 3, 40, 1), reference_dense<double>(QK, V), 0, 1e-9, "±1e4, one chunk");
}

BOOST_AUTO_TEST_CASE(one_token_returns_its_value)
{
    const xt::xtensor<double, 2> QK = {{0.3, -1.2}}, V = {{4.0, 5.0, 6.0}};
    BOOST_TEST(attn::lsh_attention(QK, V, 2, 2, 1, 0) == V);
}

BOOST_AUTO_TEST_CASE(bad_arguments_are_rejected_with_a_message)
{
    const auto [QK, V] = random_inputs(6, 4, 2, 61);
    const xt::xtensor<double, 2> V_short = xt::view(V, xt::range(0, 5), xt::all());
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V, 3, 1, 2, 0), std::invalid_argument);  // odd b
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V, 0, 1, 2, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V, 4, 0, 2, 0), std::invalid_argument);  // no rounds
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V, 4, 1, 0, 0), std::invalid_argument);  // empty chunks
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V_short, 4, 1, 2, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::lsh_buckets(QK, 5, 1, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::collision_probability(0.5, 7, 10, 0), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

namespace {

constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();
constexpr double inf = std::numeric_limits<double>::infinity();
constexpr std::size_t huge = std::numeric_limits<std::size_t>::max();


}  // namespace

BOOST_AUTO_TEST_CASE(degenerate_shapes_throw_or_give_empty_results)
{
    const auto [QK, V] = random_inputs(6, 4, 2, 71);
    const xt::xtensor<double, 2> V_empty = xt::zeros<double>({6, 0});  // d_v = 0
    const auto O = attn::lsh_attention(QK, V_empty, 4, 2, 3, 0);
    BOOST_TEST(O.shape(0) == 6u);
    BOOST_TEST(O.shape(1) == 0u);
    const xt::xtensor<double, 2> QK_none = xt::zeros<double>({0, 4}), V_none = xt::zeros<double>({0, 2});
    BOOST_CHECK_THROW(attn::lsh_attention(QK_none, V_none, 2, 1, 1, 0), std::invalid_argument);
    const xt::xtensor<double, 2> QK_flat = xt::zeros<double>({6, 0});  // d_k = 0: was NaN
    BOOST_CHECK_THROW(attn::lsh_attention(QK_flat, V, 2, 1, 3, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::shared_qk_attention(QK_flat, V), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(options_are_checked_before_any_memory_is_touched)
{
    const auto [QK, V] = random_inputs(6, 4, 2, 72);
    // 2^44 buckets used to ask for a d_k×2^43 rotation (2^49 bytes).
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V, std::size_t(1) << 44, 1, 2, 0),
                      std::invalid_argument);
    BOOST_CHECK_THROW(attn::lsh_buckets(QK, std::size_t(1) << 44, 1, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::lsh_pattern(QK, std::size_t(1) << 44, 1, 2, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V, 14, 1, 2, 0), std::invalid_argument);  // > 2n
    BOOST_CHECK_NO_THROW(attn::lsh_attention(QK, V, 12, 1, 2, 0));                     // = 2n
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V, huge - 1, 1, 2, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V, 4, 65, 2, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::lsh_attention(QK, V, 4, huge, 2, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::lsh_buckets(QK, 4, huge, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::lsh_buckets(QK, 4, 0, 0), std::invalid_argument);
    // A chunk longer than the sequence is clamped: one chunk, dense shared-QK attention.
    check_close(attn::lsh_attention(QK, V, 4, 2, huge, 0), reference_dense<double>(QK, V), 0,
                1e-12, "chunk_len = SIZE_MAX");
}

BOOST_AUTO_TEST_CASE(a_nan_reaches_exactly_the_queries_whose_windows_hold_it)
{
    const std::size_t n = 24, L = 3;
    for (std::size_t j : {0u, 7u, 23u}) {
        auto [QK, V] = random_inputs(n, 6, 3, 80 + j);
        QK(j, 2) = nan_value;
        const auto allowed = attn::lsh_pattern(QK, 4, 2, L, 9);
        const auto O = attn::lsh_attention(QK, V, 4, 2, L, 9);
        BOOST_TEST_CONTEXT("NaN in row " << j << " of QK")
        {
            BOOST_TEST(!row_finite(O, j));
            for (std::size_t i = 0; i < n; ++i)
                BOOST_TEST(row_finite(O, i) == (i != j && !allowed(i, j)));
        }
    }
    // Every query's only other key is NaN: it must not fall back to its own value.
    xt::xtensor<double, 2> QK = {{1.0, 0.5}, {nan_value, 0.0}}, V = {{1.0}, {2.0}};
    const auto O = attn::lsh_attention(QK, V, 2, 1, 2, 0);
    BOOST_TEST(!std::isfinite(O(0, 0)));
    BOOST_TEST(!std::isfinite(O(1, 0)));
    // A lone token whose query is NaN used to get its own finite value back.
    const xt::xtensor<double, 2> QK_lone = {{nan_value, 1.0}}, V_lone = {{3.0}};
    BOOST_TEST(!std::isfinite(attn::lsh_attention(QK_lone, V_lone, 2, 1, 1, 0)(0, 0)));
}

BOOST_AUTO_TEST_CASE(a_nan_or_inf_in_v_reaches_its_column_of_the_rows_that_see_it)
{
    const std::size_t n = 20;
    for (double bad : {nan_value, std::numeric_limits<double>::infinity()}) {
        auto [QK, V] = random_inputs(n, 5, 3, 90);
        V(11, 1) = bad;
        const auto allowed = attn::lsh_pattern(QK, 4, 3, 4, 2);
        const auto O = attn::lsh_attention(QK, V, 4, 3, 4, 2);
        for (std::size_t i = 0; i < n; ++i) {
            if (i != 11) BOOST_TEST(std::isfinite(O(i, 1)) == !allowed(i, 11));  // 11: 0·NaN
            BOOST_TEST(std::isfinite(O(i, 0)));
            BOOST_TEST(std::isfinite(O(i, 2)));
        }
    }
}

BOOST_AUTO_TEST_CASE(fuzz_lsh_attention_against_its_pattern)
{
    // Random shapes (1, primes, up to 40), options at and beyond their edges, NaN and inf
    // entries: valid options must give softmax over lsh_pattern's keys (and dense shared-QK
    // attention with one chunk), invalid ones std::invalid_argument, and nothing may crash.
    std::mt19937_64 rng(20261130);
    const std::vector<std::size_t> sizes = {1, 2, 3, 5, 7, 11, 13, 17, 23, 31, 37, 40};
    auto pick = [&](const std::vector<std::size_t>& from) { return from[rng() % from.size()]; };
    FuzzBudget budget(4000);
    while (budget.another()) {
        const std::size_t n = pick(sizes), d_k = pick({1, 2, 3, 7, 16}), d_v = pick({0, 1, 3, 5});
        const std::size_t b = pick({0, 1, 2, 3, 4, 2 * n, 2 * n + 1, 2 * n + 2, huge,
                                    std::size_t(1) << 44, 2 * (1 + rng() % n)});
        const std::size_t rounds = pick({0, 1, 2, 3, 64, 65, huge});
        const std::size_t L = pick({0, 1, 2, n, n + 1, huge, 1 + rng() % n});
        const std::uint64_t seed = rng();
        auto [QK, V] = random_inputs(n, d_k, d_v, rng());
        int poison = int(rng() % 4);  // 0: none; 1: NaN or inf in QK; 2: NaN in V; 3: −inf in V
        if (d_v == 0 && poison >= 2) poison = 0;
        const std::size_t j = rng() % n;
        if (poison == 1) QK(j, rng() % d_k) = rng() % 2 ? nan_value : inf;
        if (poison >= 2 && d_v > 0) V(j, rng() % d_v) = poison == 2 ? nan_value : -inf;
        const bool valid = b >= 2 && b % 2 == 0 && b <= std::max<std::size_t>(2, 2 * n) &&
                           rounds >= 1 && rounds <= 64 && L >= 1;
        BOOST_TEST_CONTEXT("case " << budget.drawn() << ": n = " << n << ", d_k = " << d_k
                                   << ", d_v = " << d_v << ", b = " << b << ", rounds = "
                                   << rounds << ", L = " << L << ", poison " << poison)
        {
            if (!valid) {
                BOOST_CHECK_THROW(attn::lsh_attention(QK, V, b, rounds, L, seed),
                                  std::invalid_argument);
                continue;
            }
            const auto O = attn::lsh_attention(QK, V, b, rounds, L, seed);
            BOOST_TEST_REQUIRE(O.shape(0) == n);
            BOOST_TEST_REQUIRE(O.shape(1) == d_v);
            const auto allowed = attn::lsh_pattern(QK, b, rounds, L, seed);
            if (poison == 0) {
                const xt::xtensor<double, 2> K = reference_keys(QK);
                check_close(O, naive_attention(QK, K, V, [&](std::size_t i, std::size_t k) {
                                return bool(allowed(i, k));
                            }), 0, 1e-11, "softmax over the pattern");
                if (L >= n) check_close(O, reference_dense<double>(QK, V), 0, 1e-11, "one chunk");
                continue;
            }
            // Rows whose windows hold j are non-finite; rows whose windows never hold it stay
            // finite; j's own masked key may reach row j as 0·NaN (more rows, never fewer).
            for (std::size_t i = 0; i < n && d_v > 0; ++i) {
                const bool sees = allowed(i, j) || (poison == 1 && i == j);
                if (sees || i != j)
                    BOOST_TEST(row_finite(O, i) == !sees, "row " << i << ", bad token " << j);
            }
        }
    }
    BOOST_TEST_MESSAGE("fuzz: " << budget.drawn() - 1 << " cases");
}

BOOST_AUTO_TEST_CASE(the_figures_name_topics_buckets_and_curves)
{
    using test_support::svg_says;
    const auto dir = test_support::run_chapter_program("ch12_reformer");
    const auto out = dir / "out";
    std::size_t topics_named = 0;
    for (const char* topic : {"A", "B", "C", "D", "E", "F", "G", "H"})
        topics_named += svg_says(out / "dense_weights.svg", topic);
    BOOST_TEST(topics_named >= 6u, "dense_weights.svg names " << topics_named << " topics");
    BOOST_TEST(svg_says(out / "lsh_weights_sorted.svg", "b0"));
    for (const char* text : {"key", "query", "attention weight", "masked"})
        BOOST_TEST(svg_says(out / "dense_weights.svg", text), "dense_weights.svg lacks " << text);
    BOOST_TEST(svg_says(out / "collision.svg", "angle θ between the two vectors (degrees)"));
    BOOST_TEST(svg_says(out / "collision.svg", "b = 4 model (Monte Carlo)"));
    test_support::check_cost_figure(out / "cost_time.svg", "seconds");
    test_support::check_cost_figure(out / "cost_memory.svg", "MiB");
    std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(tokens_in_topics_have_the_length_of_their_sharpness)
{
    std::mt19937_64 rng(5);
    std::vector<std::size_t> topic;
    const xt::xtensor<float, 2> QK = attn::tokens_in_topics(40, 16, 4, 0.3, 6.0, rng, &topic);
    BOOST_TEST(QK.shape(0) == 40u);
    BOOST_TEST(QK.shape(1) == 16u);
    BOOST_TEST(topic.size() == 40u);
    for (std::size_t i = 0; i < 40; ++i) {
        BOOST_TEST(topic[i] < 4u);
        const double length = std::sqrt(double(xt::sum(xt::row(QK, i) * xt::row(QK, i))()));
        BOOST_TEST(length == 6.0 * std::sqrt(16.0), boost::test_tools::tolerance(1e-5));
    }
}
