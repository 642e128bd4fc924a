// Tests for chapter 18: streaming attention, a sliding window that keeps its sinks.
#define BOOST_TEST_MODULE ch18_streaming
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <array>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xview.hpp>

#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/position_model.hpp"
#include "attn/random.hpp"
#include "attn/sliding_window.hpp"
#include "attn/streaming.hpp"
#include "sparsity_support.hpp"
#include "test_support.hpp"

using test_support::as_type;
using test_support::check_close;
using test_support::Inputs;
using test_support::naive_attention;
using test_support::random_inputs;

namespace {

/// (n, w, s): n below, at and above w + s, n not a multiple of w, s = 0, s ≥ n, w ≥ n.
const std::vector<std::array<std::size_t, 3>> sizes = {
    {1, 1, 0},  {1, 4, 2},   {5, 1, 1},    {7, 3, 2},   {16, 4, 4},  {33, 8, 1},
    {100, 7, 3}, {257, 64, 5}, {64, 200, 3}, {20, 5, 30}, {50, 1, 0}, {31, 2, 31}};

/// The pattern written out from its definition: j ≤ i and (i − w < j or j < s).
auto visible(std::size_t w, std::size_t s)
{
    return [w, s](std::size_t i, std::size_t j) { return j <= i && (i - j < w || j < s); };
}

std::string at(std::size_t n, std::size_t w, std::size_t s)
{
    return "n=" + std::to_string(n) + " w=" + std::to_string(w) + " s=" + std::to_string(s);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(streaming)

BOOST_AUTO_TEST_CASE(mask_keeps_the_window_and_the_first_s_tokens)
{
    for (auto [n, w, s] : sizes) {
        const attn::Mask mask = attn::sink_window_mask(n, w, s);
        BOOST_REQUIRE(mask.shape(0) == n && mask.shape(1) == n);
        const auto expected = visible(w, s);
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j)
                BOOST_TEST(mask(i, j) == expected(i, j), at(n, w, s) << " (" << i << "," << j << ")");
    }
}

BOOST_AUTO_TEST_CASE(kernel_equals_the_naive_loops)
{
    for (auto [n, w, s] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 16, 8, 10 + n);
        check_close(attn::streaming_attention(Q, K, V, w, s), naive_attention(Q, K, V, visible(w, s)), 1e-12,
                    1e-13, "naive, " + at(n, w, s));
    }
}

BOOST_AUTO_TEST_CASE(kernel_equals_dense_masked_attention_at_ragged_sizes)
{
    for (auto [n, w, s] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 5, 3, 20 + n);
        const attn::Mask mask = attn::sink_window_mask(n, w, s);
        check_close(attn::streaming_attention(Q, K, V, w, s), attn::scaled_dot_product_attention(Q, K, V, mask),
                    1e-12, 1e-13, "double, " + at(n, w, s));
        const auto Q_f = as_type<float>(Q), K_f = as_type<float>(K), V_f = as_type<float>(V);
        check_close(attn::streaming_attention(Q_f, K_f, V_f, w, s),
                    attn::scaled_dot_product_attention(Q_f, K_f, V_f, mask), 1e-5, 1e-6, "float, " + at(n, w, s));
    }
}

BOOST_AUTO_TEST_CASE(a_window_as_long_as_the_sequence_is_causal_attention)
{
    const auto [Q, K, V] = random_inputs(40, 8, 6, 3);
    const auto causal = attn::scaled_dot_product_attention(Q, K, V, attn::causal_mask(40));
    for (std::size_t w : {40ul, 41ul, 1000ul, std::numeric_limits<std::size_t>::max()})
        for (std::size_t s : {0ul, 3ul, 40ul, std::numeric_limits<std::size_t>::max()})
            check_close(attn::streaming_attention(Q, K, V, w, s), causal, 1e-12, 1e-13, at(40, w, s));
}

BOOST_AUTO_TEST_CASE(no_sinks_is_chapter_6s_window)
{
    for (auto [n, w, s] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 8, 4, 30 + n);
        const auto window = attn::sliding_window_attention(Q, K, V, w);
        BOOST_TEST((attn::streaming_attention(Q, K, V, w, 0) == window), at(n, w, 0));  // same runs, same bits
        BOOST_TEST((attn::sink_window_mask(n, w, 0) == attn::sliding_window_mask(n, w)));
    }
}

BOOST_AUTO_TEST_CASE(cache_equals_the_kernel_row_by_row)
{
    for (auto [n, w, s] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 16, 8, 40 + n);
        check_close(attn::decode_with_streaming_cache(Q, K, V, w, s), attn::streaming_attention(Q, K, V, w, s), 1e-12,
                    1e-13, "cache, " + at(n, w, s));
        const auto Q_f = as_type<float>(Q), K_f = as_type<float>(K), V_f = as_type<float>(V);
        check_close(attn::decode_with_streaming_cache(Q_f, K_f, V_f, w, s),
                    attn::scaled_dot_product_attention(Q_f, K_f, V_f, attn::sink_window_mask(n, w, s)), 1e-5, 1e-6,
                    "float cache, " + at(n, w, s));
    }
}

BOOST_AUTO_TEST_CASE(cache_memory_stays_constant)
{
    const std::size_t w = 8, s = 3, d_k = 4, d_v = 3, n = 200;
    const auto [Q, K, V] = random_inputs(n, d_k, d_v, 6);
    attn::StreamingKVCache<double> cache(w, s, d_k, d_v);
    const std::size_t bytes = cache.bytes();
    BOOST_TEST(bytes == (w + s) * (d_k + d_v) * sizeof(double));
    std::vector<double> o(d_v);
    for (std::size_t t = 0; t < n; ++t) {
        cache.append(K.data() + t * d_k, V.data() + t * d_v);
        cache.attend(Q.data() + t * d_k, o.data());
        BOOST_TEST(cache.size() == std::min<std::size_t>(t + 1, w + s));
        BOOST_TEST(cache.seen() == t + 1);
        BOOST_TEST(cache.bytes() == bytes);
    }
}

BOOST_AUTO_TEST_CASE(peak_memory_of_decoding_does_not_grow_with_length)
{
#if defined(__SANITIZE_ADDRESS__)
    BOOST_TEST_MESSAGE("peak memory not checked under AddressSanitizer");
    return;
#endif
    const std::size_t d = 128, w = 512, s = 4;
    const auto [Q, K, V] = random_inputs(64, d, d, 7);
    const auto K_f = as_type<float>(K);
    auto decode = [&](std::size_t n) {
        return attn::largest_peak_memory_bytes([&] {
            attn::StreamingKVCache<float> cache(w, s, d, d);
            std::vector<float> o(d);
            for (std::size_t t = 0; t < n; ++t) {
                const float* x = K_f.data() + (t % 64) * d;
                cache.append(x, x);
                cache.attend(x, o.data());
            }
            return o;
        });
    };
    const std::size_t short_peak = decode(1024), long_peak = decode(8192);
    const std::size_t cache_bytes = (w + s) * 2 * d * sizeof(float);
    BOOST_TEST(long_peak <= short_peak + cache_bytes / 4, "peaks " << short_peak << " and " << long_peak);
    BOOST_TEST(long_peak < 2 * cache_bytes + (1 << 16), "peak " << long_peak);
}

BOOST_AUTO_TEST_CASE(tokens_between_the_sinks_and_the_window_change_nothing)
{
    auto [Q, K, V] = random_inputs(40, 8, 4, 8);
    const std::size_t w = 6, s = 2;
    const auto before = attn::streaming_attention(Q, K, V, w, s);
    xt::view(K, xt::range(s, 10), xt::all()) *= -3.0;  // tokens 2…9: evicted by row 15
    xt::view(V, xt::range(s, 10), xt::all()) += 5.0;
    const auto after = attn::streaming_attention(Q, K, V, w, s);
    BOOST_TEST((xt::view(after, xt::range(15, 40), xt::all()) == xt::view(before, xt::range(15, 40), xt::all())));
}

BOOST_AUTO_TEST_CASE(the_kernel_scores_exactly_the_allowed_pairs)
{
    for (auto [n, w, s] : sizes) {
        const auto [Q, K, V] = random_inputs(n, 4, 2, 50 + n);
        attn::KeyVisits visits;
        attn::streaming_attention(Q, K, V, w, s, &visits);
        const std::size_t allowed = std::size_t(xt::sum(attn::sink_window_mask(n, w, s))());
        BOOST_TEST(visits.scores == allowed, at(n, w, s));
    }
}

BOOST_AUTO_TEST_CASE(the_kernel_never_holds_an_n_by_n_matrix)
{
    test_support::check_never_holds_an_n_by_n_matrix(
        [](const auto& Q, const auto& K, const auto& V) { return attn::streaming_attention(Q, K, V, 128, 4); }, 61);
}

BOOST_AUTO_TEST_CASE(sink_queries_meet_only_the_sinks)
{
    // Row i meets the sinks with Q_sink's row and its window with Q's.
    const auto [Q, K, V] = random_inputs(30, 6, 4, 9);
    const std::size_t w = 5, s = 2;
    const xt::xtensor<double, 2> Q_sink = Q * 3.0;
    const auto O = attn::streaming_attention(Q, Q_sink, K, V, w, s);
    for (std::size_t i = 0; i < 30; ++i) {  // keys j < s meet Q_sink, the others Q
        std::vector<long double> scores;
        const auto score = [&](const xt::xtensor<double, 2>& q, std::size_t j) {
            long double dot = 0;
            for (std::size_t c = 0; c < 6; ++c) dot += (long double)q(i, c) * K(j, c);
            return dot / std::sqrt(6.0L);
        };
        std::vector<std::size_t> keys;
        for (std::size_t j = 0; j <= i; ++j)
            if (visible(w, s)(i, j)) keys.push_back(j), scores.push_back(score(j < s ? Q_sink : Q, j));
        long double top = *std::max_element(scores.begin(), scores.end()), total = 0;
        for (auto& a : scores) total += (a = std::exp(a - top));
        for (std::size_t c = 0; c < 4; ++c) {
            long double acc = 0;
            for (std::size_t k = 0; k < keys.size(); ++k) acc += scores[k] / total * V(keys[k], c);
            BOOST_TEST(std::abs(double(acc) - O(i, c)) < 1e-12, "row " << i);
        }
    }
    BOOST_TEST((attn::streaming_attention(Q, Q, K, V, w, s) == attn::streaming_attention(Q, K, V, w, s)));
}

BOOST_AUTO_TEST_CASE(model_with_a_long_window_is_the_models_own_forward)
{
    attn::PositionModelShape shape;
    shape.scheme = attn::PositionScheme::rope;
    shape.layers = 2;
    std::mt19937_64 rng(11);
    const auto model = attn::init_position_model<double>(shape, rng);
    std::vector<std::size_t> tokens(23);
    for (std::size_t& t : tokens) t = rng() % shape.vocab;
    const auto reference = attn::position_model_forward(model, tokens).logits;
    check_close(attn::streaming_model_logits(model, tokens, 23, 0), reference, 1e-10, 1e-11, "w = n");
    check_close(attn::streaming_model_logits(model, tokens, 100, 4, attn::SinkPositions::in_cache), reference,
                1e-10, 1e-11, "w > n, sinks in the cache");
}

BOOST_AUTO_TEST_CASE(sinks_in_the_cache_are_sinks_at_a_capped_distance)
{
    // With RoPE, a sink at cache position j seen from cache position s + w − 1 scores as
    // the same key and query rotated by those two positions.
    const std::size_t d = 8, w = 4, s = 2, n = 20;
    attn::PositionModelShape shape;
    shape.scheme = attn::PositionScheme::rope;
    shape.d_model = d, shape.heads = 1, shape.layers = 1, shape.vocab = 5;
    std::mt19937_64 rng(13);
    auto model = attn::init_position_model<double>(shape, rng);
    std::vector<std::size_t> tokens(n);
    for (std::size_t& t : tokens) t = rng() % shape.vocab;
    // the last row by hand: query at s + w − 1 for the sinks, at n − 1 for the window
    const xt::xtensor<double, 2> X = attn::embed_positions(model, tokens);
    const auto& layer = model.layers[0];
    const xt::xtensor<double, 2> q = attn::rope(attn::detail::matmul(X, layer.W_q), 0);
    const xt::xtensor<double, 2> k = attn::rope(attn::detail::matmul(X, layer.W_k), 0);
    const xt::xtensor<double, 2> v = attn::detail::matmul(X, layer.W_v);
    xt::xtensor<double, 2> q_last = xt::view(attn::detail::matmul(X, layer.W_q), xt::range(n - 1, n), xt::all());
    const xt::xtensor<double, 2> q_sink = attn::rope(q_last, std::int64_t(s + w - 1));
    const auto allowed = visible(w, s);
    std::vector<long double> a;
    std::vector<std::size_t> keys;
    for (std::size_t j = 0; j < n; ++j) {
        if (!allowed(n - 1, j)) continue;
        long double dot = 0;
        for (std::size_t c = 0; c < d; ++c) dot += (long double)(j < s ? q_sink(0, c) : q(n - 1, c)) * k(j, c);
        a.push_back(dot / std::sqrt((long double)d)), keys.push_back(j);
    }
    long double top = *std::max_element(a.begin(), a.end()), total = 0;
    for (auto& x : a) total += (x = std::exp(x - top));
    xt::xtensor<double, 1> head = xt::zeros<double>({d});
    for (std::size_t c = 0; c < d; ++c)
        for (std::size_t t = 0; t < keys.size(); ++t) head(c) += double(a[t] / total) * v(keys[t], c);
    xt::xtensor<double, 1> y = xt::row(X, n - 1);
    for (std::size_t c = 0; c < d; ++c)
        for (std::size_t r = 0; r < d; ++r) y(c) += head(r) * layer.W_o(r, c);
    const auto logits = attn::streaming_model_logits(model, tokens, w, s, attn::SinkPositions::in_cache);
    for (std::size_t t = 0; t < shape.vocab; ++t) {
        double expected = 0;
        for (std::size_t c = 0; c < d; ++c) expected += y(c) * model.W_out(c, t);
        BOOST_TEST(std::abs(logits(n - 1, t) - expected) < 1e-10, "logit " << t);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(the_kernel_contract)

using test_support::contract_violation;
using test_support::Poison;
using test_support::throws_invalid_argument;

BOOST_AUTO_TEST_CASE(bad_arguments_throw_invalid_argument)
{
    const std::size_t huge = std::numeric_limits<std::size_t>::max();
    const auto [Q, K, V] = random_inputs(6, 4, 3, 70);
    BOOST_CHECK_THROW(attn::sink_window_mask(6, 0, 2), std::invalid_argument);
    BOOST_CHECK_THROW(attn::streaming_attention(Q, K, V, 0, 2), std::invalid_argument);
    BOOST_CHECK_THROW(attn::decode_with_streaming_cache(Q, K, V, 0, 2), std::invalid_argument);
    BOOST_CHECK_THROW(attn::StreamingKVCache<double>(0, 2, 4, 4), std::invalid_argument);
    BOOST_CHECK_THROW(attn::StreamingKVCache<double>(huge, 2, 4, 4), std::invalid_argument);
    BOOST_CHECK_THROW(attn::StreamingKVCache<double>(4, huge, 4, 4), std::invalid_argument);
    BOOST_CHECK_THROW(attn::StreamingKVCache<double>(huge / 8, huge / 8, 4, 4), std::invalid_argument);
    const auto [Q5, K6, V6] = random_inputs(5, 6, 4, 3, 71);  // 5 queries, 6 keys
    BOOST_CHECK_THROW(attn::streaming_attention(Q5, K6, V6, 2, 1), std::invalid_argument);
    BOOST_CHECK_THROW(attn::decode_with_streaming_cache(Q5, K6, V6, 2, 1), std::invalid_argument);
    const auto [Q0, K0, V0] = random_inputs(0, 4, 3, 72);  // m = n = 0
    BOOST_CHECK_THROW(attn::streaming_attention(Q0, K0, V0, 2, 1), std::invalid_argument);
    const auto [Qd, Kd, Vd] = random_inputs(5, 0, 3, 73);  // d_k = 0
    BOOST_CHECK_THROW(attn::streaming_attention(Qd, Kd, Vd, 2, 1), std::invalid_argument);
    const xt::xtensor<double, 2> Q_short = xt::view(Q, xt::range(0, 5), xt::all());
    BOOST_CHECK_THROW(attn::streaming_attention(Q, Q_short, K, V, 2, 1), std::invalid_argument);
    attn::PositionModelShape shape;
    shape.scheme = attn::PositionScheme::alibi;
    std::mt19937_64 rng(1);
    const auto alibi = attn::init_position_model<double>(shape, rng);
    BOOST_CHECK_THROW(attn::streaming_model_logits(alibi, {1, 2, 3}, 2, 1), std::invalid_argument);
    shape.scheme = attn::PositionScheme::learned;
    const auto learned = attn::init_position_model<double>(shape, rng);
    BOOST_CHECK_THROW(attn::streaming_model_logits(learned, {1, 2, 3}, 2, 1, attn::SinkPositions::in_cache),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(a_nan_reaches_exactly_the_rows_that_see_it)
{
    const auto clean = random_inputs(12, 4, 3, 74);
    const std::size_t w = 3, s = 2;
    for (const char operand : {'Q', 'K', 'V'})
        for (std::size_t row : {0ul, 1ul, 5ul}) {
            Inputs x = clean;
            Poison p{operand, row, 1, std::numeric_limits<double>::quiet_NaN()};
            (operand == 'Q' ? x.Q : operand == 'K' ? x.K : x.V)(row, 1) = p.value;
            for (const auto& O : {attn::streaming_attention(x.Q, x.K, x.V, w, s),
                                  attn::decode_with_streaming_cache(x.Q, x.K, x.V, w, s)}) {
                const std::string wrong = contract_violation(O, clean, p, visible(w, s));
                BOOST_TEST(wrong.empty(), operand << row << ": " << wrong);
            }
        }
}

BOOST_AUTO_TEST_CASE(large_logits_stay_finite)
{
    auto [Q, K, V] = random_inputs(20, 4, 3, 75);
    Q *= 1e4;
    const auto O = attn::streaming_attention(Q, K, V, 4, 2);
    BOOST_TEST(test_support::all_finite(O));
    check_close(O, naive_attention(Q, K, V, visible(4, 2)), 1e-9, 1e-9, "logits 1e4");
}

BOOST_AUTO_TEST_CASE(fuzz_every_kernel_against_the_masked_reference)
{
    const std::size_t cases = test_support::fuzz_cases(300, 1818, [](std::mt19937_64& rng, std::size_t k) {
        const std::size_t n = test_support::draw_size(rng, 40);
        const std::size_t d_k = test_support::draw_size(rng, 40);
        const std::size_t d_v = rng() % 8 == 0 ? 0 : test_support::draw_size(rng, 40);
        const std::size_t w = test_support::draw_option(rng, n);
        const std::size_t s = test_support::draw_option(rng, n);
        const Inputs clean = random_inputs(n, d_k, d_v, rng());
        Inputs x = clean;
        const Poison p = test_support::draw_poison(rng, x);
        const auto where = [&] {
            return "case " + std::to_string(k) + ": " + at(n, w, s) + ", d_k = " + std::to_string(d_k) +
                   ", d_v = " + std::to_string(d_v) + ", poison " + (p.operand ? p.operand : '-');
        };
        const auto kernel = [&] { return attn::streaming_attention(x.Q, x.K, x.V, w, s); };
        const auto cache = [&] { return attn::decode_with_streaming_cache(x.Q, x.K, x.V, w, s); };
        if (w == 0) {
            BOOST_CHECK_MESSAGE(throws_invalid_argument(kernel), where());
            BOOST_CHECK_MESSAGE(throws_invalid_argument(cache), where());
            return;
        }
        for (const auto& O : {kernel(), cache()}) {
            const std::string wrong = contract_violation(O, clean, p, visible(w, s));
            if (!wrong.empty()) BOOST_ERROR(where() << ": " << wrong);
        }
    });
    BOOST_TEST_MESSAGE(cases << " cases");
}

BOOST_AUTO_TEST_SUITE_END()
