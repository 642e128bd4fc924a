// Chapter 13: FlashAttention on the CPU.
#define BOOST_TEST_MODULE ch13_flash_attention
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <array>
#include <cmath>
#include <filesystem>
#include <set>
#include <utility>
#include <string>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "attn/flash_attention.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"
#include "test_support.hpp"

using test_support::check_close;
using test_support::naive_attention;
using test_support::Inputs;
using test_support::random_inputs;

namespace {

auto causal_mask = [](std::size_t i, std::size_t j) { return j <= i; };

using attn::FlashKernel;

attn::FlashOptions tiles(std::size_t query_tile, std::size_t key_tile, FlashKernel kernel = FlashKernel::best,
                         unsigned threads = 2)
{
    attn::FlashOptions options;
    options.query_tile = query_tile;
    options.key_tile = key_tile;
    options.kernel = kernel;
    options.threads = threads;
    return options;
}

// Every float kernel this processor can run: the best it has, AVX2 at most, the portable loops, and the
// plain twins of the AVX2 and AVX-512 kernels (which run anywhere).
const std::vector<FlashKernel> float_kernels = {FlashKernel::best, FlashKernel::avx2, FlashKernel::portable,
                                                FlashKernel::emulated_avx2, FlashKernel::emulated_avx512};

std::string name(FlashKernel kernel) { return attn::flash_kernel_name(tiles(0, 0, kernel)); }

// Shapes with ragged tails: n and m not multiples of any tile, d_k and d_v not multiples of 8 or 16.
const std::vector<std::array<std::size_t, 4>> shapes = {
    {1, 1, 1, 1}, {1, 50, 8, 3}, {7, 5, 3, 2}, {37, 53, 5, 7}, {100, 130, 64, 64}, {65, 65, 16, 24}, {200, 97, 33, 17}};
// Tile sizes from one key per tile to larger than the inputs; 0 = chosen from the machine.
const std::vector<std::array<std::size_t, 2>> tile_sizes = {{1, 1}, {3, 5}, {7, 16}, {13, 33}, {64, 256}, {96, 17}, {0, 0}};

}  // namespace

BOOST_AUTO_TEST_SUITE(flash_attention)

BOOST_AUTO_TEST_CASE(equals_dense_for_any_tile_size_and_ragged_tails_in_double)
{
    for (const auto& [n, m, d_k, d_v] : shapes) {
        const auto [Q, K, V] = random_inputs(n, m, d_k, d_v, n * 1000 + m);
        const auto expected = naive_attention(Q, K, V);
        for (const auto& [b_r, b_c] : tile_sizes)
            check_close(attn::flash_attention(Q, K, V, false, tiles(b_r, b_c)), expected, 1e-12, 1e-13,
                        "double, tiles " + std::to_string(b_r) + "×" + std::to_string(b_c));
        check_close(attn::flash_attention(Q, K, V), attn::scaled_dot_product_attention(Q, K, V), 1e-12, 1e-13,
                    "double against chapter 1");
    }
}

BOOST_AUTO_TEST_CASE(equals_dense_for_any_tile_size_and_ragged_tails_in_float_every_kernel)
{
    for (const auto& [n, m, d_k, d_v] : shapes) {
        const auto [Q, K, V] = random_inputs(n, m, d_k, d_v, n * 1000 + m + 1);
        const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
        const auto expected = naive_attention(Q_f, K_f, V_f);
        for (FlashKernel kernel : float_kernels)
            for (const auto& [b_r, b_c] : tile_sizes)
                check_close(attn::flash_attention(Q_f, K_f, V_f, false, tiles(b_r, b_c, kernel)), expected, 2e-5,
                            2e-6, name(kernel) + " kernel, tiles " + std::to_string(b_r) + "×" + std::to_string(b_c));
    }
}

BOOST_AUTO_TEST_CASE(causal_equals_dense_masked_for_any_tile_size)
{
    for (std::size_t n : {1, 2, 7, 61, 128, 203}) {
        const auto [Q, K, V] = random_inputs(n, n, 24, 20, n + 7);
        const auto expected = naive_attention(Q, K, V, causal_mask);
        const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
        const auto expected_f = naive_attention(Q_f, K_f, V_f, causal_mask);
        for (const auto& [b_r, b_c] : tile_sizes) {
            const std::string what = "n = " + std::to_string(n) + ", tiles " + std::to_string(b_r) + "×" + std::to_string(b_c);
            check_close(attn::flash_attention(Q, K, V, true, tiles(b_r, b_c)), expected, 1e-12, 1e-13,
                        "causal double, " + what);
            for (FlashKernel kernel : float_kernels)
                check_close(attn::flash_attention(Q_f, K_f, V_f, true, tiles(b_r, b_c, kernel)), expected_f,
                            2e-5, 2e-6, "causal float " + name(kernel) + ", " + what);
        }
    }
}

BOOST_AUTO_TEST_CASE(the_two_and_three_argument_forms_are_the_contract)
{
    const auto [Q, K, V] = random_inputs(40, 40, 16, 8, 3);
    check_close(attn::flash_attention(Q, K, V, false), attn::flash_attention(Q, K, V), 0, 0, "causal = false");
    check_close(attn::flash_attention(Q, K, V, true), naive_attention(Q, K, V, causal_mask), 1e-12, 1e-13, "causal");
}

BOOST_AUTO_TEST_CASE(one_query_and_one_key)
{
    const xt::xtensor<float, 2> Q = {{0.3f, -1.0f}}, K = {{2.0f, 0.5f}}, V = {{1.5f, -2.5f, 4.0f}};
    for (bool causal : {false, true})
        for (FlashKernel kernel : float_kernels) {
            check_close(attn::flash_attention(Q, K, V, causal, tiles(0, 0, kernel)), V, 0, 0, "n = m = 1");
            check_close(attn::unfused_attention(Q, K, V, causal, tiles(0, 0, kernel)), V, 0, 0,
                        "three passes, n = m = 1");
        }
}

BOOST_AUTO_TEST_CASE(merging_two_partial_states_equals_one_pass)
{
    const auto [Q, K, V] = random_inputs(9, 40, 8, 5, 11);
    auto one_pass = attn::empty_softmax_state(9, 5);
    attn::absorb_keys(one_pass, Q, K, V, 0, 40);
    check_close(attn::finish_softmax_state(one_pass), naive_attention(Q, K, V), 1e-12, 1e-13, "one pass");
    for (std::size_t split : {0, 1, 17, 39, 40}) {
        auto first = attn::empty_softmax_state(9, 5), second = attn::empty_softmax_state(9, 5);
        attn::absorb_keys(first, Q, K, V, 0, split);
        attn::absorb_keys(second, Q, K, V, split, 40);
        const auto merged = attn::merge_softmax_states(first, second);
        const std::string what = "split at " + std::to_string(split);
        check_close(merged.max, one_pass.max, 0, 0, what + ": running maximum");
        check_close(merged.sum, one_pass.sum, 1e-12, 1e-13, what + ": running sum");
        check_close(merged.acc, one_pass.acc, 1e-12, 1e-13, what + ": unnormalised output");
        check_close(attn::finish_softmax_state(attn::merge_softmax_states(second, first)),
                    attn::finish_softmax_state(one_pass), 1e-12, 1e-13, what + ": merged the other way round");
    }
}

BOOST_AUTO_TEST_CASE(an_empty_state_gives_a_zero_row_and_merges_as_identity)
{
    const auto empty = attn::empty_softmax_state(3, 4);
    const auto O = attn::finish_softmax_state(empty);
    BOOST_TEST(test_support::all_finite(O));
    BOOST_TEST(xt::amax(xt::abs(O))() == 0.0);
    const auto both_empty = attn::merge_softmax_states(empty, empty);
    BOOST_TEST(test_support::all_finite(both_empty.acc));
    BOOST_TEST(test_support::all_finite(both_empty.sum));
}

BOOST_AUTO_TEST_CASE(logits_of_plus_minus_ten_thousand_give_no_nan)
{
    // d_k = 1, so the scores are exactly q·k: ±1e4 and 5e3.
    const xt::xtensor<double, 2> Q = {{100.0}, {-100.0}, {1.0}}, K = {{100.0}, {-100.0}, {50.0}},
                                 V = {{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}};
    const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
    for (bool causal : {false, true}) {
        const auto mask = [causal](std::size_t i, std::size_t j) { return !causal || j <= i; };
        check_close(attn::flash_attention(Q, K, V, causal), naive_attention(Q, K, V, mask), 1e-12, 1e-12, "double");
        for (FlashKernel kernel : float_kernels) {
            for (const auto& [b_r, b_c] : tile_sizes) {
                const auto O = attn::flash_attention(Q_f, K_f, V_f, causal, tiles(b_r, b_c, kernel));
                BOOST_TEST(test_support::all_finite(O));
                check_close(O, naive_attention(Q_f, K_f, V_f, mask), 1e-5, 1e-5, "float, ±1e4 logits");
            }
            check_close(attn::unfused_attention(Q_f, K_f, V_f, causal, tiles(0, 0, kernel)),
                        naive_attention(Q_f, K_f, V_f, mask), 1e-5, 1e-5, "three passes, ±1e4 logits");
        }
    }
}

BOOST_AUTO_TEST_CASE(the_result_does_not_depend_on_the_number_of_threads)
{
    const auto [Q, K, V] = random_inputs(300, 300, 64, 64, 5);
    const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
    for (bool causal : {false, true}) {
        const auto one = attn::flash_attention(Q_f, K_f, V_f, causal, tiles(32, 64, FlashKernel::best, 1));
        const auto three = attn::flash_attention(Q_f, K_f, V_f, causal, tiles(32, 64, FlashKernel::best, 3));
        check_close(three, one, 0, 0, "1 thread against 3, bit for bit");
        const auto unfused_one = attn::unfused_attention(Q_f, K_f, V_f, causal, tiles(0, 0, FlashKernel::best, 1));
        const auto unfused_three = attn::unfused_attention(Q_f, K_f, V_f, causal, tiles(0, 0, FlashKernel::best, 3));
        check_close(unfused_three, unfused_one, 0, 0, "three passes: 1 thread against 3, bit for bit");
    }
}

BOOST_AUTO_TEST_CASE(future_tokens_do_not_change_the_past)
{
    auto [Q, K, V] = random_inputs(150, 150, 16, 16, 9);
    const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
    xt::xtensor<float, 2> K_changed = K_f, V_changed = V_f;
    for (std::size_t j = 100; j < 150; ++j)
        for (std::size_t c = 0; c < 16; ++c) K_changed(j, c) *= -3.0f, V_changed(j, c) += 7.0f;
    for (FlashKernel kernel : float_kernels) {
        const auto before = attn::flash_attention(Q_f, K_f, V_f, true, tiles(0, 0, kernel));
        const auto after = attn::flash_attention(Q_f, K_changed, V_changed, true, tiles(0, 0, kernel));
        check_close(xt::xtensor<float, 2>(xt::view(after, xt::range(0, 100), xt::all())),
                    xt::xtensor<float, 2>(xt::view(before, xt::range(0, 100), xt::all())), 0, 0,
                    "rows before the change, bit for bit");
    }
}

// Check one copy of the vector exponential: accurate, 2^0 = 1 exactly, 0 below −126 and for −∞.
void check_exp2(void (*exp2_array)(const float*, float*, std::size_t), const std::string& copy)
{
    BOOST_TEST_CONTEXT(copy)
    {
        std::vector<float> x;
        for (int k = 0; k <= 126 * 4096; ++k) x.push_back(-126.0f * float(k) / float(126 * 4096));
        for (float special : {0.0f, -0.5f, 0.5f, 3.0f, 100.0f}) x.push_back(special);
        std::vector<float> y(x.size());
        exp2_array(x.data(), y.data(), x.size());
        double worst = 0;
        for (std::size_t p = 0; p < x.size(); ++p)
            worst = std::max(worst, std::abs(double(y[p]) / std::exp2(double(x[p])) - 1.0));
        BOOST_TEST(worst < 3e-7);
        BOOST_TEST(y[0] == 1.0f);  // 2^0 exactly: the row's largest score gets weight 1
        const std::vector<float> tiny = {-std::numeric_limits<float>::infinity(), -127.0f, -200.0f, -1e30f, 0.0f};
        std::vector<float> zero(tiny.size());
        exp2_array(tiny.data(), zero.data(), tiny.size());
        for (std::size_t p = 0; p < 4; ++p) BOOST_TEST(zero[p] == 0.0f);
    }
}

BOOST_AUTO_TEST_CASE(the_vector_exponential_is_accurate_in_every_copy)
{
    check_exp2(attn::detail::emulated8::exp2_array, "plain twin, 8 lanes");
    check_exp2(attn::detail::emulated16::exp2_array, "plain twin, 16 lanes");
#if ATTN_FLASH_X86
    if (attn::detail::has_avx2_fma()) check_exp2(attn::detail::avx2::exp2_array, "AVX2");
    else BOOST_TEST_MESSAGE("no AVX2 on this processor: its exponential is not run");
    if (attn::detail::has_avx512()) check_exp2(attn::detail::avx512::exp2_array, "AVX-512");
    else BOOST_TEST_MESSAGE("no AVX-512 on this processor: its exponential is not run (skipped)");
#endif
}

BOOST_AUTO_TEST_CASE(the_three_pass_baseline_equals_dense_attention)
{
    for (const auto& [n, m, d_k, d_v] : shapes) {
        const auto [Q, K, V] = random_inputs(n, m, d_k, d_v, n * 1000 + m + 2);
        check_close(attn::unfused_attention(Q, K, V), naive_attention(Q, K, V), 1e-12, 1e-13, "three passes, double");
        const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
        const auto expected = naive_attention(Q_f, K_f, V_f);
        for (FlashKernel kernel : float_kernels)
            check_close(attn::unfused_attention(Q_f, K_f, V_f, false, tiles(0, 0, kernel)), expected, 2e-5, 2e-6,
                        "three passes, " + name(kernel));
    }
    for (std::size_t n : {1, 7, 61, 203}) {
        const auto [Q, K, V] = random_inputs(n, n, 24, 20, n + 8);
        check_close(attn::unfused_attention(Q, K, V, true), naive_attention(Q, K, V, causal_mask), 1e-12, 1e-13,
                    "causal three passes, double");
        const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
        const auto expected = naive_attention(Q_f, K_f, V_f, causal_mask);
        for (FlashKernel kernel : float_kernels)
            check_close(attn::unfused_attention(Q_f, K_f, V_f, true, tiles(0, 0, kernel)), expected, 2e-5, 2e-6,
                        "causal three passes, " + name(kernel) + ", n = " + std::to_string(n));
    }
}

// The vector kernel `real` and its plain twin `twin` give the same bits, fused and in three passes.
void check_bit_for_bit(FlashKernel real, FlashKernel twin)
{
    for (const auto& [n, m, d_k, d_v] : shapes) {
        const auto [Q, K, V] = random_inputs(n, m, d_k, d_v, n * 1000 + m + 3);
        const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
        for (const auto& [b_r, b_c] : tile_sizes) {
            const std::string what = name(real) + " against its twin, tiles " + std::to_string(b_r) + "×" +
                                     std::to_string(b_c);
            check_close(attn::flash_attention(Q_f, K_f, V_f, false, tiles(b_r, b_c, real)),
                        attn::flash_attention(Q_f, K_f, V_f, false, tiles(b_r, b_c, twin)), 0, 0, what);
            if (n == m)
                check_close(attn::flash_attention(Q_f, K_f, V_f, true, tiles(b_r, b_c, real)),
                            attn::flash_attention(Q_f, K_f, V_f, true, tiles(b_r, b_c, twin)), 0, 0, "causal " + what);
        }
        check_close(attn::unfused_attention(Q_f, K_f, V_f, false, tiles(0, 0, real)),
                    attn::unfused_attention(Q_f, K_f, V_f, false, tiles(0, 0, twin)), 0, 0,
                    "three passes, " + name(real) + " against its twin");
    }
}

// Run a test case only where the processor has AVX2 and FMA; elsewhere it is reported as skipped.
boost::test_tools::assertion_result processor_has_avx2(boost::unit_test::test_unit_id)
{
    boost::test_tools::assertion_result has(attn::detail::has_avx2_fma());
    if (!has) has.message() << "no AVX2 and FMA on this processor: the AVX2 kernel is skipped here";
    return has;
}

BOOST_AUTO_TEST_CASE(the_avx2_kernel_computes_the_bits_of_its_plain_twin,
                     *boost::unit_test::precondition(processor_has_avx2))
{
    BOOST_TEST(name(FlashKernel::avx2) == "AVX2");
    check_bit_for_bit(FlashKernel::avx2, FlashKernel::emulated_avx2);
}

// Run a test case only where the processor has AVX-512; elsewhere Boost.Test reports it as skipped,
// with this reason (the 16-lane algorithm is still tested through its plain twin).
boost::test_tools::assertion_result processor_has_avx512(boost::unit_test::test_unit_id)
{
    boost::test_tools::assertion_result has(attn::detail::has_avx512());
    if (!has)
        has.message() << "no AVX-512 on this processor: the AVX-512 kernel is skipped here (its 16-lane "
                         "algorithm is tested through its plain twin)";
    return has;
}

BOOST_AUTO_TEST_CASE(the_avx512_kernel_computes_the_bits_of_its_plain_twin_and_equals_portable,
                     *boost::unit_test::precondition(processor_has_avx512))
{
    BOOST_TEST_MESSAGE("AVX-512 on this processor: running the AVX-512 kernel");
    BOOST_TEST(name(FlashKernel::best) == "AVX-512");
    check_bit_for_bit(FlashKernel::avx512, FlashKernel::emulated_avx512);
    for (const auto& [n, m, d_k, d_v] : shapes) {
        const auto [Q, K, V] = random_inputs(n, m, d_k, d_v, n * 1000 + m + 4);
        const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
        for (const auto& [b_r, b_c] : tile_sizes)
            check_close(attn::flash_attention(Q_f, K_f, V_f, false, tiles(b_r, b_c, FlashKernel::avx512)),
                        attn::flash_attention(Q_f, K_f, V_f, false, tiles(b_r, b_c, FlashKernel::portable)), 2e-5,
                        2e-6, "AVX-512 against portable");
    }
}

BOOST_AUTO_TEST_CASE(the_avx2_kernel_equals_the_portable_kernel)
{
    const auto [Q, K, V] = random_inputs(150, 170, 64, 48, 21);
    const xt::xtensor<float, 2> Q_f = Q, K_f = K, V_f = V;
    for (bool causal : {false, true}) {
        const std::size_t m = causal ? 150 : 170;
        const xt::xtensor<float, 2> K_m = xt::view(K_f, xt::range(0, m), xt::all());
        const xt::xtensor<float, 2> V_m = xt::view(V_f, xt::range(0, m), xt::all());
        check_close(attn::flash_attention(Q_f, K_m, V_m, causal, tiles(0, 0, FlashKernel::avx2)),
                    attn::flash_attention(Q_f, K_m, V_m, causal, tiles(0, 0, FlashKernel::portable)), 2e-5, 2e-6,
                    name(FlashKernel::avx2) + " (AVX2 at most) against portable");
    }
}

BOOST_AUTO_TEST_CASE(the_kernel_chosen_is_the_best_the_processor_has_and_can_be_forced_lower)
{
    const std::string best = name(FlashKernel::best);
    BOOST_TEST(best == (attn::detail::has_avx512() ? "AVX-512" : attn::detail::has_avx2_fma() ? "AVX2" : "portable"));
    BOOST_TEST(name(FlashKernel::avx2) != "AVX-512");  // a ceiling, never exceeded
    BOOST_TEST(name(FlashKernel::portable) == "portable");
    BOOST_TEST_MESSAGE("the kernel chosen here: " << best);
}

BOOST_AUTO_TEST_CASE(the_cache_sizes_are_read_from_the_machine)
{
    const attn::detail::CacheSizes& caches = attn::detail::cache_sizes();
    BOOST_TEST(caches.l1d_bytes > 0u);
    BOOST_TEST(caches.l2_bytes > 0u);
    BOOST_TEST(caches.l2_bytes >= caches.l1d_bytes);
    const bool sysfs = attn::cache_bytes(1) > 0 && attn::cache_bytes(2) > 0;
    BOOST_TEST(caches.from_sysfs == sysfs);  // the fallback is used, and flagged, only without sysfs
#if defined(__linux__)
    if (std::filesystem::exists("/sys/devices/system/cpu/cpu0/cache/index0/size")) {
        BOOST_TEST(caches.from_sysfs);
        BOOST_TEST(caches.l1d_bytes == attn::cache_bytes(1));
        BOOST_TEST(caches.l2_bytes == attn::cache_bytes(2));
    }
#endif
    BOOST_TEST_MESSAGE("L1d " << caches.l1d_bytes / 1024 << " KiB, L2 " << caches.l2_bytes / 1024 << " KiB"
                              << (caches.from_sysfs ? " (sysfs)" : " (fallback: sysfs unreadable)"));
    const attn::FlashOptions plan = attn::detail::plan_flash({}, 64, 64);
    BOOST_TEST(plan.key_tile % 32 == 0u);
    BOOST_TEST(plan.key_tile * 128 * sizeof(float) <= caches.l2_bytes / 4 + 32 * 128 * sizeof(float));
}

using Cells = std::set<std::pair<std::size_t, std::size_t>>;

// The (row, column) entries of `O` that are not finite.
template <class T>
Cells non_finite(const xt::xtensor<T, 2>& O)
{
    Cells cells;
    for (std::size_t i = 0; i < O.shape(0); ++i)
        for (std::size_t c = 0; c < O.shape(1); ++c)
            if (!std::isfinite(double(O(i, c)))) cells.emplace(i, c);
    return cells;
}

bool includes(const Cells& big, const Cells& small)
{
    return std::includes(big.begin(), big.end(), small.begin(), small.end());
}

// The kernel contract's clause on non-finite inputs, for one element type, kernel and tile size:
// a NaN in Q row i, K row j or V(j, c) reaches exactly the outputs that depend on it (causal: at
// least those; a weight of exactly 0 times NaN may reach more rows of column c, never fewer).
template <class T>
void check_nan_reaches_what_depends_on_it(FlashKernel kernel, std::size_t b_r, std::size_t b_c, bool fused)
{
    const T nan = std::numeric_limits<T>::quiet_NaN();
    const std::size_t n = 53, d_v = 24, i = 17, j = 40, c = 5;
    const auto inputs = random_inputs(n, n, 16, d_v, 31);
    const xt::xtensor<T, 2> Q = inputs.Q, K = inputs.K, V = inputs.V;
    for (bool causal : {false, true}) {
        auto attend = [&](const xt::xtensor<T, 2>& q, const xt::xtensor<T, 2>& k, const xt::xtensor<T, 2>& v) {
            return fused ? attn::flash_attention(q, k, v, causal, tiles(b_r, b_c, kernel))
                         : attn::unfused_attention(q, k, v, causal, tiles(b_r, b_c, kernel));
        };
        const std::string what = std::string(fused ? "tiled " : "three passes ") + name(kernel) +
                                 (causal ? ", causal" : "") + ", tiles " + std::to_string(b_r) + "×" +
                                 std::to_string(b_c);
        BOOST_TEST_CONTEXT(what)
        {
            Cells row_i, seeing_j, column_c;  // what a NaN in Q_i, K_j, V_jc must reach
            for (std::size_t r = 0; r < n; ++r)
                for (std::size_t col = 0; col < d_v; ++col) {
                    if (r == i) row_i.emplace(r, col);
                    if (!causal || r >= j) seeing_j.emplace(r, col);
                    if ((!causal || r >= j) && col == c) column_c.emplace(r, col);
                }
            auto Q_nan = Q;
            Q_nan(i, 3) = nan;
            BOOST_TEST((non_finite(attend(Q_nan, K, V)) == row_i));
            auto K_nan = K;
            K_nan(j, 0) = nan;
            BOOST_TEST((non_finite(attend(Q, K_nan, V)) == seeing_j));
            auto V_nan = V;
            V_nan(j, c) = nan;
            const Cells reached = non_finite(attend(Q, K, V_nan));
            BOOST_TEST(includes(reached, column_c));
            for (const auto& cell : reached) BOOST_TEST(cell.second == c);  // never another column
            if (!causal) BOOST_TEST((reached == column_c));
        }
    }
}

BOOST_AUTO_TEST_CASE(a_nan_reaches_the_outputs_that_depend_on_it_in_every_kernel)
{
    for (bool fused : {true, false}) {
        check_nan_reaches_what_depends_on_it<double>(FlashKernel::best, 0, 0, fused);
        check_nan_reaches_what_depends_on_it<double>(FlashKernel::best, 7, 16, fused);
        for (FlashKernel kernel : float_kernels)
            for (const auto& [b_r, b_c] : std::vector<std::array<std::size_t, 2>>{{0, 0}, {7, 16}, {13, 1}})
                check_nan_reaches_what_depends_on_it<float>(kernel, b_r, b_c, fused);
    }
}

BOOST_AUTO_TEST_CASE(the_shapes_of_the_kernel_contract_hold_in_every_kernel)
{
    for (FlashKernel kernel : float_kernels) {
        const std::string what = name(kernel);
        BOOST_TEST_CONTEXT(what)
        {
            const auto none = random_inputs(0, 4, 5, 3, 8);  // n = 0: an empty 0×d_v result
            const xt::xtensor<float, 2> Q0 = none.Q, K0 = none.K, V0 = none.V;
            BOOST_TEST(attn::flash_attention(Q0, K0, V0, false, tiles(0, 0, kernel)).shape(1) == 3u);
            BOOST_TEST(attn::unfused_attention(Q0, K0, V0, false, tiles(0, 0, kernel)).shape(0) == 0u);
            const auto narrow = random_inputs(5, 5, 4, 0, 8);  // d_v = 0: an n×0 result
            const xt::xtensor<float, 2> Q1 = narrow.Q, K1 = narrow.K, V1 = narrow.V;
            for (bool causal : {false, true}) {
                const auto O = attn::flash_attention(Q1, K1, V1, causal, tiles(0, 0, kernel));
                BOOST_TEST((O.shape(0) == 5u && O.shape(1) == 0u));
                const auto U = attn::unfused_attention(Q1, K1, V1, causal, tiles(0, 0, kernel));
                BOOST_TEST((U.shape(0) == 5u && U.shape(1) == 0u));
            }
            const auto no_keys = random_inputs(3, 0, 5, 2, 8);  // m = 0 and d_k = 0: errors
            const xt::xtensor<float, 2> Q2 = no_keys.Q, K2 = no_keys.K, V2 = no_keys.V;
            BOOST_CHECK_THROW(attn::flash_attention(Q2, K2, V2, false, tiles(0, 0, kernel)), std::invalid_argument);
            BOOST_CHECK_THROW(attn::unfused_attention(Q2, K2, V2, false, tiles(0, 0, kernel)), std::invalid_argument);
            const xt::xtensor<float, 2> Q3 = xt::zeros<float>({3, 0}), K3 = xt::zeros<float>({4, 0}),
                                        V3 = xt::ones<float>({4, 2});
            BOOST_CHECK_THROW(attn::flash_attention(Q3, K3, V3, false, tiles(0, 0, kernel)), std::invalid_argument);
            BOOST_CHECK_THROW(attn::unfused_attention(Q3, K3, V3, false, tiles(0, 0, kernel)), std::invalid_argument);
        }
    }
}

BOOST_AUTO_TEST_CASE(wrong_shapes_are_rejected)
{
    const xt::xtensor<double, 2> Q = xt::zeros<double>({4, 3}), K = xt::zeros<double>({5, 3}),
                                 V = xt::zeros<double>({5, 2}), K_bad = xt::zeros<double>({5, 4});
    BOOST_CHECK_THROW(attn::flash_attention(Q, K_bad, V), std::invalid_argument);
    BOOST_CHECK_THROW(attn::flash_attention(Q, K, V, true), std::invalid_argument);  // causal needs n == m
    BOOST_CHECK_NO_THROW(attn::flash_attention(Q, K, V));
}

BOOST_AUTO_TEST_CASE(a_problem_given_by_strides_equals_the_same_head_copied_out)
{
    // Two heads side by side in each matrix; the problem points at head 1's columns and writes the middle
    // third of a wider output.
    const std::size_t m = 53, d_k = 5, d_v = 7;
    const auto head = [](const xt::xtensor<float, 2>& X, std::size_t width) {
        return xt::xtensor<float, 2>(xt::view(X, xt::all(), xt::range(width, 2 * width)));
    };
    for (const bool causal : {false, true}) {
        const std::size_t n = causal ? m : 37;
        const auto wide = random_inputs(n, m, 2 * d_k, 2 * d_v, 21);  // n×2d_k, m×2d_k, m×2d_v
        const xt::xtensor<float, 2> Q = wide.Q, K = wide.K, V = wide.V;
        for (const FlashKernel kernel : float_kernels) {
            xt::xtensor<float, 2> O = xt::zeros<float>({n, 3 * d_v});
            const attn::AttentionProblem<float> problem{
                Q.data() + d_k, K.data() + d_k, V.data() + d_v, O.data() + d_v, n, m, d_k, d_v,
                2 * d_k,        2 * d_k,        2 * d_v,        3 * d_v,        1.0 / std::sqrt(double(d_k)), causal};
            attn::flash_attention(problem, tiles(13, 33, kernel));
            const xt::xtensor<float, 2> expected =
                attn::flash_attention(head(Q, d_k), head(K, d_k), head(V, d_v), causal, tiles(13, 33, kernel));
            const xt::xtensor<float, 2> middle = xt::view(O, xt::all(), xt::range(d_v, 2 * d_v));
            const std::string what = name(kernel) + (causal ? ", causal" : "");
            BOOST_TEST((middle == expected), what << ": the head's outputs, bit for bit");
            BOOST_TEST(xt::amax(xt::abs(xt::view(O, xt::all(), xt::range(0, d_v))))() == 0.0f, what);
            BOOST_TEST(xt::amax(xt::abs(xt::view(O, xt::all(), xt::range(2 * d_v, 3 * d_v))))() == 0.0f, what);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_problem_that_breaks_the_contract_is_rejected)
{
    const std::vector<float> x(64, 1.0f);
    std::vector<float> o(64);
    const attn::AttentionProblem<float> good{x.data(), x.data(), x.data(), o.data(), 4, 4, 2, 2, 2, 2, 2, 2, 0.5, true};
    BOOST_CHECK_NO_THROW(attn::flash_attention(good));
    auto bad = good;
    bad.ld_k = 1;  // a stride shorter than a key
    BOOST_CHECK_THROW(attn::flash_attention(bad), std::invalid_argument);
    bad = good, bad.d_k = 0;
    BOOST_CHECK_THROW(attn::flash_attention(bad), std::invalid_argument);
    bad = good, bad.n = 3;  // causal needs n == m
    BOOST_CHECK_THROW(attn::flash_attention(bad), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
