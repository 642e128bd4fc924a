// Chapter 14: the efficiency zoo.
#define BOOST_TEST_MODULE ch14_efficiency_zoo
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>

#include <xtensor/xmath.hpp>

#include "attn/random.hpp"
#include "attn/zoo.hpp"
#include "test_support.hpp"

using test_support::check_close;

namespace {

attn::ZooInputs random_inputs(std::size_t n, std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    return {attn::random_normal<float>(n, 64, 1.0, rng), attn::random_normal<float>(n, 64, 1.0, rng),
            attn::random_normal<float>(n, 64, 1.0, rng)};
}

/// Rows of QK divided by their length: the Reformer's keys.
xt::xtensor<float, 2> unit_rows(const xt::xtensor<float, 2>& QK)
{
    xt::xtensor<float, 2> K = QK;
    for (std::size_t j = 0; j < K.shape(0); ++j) {
        double sq = 0;
        for (std::size_t c = 0; c < K.shape(1); ++c) sq += double(K(j, c)) * double(K(j, c));
        for (std::size_t c = 0; c < K.shape(1); ++c) K(j, c) = float(double(K(j, c)) / std::sqrt(sq));
    }
    return K;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(efficiency_zoo)

BOOST_AUTO_TEST_CASE(shared_qk_reference_equals_a_naive_loop_with_the_self_rule)
{
    for (std::size_t n : {1, 2, 9, 40}) {
        std::mt19937_64 rng(n);
        const auto QK = attn::random_normal<float>(n, 8, 1.0, rng), V = attn::random_normal<float>(n, 5, 1.0, rng);
        const auto expected = test_support::naive_attention(QK, unit_rows(QK), V, [n](std::size_t i, std::size_t j) {
            return i != j || n == 1;  // a token attends to itself only when it is alone
        });
        check_close(attn::shared_qk_reference(QK, V), expected, 1e-5, 1e-6, "n = " + std::to_string(n));
    }
}

BOOST_AUTO_TEST_CASE(relative_error_is_zero_for_equal_outputs_and_scale_free)
{
    const auto in = random_inputs(10, 1);
    BOOST_TEST(attn::relative_error(in.Q, in.Q) == 0.0);
    const xt::xtensor<float, 2> zero = xt::zeros<float>(in.Q.shape());
    BOOST_TEST(attn::relative_error(zero, in.Q) == 1.0, boost::test_tools::tolerance(1e-12));
    const xt::xtensor<float, 2> Q2 = in.Q * 2.0f, K2 = in.K * 2.0f;
    BOOST_TEST(attn::relative_error(in.K, in.Q) == attn::relative_error(K2, Q2), boost::test_tools::tolerance(1e-6));
    BOOST_CHECK_THROW(attn::relative_error(in.Q, xt::xtensor<float, 2>(xt::zeros<float>({3, 3}))), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(dense_attention_comes_first)
{
    const auto zoo = attn::zoo_mechanisms();
    BOOST_REQUIRE(!zoo.empty());
    BOOST_TEST(zoo.front().name.rfind("dense", 0) == 0u);
    BOOST_TEST((zoo.front().exact == attn::Exact::full));
}

BOOST_AUTO_TEST_CASE(every_mechanism_gives_finite_outputs_of_the_right_shape)
{
    const auto in = random_inputs(256, 2);
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
    const auto in = random_inputs(512, 5);  // whole blocks, an even number of buckets
    for (const attn::Mechanism& mechanism : attn::zoo_mechanisms()) {
        const xt::xtensor<float, 2> one = mechanism.prepare(in, 1)();
        const xt::xtensor<float, 2> two = mechanism.prepare(in, 2)();
        BOOST_TEST_CONTEXT(mechanism.name) { BOOST_TEST(attn::relative_error(two, one) < 1e-6); }
    }
}

BOOST_AUTO_TEST_CASE(exact_mechanisms_have_rounding_error_only)
{
    const auto in = random_inputs(300, 3);
    const auto full = test_support::naive_attention(in.Q, in.K, in.V);
    const auto causal = test_support::naive_attention(in.Q, in.K, in.V, [](std::size_t i, std::size_t j) { return j <= i; });
    for (const attn::Mechanism& mechanism : attn::zoo_mechanisms()) {
        if (mechanism.family != "exact") continue;
        const auto& expected = mechanism.exact == attn::Exact::causal ? causal : full;
        BOOST_TEST_CONTEXT(mechanism.name) { BOOST_TEST(attn::relative_error(mechanism.prepare(in, 1)(), expected) < 1e-5); }
    }
}

#if __has_include("attn/reformer.hpp")
BOOST_AUTO_TEST_CASE(one_chunk_lsh_attention_equals_the_shared_qk_reference)
{
    const auto in = random_inputs(128, 4);
    check_close(attn::lsh_attention(in.Q, in.V, 4, 2, 128, 7), attn::shared_qk_reference(in.Q, in.V), 1e-4, 1e-5,
                "one chunk");
}
#endif

BOOST_AUTO_TEST_SUITE_END()
