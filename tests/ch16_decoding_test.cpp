// Chapter 16: the KV cache, decoding token by token, prefill, split-KV attention.
#define BOOST_TEST_MODULE ch16_decoding
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include <xtensor/xview.hpp>

#include "attn/causal_decoder.hpp"
#include "attn/kv_cache.hpp"
#include "attn/random.hpp"
#include "test_support.hpp"

using test_support::as_type;
using test_support::check_close;
using test_support::naive_attention;
using test_support::random_inputs;

namespace {

/// A cache holding the rows of K and V.
template <class T>
attn::KVCache<T> cache_of(const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V)
{
    attn::KVCache<T> cache(K.shape(1), V.shape(1));
    for (std::size_t j = 0; j < K.shape(0); ++j)
        cache.append(xt::xtensor<T, 1>(xt::row(K, j)), xt::xtensor<T, 1>(xt::row(V, j)));
    return cache;
}

/// A small random causal model: 27 tokens, 12 positions, d_model 16, 2 heads, 2 layers.
template <class T>
attn::TinyModel<T> small_model(std::uint64_t seed, std::size_t layers = 2)
{
    std::mt19937_64 rng(seed);
    attn::TinyModelShape shape{27, 12, 16, 2, layers};
    return attn::init_tiny_model<T>(shape, rng);
}

std::vector<std::size_t> random_tokens(std::size_t n, std::size_t vocab, std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<std::size_t> token(0, vocab - 1);
    std::vector<std::size_t> tokens(n);
    for (std::size_t& t : tokens) t = token(rng);
    return tokens;
}

template <class T>
bool same_bits(const xt::xtensor<T, 1>& a, const xt::xtensor<T, 1>& b)
{
    if (a.shape() != b.shape()) return false;
    for (std::size_t c = 0; c < a.size(); ++c)
        if (!(a(c) == b(c))) return false;
    return true;
}

/// Generation with and without the cache: same tokens, same logits to the bit.
template <class T>
void check_cache_equals_recomputation()
{
    for (std::uint64_t seed : {1, 2, 3})
        for (std::size_t layers : {1, 2, 3}) {
            const attn::TinyModel<T> model = small_model<T>(seed, layers);
            for (std::size_t prompt_length : {1, 4, 7}) {
                const auto prompt = random_tokens(prompt_length, 27, seed + 10);
                const std::size_t count = model.shape.n + 1 - prompt_length;
                const auto cached = attn::generate_with_cache(model, prompt, count);
                const auto again = attn::generate_by_recomputing(model, prompt, count);
                BOOST_REQUIRE_EQUAL(cached.tokens.size(), count);
                BOOST_TEST(cached.tokens == again.tokens, boost::test_tools::per_element());
                for (std::size_t t = 0; t < count; ++t)
                    BOOST_TEST(same_bits(cached.logits[t], again.logits[t]),
                               "step " << t << " of seed " << seed << ", " << layers
                                       << " layers, prompt " << prompt_length);
            }
        }
}

}  // namespace

// ---------------------------------------------------------------- the cache

BOOST_AUTO_TEST_CASE(cache_attention_equals_naive_attention_of_one_query)
{
    for (auto [m, d_k, d_v] : std::vector<std::array<std::size_t, 3>>{
             {1, 4, 4}, {2, 3, 5}, {17, 8, 3}, {100, 16, 16}, {333, 64, 32}}) {
        const auto in = random_inputs(1, m, d_k, d_v, 7 * m + d_k);
        const auto cache = cache_of(in.K, in.V);
        BOOST_TEST(cache.size() == m);
        const xt::xtensor<double, 1> q = xt::row(in.Q, 0);
        const xt::xtensor<double, 2> out = xt::view(cache.attend(q), xt::newaxis(), xt::all());
        check_close(out, naive_attention(in.Q, in.K, in.V), 1e-12, 1e-13, "double");
        const auto cache_f = cache_of(as_type<float>(in.K), as_type<float>(in.V));
        const xt::xtensor<float, 1> q_f = xt::row(as_type<float>(in.Q), 0);
        const xt::xtensor<float, 2> out_f =
            xt::view(cache_f.attend(q_f), xt::newaxis(), xt::all());
        check_close(out_f, naive_attention(in.Q, in.K, in.V), 1e-5, 1e-6, "float");
    }
}

BOOST_AUTO_TEST_CASE(every_prefix_of_the_cache_is_a_row_of_causal_attention)
{
    const auto in = random_inputs(20, 20, 8, 6, 11);
    const auto expected = naive_attention(in.Q, in.K, in.V,
                                          [](std::size_t i, std::size_t j) { return j <= i; });
    attn::KVCache<double> cache(8, 6);
    xt::xtensor<double, 2> rows = xt::zeros<double>({20, 6});
    for (std::size_t i = 0; i < 20; ++i) {
        cache.append(xt::xtensor<double, 1>(xt::row(in.K, i)),
                     xt::xtensor<double, 1>(xt::row(in.V, i)));
        xt::row(rows, i) = cache.attend(xt::xtensor<double, 1>(xt::row(in.Q, i)));
    }
    check_close(rows, expected, 1e-12, 1e-13, "causal rows");
}

BOOST_AUTO_TEST_CASE(truncating_equals_never_having_appended)
{
    const auto in = random_inputs(1, 30, 8, 8, 5);
    auto cache = cache_of(in.K, in.V);
    cache.truncate(12);
    const xt::xtensor<double, 2> K12 = xt::view(in.K, xt::range(0, 12), xt::all());
    const xt::xtensor<double, 2> V12 = xt::view(in.V, xt::range(0, 12), xt::all());
    const auto fresh = cache_of(K12, V12);
    const xt::xtensor<double, 1> q = xt::row(in.Q, 0);
    BOOST_TEST(cache.size() == 12u);
    BOOST_TEST(same_bits(cache.attend(q), fresh.attend(q)));
    BOOST_TEST(cache.bytes() == 12u * (8 + 8) * sizeof(double));
    BOOST_CHECK_THROW(cache.truncate(13), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(large_logits_give_no_inf_or_nan_and_a_nan_reaches_its_output)
{
    auto in = random_inputs(1, 50, 8, 4, 3, 1e4);  // scores of order 1e8
    const auto cache = cache_of(in.K, in.V);
    const xt::xtensor<double, 1> out = cache.attend(xt::xtensor<double, 1>(xt::row(in.Q, 0)));
    BOOST_TEST(test_support::all_finite(out));
    in.K(17, 3) = std::numeric_limits<double>::quiet_NaN();
    const auto poisoned = cache_of(in.K, in.V);
    const xt::xtensor<double, 1> bad =
        poisoned.attend(xt::xtensor<double, 1>(xt::row(in.Q, 0)));
    for (double value : bad) BOOST_TEST(std::isnan(value));
}

BOOST_AUTO_TEST_CASE(the_cache_rejects_bad_arguments)
{
    BOOST_CHECK_THROW(attn::KVCache<float>(0, 4), std::invalid_argument);
    BOOST_CHECK_THROW(attn::KVCache<float>(4, 0), std::invalid_argument);
    attn::KVCache<float> cache(4, 3);
    const xt::xtensor<float, 1> k4 = xt::ones<float>({4}), v3 = xt::ones<float>({3});
    BOOST_CHECK_THROW(cache.attend(k4), std::invalid_argument);  // empty
    BOOST_CHECK_THROW(cache.append(v3, v3), std::invalid_argument);
    BOOST_CHECK_THROW(cache.append(k4, k4), std::invalid_argument);
    cache.append(k4, v3);
    BOOST_CHECK_THROW(cache.attend(v3), std::invalid_argument);
    BOOST_TEST(cache.size() == 1u);  // a rejected row leaves nothing behind
}

// ---------------------------------------------------------------- split-KV

BOOST_AUTO_TEST_CASE(split_kv_equals_exact_attention_for_any_parts)
{
    for (std::size_t m : {1, 2, 7, 100, 257}) {
        const auto in = random_inputs(1, m, 16, 8, 100 + m, 2.0);
        const auto expected = naive_attention(in.Q, in.K, in.V);  // 1×d_v
        const xt::xtensor<double, 1> q = xt::row(in.Q, 0);
        for (std::size_t parts : {std::size_t(1), std::size_t(2), std::size_t(3),
                                  std::size_t(5), std::size_t(8), m, m + 5})
            for (std::size_t threads : {1, 2, 3}) {
                const xt::xtensor<double, 2> out = xt::view(
                    attn::split_kv_attention(q, in.K, in.V, parts, threads), xt::newaxis(),
                    xt::all());
                check_close(out, expected, 1e-12, 1e-13, "split-KV");
            }
        const xt::xtensor<float, 1> q_f = xt::row(as_type<float>(in.Q), 0);
        const xt::xtensor<float, 2> out_f = xt::view(
            attn::split_kv_attention(q_f, as_type<float>(in.K), as_type<float>(in.V), 3, 2),
            xt::newaxis(), xt::all());
        check_close(out_f, expected, 1e-5, 1e-6, "split-KV float");
    }
}

BOOST_AUTO_TEST_CASE(split_kv_does_not_depend_on_the_number_of_threads)
{
    const auto in = random_inputs(1, 1001, 32, 32, 9);
    const xt::xtensor<float, 1> q = xt::row(as_type<float>(in.Q), 0);
    const auto K = as_type<float>(in.K), V = as_type<float>(in.V);
    const auto one = attn::split_kv_attention(q, K, V, 8, 1);
    for (std::size_t threads : {2, 3, 8, 100})
        BOOST_TEST(same_bits(one, attn::split_kv_attention(q, K, V, 8, threads)));
    // one part is the cache's own single pass, bit for bit
    BOOST_TEST(same_bits(attn::split_kv_attention(q, K, V, 1), cache_of(K, V).attend(q)));
}

BOOST_AUTO_TEST_CASE(merging_a_state_with_an_empty_one_changes_nothing)
{
    const auto in = random_inputs(1, 10, 4, 4, 2);
    const attn::QueryState<double> state =
        attn::attend_keys(in.Q.data(), in.K.data(), in.V.data(), 0, 10, 4, 4);
    const attn::QueryState<double> empty =
        attn::attend_keys(in.Q.data(), in.K.data(), in.V.data(), 5, 5, 4, 4);
    for (const auto& merged : {attn::merge_states(state, empty), attn::merge_states(empty, state)}) {
        BOOST_TEST(merged.max == state.max);
        BOOST_TEST(merged.sum == state.sum);
        BOOST_TEST(merged.acc == state.acc, boost::test_tools::per_element());
    }
    const auto nothing = attn::finish_state(attn::merge_states(empty, empty));
    for (double value : nothing) BOOST_TEST(value == 0.0);
    // two halves merged equal the whole, up to rounding
    const auto left = attn::attend_keys(in.Q.data(), in.K.data(), in.V.data(), 0, 4, 4, 4);
    const auto right = attn::attend_keys(in.Q.data(), in.K.data(), in.V.data(), 4, 10, 4, 4);
    const xt::xtensor<double, 2> halves = xt::view(
        attn::finish_state(attn::merge_states(left, right)), xt::newaxis(), xt::all());
    const xt::xtensor<double, 2> whole =
        xt::view(attn::finish_state(state), xt::newaxis(), xt::all());
    check_close(halves, whole, 1e-13, 1e-14, "halves");
}

BOOST_AUTO_TEST_CASE(split_kv_rejects_bad_arguments)
{
    const auto in = random_inputs(1, 10, 4, 3, 1);
    const xt::xtensor<double, 1> q = xt::row(in.Q, 0);
    BOOST_CHECK_THROW(attn::split_kv_attention(q, in.K, in.V, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::split_kv_attention(q, in.K, in.V, 2, 0), std::invalid_argument);
    const xt::xtensor<double, 1> wrong = xt::ones<double>({5});
    BOOST_CHECK_THROW(attn::split_kv_attention(wrong, in.K, in.V, 2), std::invalid_argument);
    const xt::xtensor<double, 2> short_V = xt::view(in.V, xt::range(0, 9), xt::all());
    BOOST_CHECK_THROW(attn::split_kv_attention(q, in.K, short_V, 2), std::invalid_argument);
    const xt::xtensor<double, 2> no_keys = xt::zeros<double>({0, 4});
    const xt::xtensor<double, 2> no_values = xt::zeros<double>({0, 3});
    BOOST_CHECK_THROW(attn::split_kv_attention(q, no_keys, no_values, 1),
                      std::invalid_argument);
    // more parts than keys: clamped, still exact
    const xt::xtensor<double, 2> out =
        xt::view(attn::split_kv_attention(q, in.K, in.V, 1000), xt::newaxis(), xt::all());
    check_close(out, naive_attention(in.Q, in.K, in.V), 1e-12, 1e-13, "clamped");
}

// ---------------------------------------------------------------- the decoder

BOOST_AUTO_TEST_CASE(generation_with_the_cache_equals_recomputation_bit_for_bit_float)
{
    check_cache_equals_recomputation<float>();
}

BOOST_AUTO_TEST_CASE(generation_with_the_cache_equals_recomputation_bit_for_bit_double)
{
    check_cache_equals_recomputation<double>();
}

BOOST_AUTO_TEST_CASE(the_row_forward_equals_the_batched_forward_to_rounding)
{
    const attn::TinyModel<double> model = small_model<double>(4);
    const auto tokens = random_tokens(12, 27, 8);
    check_close(attn::causal_forward_by_rows(model, tokens),
                attn::causal_model_forward(model, tokens).logits, 1e-12, 1e-12, "logits");
}

BOOST_AUTO_TEST_CASE(future_tokens_do_not_change_earlier_logits)
{
    const attn::TinyModel<float> model = small_model<float>(5);
    auto tokens = random_tokens(12, 27, 6);
    const auto before = attn::causal_forward_by_rows(model, tokens);
    tokens[7] = (tokens[7] + 1) % 27;
    const auto after = attn::causal_forward_by_rows(model, tokens);
    for (std::size_t i = 0; i < 7; ++i)
        for (std::size_t c = 0; c < 27; ++c) BOOST_TEST(before(i, c) == after(i, c));
    BOOST_TEST(xt::amax(xt::abs(xt::row(before, 7) - xt::row(after, 7)))() > 0.0f);
}

BOOST_AUTO_TEST_CASE(prefill_fills_the_cache_the_steps_would_have)
{
    const attn::TinyModel<double> model = small_model<double>(7);
    const auto tokens = random_tokens(12, 27, 9);
    const std::vector<std::size_t> prompt(tokens.begin(), tokens.begin() + 8);
    attn::Decoder<double> stepped(model), batched(model);
    xt::xtensor<double, 1> logits;
    for (std::size_t t : prompt) logits = stepped.step(t);
    const xt::xtensor<double, 1> prefilled = batched.prefill(prompt);
    check_close(prefilled, logits, 1e-12, 1e-12, "prefill");
    BOOST_TEST(batched.position() == 8u);
    for (std::size_t t = 8; t < 12; ++t)  // decoding on after either gives the same logits
        check_close(batched.step(tokens[t]), stepped.step(tokens[t]), 1e-12, 1e-12, "step");
    BOOST_CHECK_THROW(batched.prefill(prompt), std::invalid_argument);  // not empty
}

BOOST_AUTO_TEST_CASE(the_cache_holds_two_rows_per_head_layer_and_token)
{
    const attn::TinyModel<float> model = small_model<float>(1, 3);
    attn::Decoder<float> decoder(model);
    for (std::size_t t = 0; t < 5; ++t) decoder.step(t);
    const std::size_t d_k = 16 / 2;
    BOOST_TEST(decoder.position() == 5u);
    BOOST_TEST(decoder.cache_bytes() == 2u * 3 * 2 * d_k * sizeof(float) * 5);
    decoder.truncate(2);
    BOOST_TEST(decoder.position() == 2u);
}

BOOST_AUTO_TEST_CASE(a_prompt_longer_than_the_model_s_positions_is_rejected)
{
    const attn::TinyModel<float> model = small_model<float>(1);  // 12 positions
    attn::Decoder<float> decoder(model);
    for (std::size_t t = 0; t < 12; ++t) decoder.step(t);
    BOOST_CHECK_THROW(decoder.step(0), std::invalid_argument);  // position 12 does not exist
    attn::Decoder<float> fresh(model);
    BOOST_CHECK_THROW(fresh.step(27), std::invalid_argument);   // token out of range
    BOOST_CHECK_THROW(fresh.prefill(random_tokens(13, 27, 1)), std::invalid_argument);
    BOOST_CHECK_THROW(attn::generate_with_cache(model, random_tokens(10, 27, 1), 4),
                      std::invalid_argument);
    BOOST_CHECK_THROW(attn::generate_by_recomputing(model, random_tokens(10, 27, 1), 4),
                      std::invalid_argument);
    BOOST_CHECK_THROW(attn::generate_with_cache(model, {}, 1), std::invalid_argument);
    BOOST_CHECK_NO_THROW(attn::generate_with_cache(model, random_tokens(10, 27, 1), 3));
}

BOOST_AUTO_TEST_CASE(the_causal_model_learns_to_write_words_backwards)
{
    // the thresholds: after 150 steps the loss per scored token is below 0.3 nats and
    // at least 90 % of 50 fresh words are written entirely right
    const attn::ReversalTask task{4};
    std::mt19937_64 rng(20240611);
    attn::TinyModel<float> model =
        attn::init_tiny_model<float>(attn::causal_model_shape(task), rng);
    attn::TrainingConfig config;
    config.steps = 150;
    config.learning_rate = 3e-3;
    const auto curve = attn::train_causal_reversal(model, task, config, rng);
    BOOST_TEST(curve.back().loss < 0.3);
    std::size_t right = 0;
    for (int s = 0; s < 50; ++s) {
        const auto sequence = attn::reversal_sequence(task, rng);
        const std::vector<std::size_t> prompt(sequence.begin(), sequence.begin() + 5);
        const auto written = attn::generate_with_cache(model, prompt, 4);
        right += std::equal(written.tokens.begin(), written.tokens.end(), sequence.begin() + 5);
    }
    BOOST_TEST(right >= 45u);
}

BOOST_AUTO_TEST_CASE(evaluate_words_scores_an_oracle_and_uniform_logits)
{
    // the oracle's row r ≥ k puts logit 10 on token r + 1 of the reversal, the letter
    // 2k − 1 − r; zero logits spread the guess over the 27 tokens
    const attn::ReversalTask task{3};
    const std::size_t k = task.letters;
    const auto oracle = [&](const std::vector<std::size_t>& tokens) {
        xt::xtensor<double, 2> logits = xt::zeros<double>({tokens.size(), std::size_t(27)});
        for (std::size_t r = k; r < tokens.size(); ++r) logits(r, tokens[2 * k - 1 - r]) = 10;
        return logits;
    };
    std::mt19937_64 rng(5);
    const attn::WordQuality perfect = attn::evaluate_words<double>(oracle, task, 40, rng);
    BOOST_TEST(perfect.word_accuracy == 1.0, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(perfect.loss == std::log(1 + 26 * std::exp(-10.0)),
               boost::test_tools::tolerance(1e-12));
    const auto uniform_logits = [](const std::vector<std::size_t>& tokens) {
        return xt::xtensor<double, 2>(xt::zeros<double>({tokens.size(), std::size_t(27)}));
    };
    const attn::WordQuality uniform = attn::evaluate_words<double>(uniform_logits, task, 40, rng);
    BOOST_TEST(uniform.loss == std::log(27.0), boost::test_tools::tolerance(1e-12));
}
