// Chapter 17: grouped-query and multi-query attention, the grouped cache read, tied training.
#define BOOST_TEST_MODULE ch17_grouped_query
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include <xtensor/xview.hpp>

#include "attn/grouped_query.hpp"
#include "attn/multi_head_attention.hpp"
#include "attn/random.hpp"
#include "test_support.hpp"

using test_support::check_close;
using test_support::naive_attention;

namespace {

using Matrix = xt::xtensor<double, 2>;

/// Inputs and weights of one grouped-query test case.
struct Case {
    Matrix X_q, X_kv, W_q, W_k, W_v, W_o;
};

Case random_case(std::size_t n, std::size_t m, std::size_t d_model, std::size_t heads,
                 std::size_t kv_heads, std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    const double init = 1.0 / std::sqrt(double(d_model));
    const std::size_t d_kv = kv_heads * (d_model / heads);
    Case c;
    c.X_q = attn::random_normal<double>(n, d_model, 1.0, rng);
    c.X_kv = attn::random_normal<double>(m, d_model, 1.0, rng);
    c.W_q = attn::random_normal<double>(d_model, d_model, init, rng);
    c.W_k = attn::random_normal<double>(d_model, d_kv, 2 * init, rng);
    c.W_v = attn::random_normal<double>(d_model, d_kv, init, rng);
    c.W_o = attn::random_normal<double>(d_model, d_model, init, rng);
    return c;
}

/// A·B by three plain loops in long double.
Matrix times(const Matrix& A, const Matrix& B)
{
    Matrix C = xt::zeros<double>({A.shape(0), B.shape(1)});
    for (std::size_t i = 0; i < A.shape(0); ++i)
        for (std::size_t j = 0; j < B.shape(1); ++j) {
            long double sum = 0;
            for (std::size_t k = 0; k < A.shape(1); ++k) sum += (long double)A(i, k) * B(k, j);
            C(i, j) = double(sum);
        }
    return C;
}

/// Grouped-query attention written independently with plain loops: query head t reads
/// key/value head t / (h/g); allowed(i, j) says whether query i may attend key j.
template <class Allowed>
Matrix naive_grouped(const Case& c, std::size_t heads, std::size_t kv_heads, Allowed allowed)
{
    const std::size_t d_model = c.X_q.shape(1), d_k = d_model / heads;
    const Matrix Q = times(c.X_q, c.W_q), K = times(c.X_kv, c.W_k), V = times(c.X_kv, c.W_v);
    Matrix concat = xt::zeros<double>({c.X_q.shape(0), d_model});
    for (std::size_t t = 0; t < heads; ++t) {
        const std::size_t j = t / (heads / kv_heads);
        const Matrix Q_t = xt::view(Q, xt::all(), xt::range(t * d_k, (t + 1) * d_k));
        const Matrix K_j = xt::view(K, xt::all(), xt::range(j * d_k, (j + 1) * d_k));
        const Matrix V_j = xt::view(V, xt::all(), xt::range(j * d_k, (j + 1) * d_k));
        xt::view(concat, xt::all(), xt::range(t * d_k, (t + 1) * d_k)) =
            naive_attention(Q_t, K_j, V_j, allowed);
    }
    return times(concat, c.W_o);
}

bool everything(std::size_t, std::size_t) { return true; }

}  // namespace

BOOST_AUTO_TEST_CASE(as_many_kv_heads_as_query_heads_is_chapter_3_s_multi_head_attention)
{
    for (std::size_t heads : {1, 2, 4, 8}) {
        const Case c = random_case(7, 9, 16, heads, heads, heads);
        check_close(attn::grouped_query_attention(c.X_q, c.X_kv, c.W_q, c.W_k, c.W_v, c.W_o,
                                                  heads, heads),
                    attn::multi_head_attention(c.X_q, c.X_kv, c.W_q, c.W_k, c.W_v, c.W_o,
                                               heads),
                    1e-13, 1e-14, "g = h");
        const Case s = random_case(9, 9, 16, heads, heads, 50 + heads);
        const attn::Mask causal = attn::causal_mask(9);
        check_close(attn::grouped_query_attention(s.X_q, s.X_q, s.W_q, s.W_k, s.W_v, s.W_o,
                                                  heads, heads, causal),
                    attn::multi_head_attention(s.X_q, s.X_q, s.W_q, s.W_k, s.W_v, s.W_o,
                                               heads, causal),
                    1e-13, 1e-14, "g = h, causal");
    }
}

BOOST_AUTO_TEST_CASE(one_kv_head_is_multi_query_attention)
{
    for (std::size_t heads : {1, 2, 4, 8}) {
        const Case c = random_case(5, 11, 32, heads, 1, 10 + heads);
        check_close(attn::grouped_query_attention(c.X_q, c.X_kv, c.W_q, c.W_k, c.W_v, c.W_o,
                                                  heads, 1),
                    naive_grouped(c, heads, 1, everything), 1e-12, 1e-13, "MQA");
    }
}

BOOST_AUTO_TEST_CASE(every_grouping_equals_the_plain_loops_with_and_without_a_mask)
{
    const auto causal = [](std::size_t i, std::size_t j) { return j <= i; };
    for (std::size_t kv_heads : {1, 2, 4, 8}) {
        const Case c = random_case(6, 6, 32, 8, kv_heads, 20 + kv_heads);
        check_close(attn::grouped_query_attention(c.X_q, c.X_kv, c.W_q, c.W_k, c.W_v, c.W_o,
                                                  8, kv_heads),
                    naive_grouped(c, 8, kv_heads, everything), 1e-12, 1e-13, "GQA");
        check_close(attn::grouped_query_attention(c.X_q, c.X_kv, c.W_q, c.W_k, c.W_v, c.W_o,
                                                  8, kv_heads, attn::causal_mask(6)),
                    naive_grouped(c, 8, kv_heads, causal), 1e-12, 1e-13, "GQA causal");
    }
}

BOOST_AUTO_TEST_CASE(gqa_is_multi_head_attention_on_repeated_key_and_value_columns)
{
    for (std::size_t kv_heads : {1, 2, 4}) {
        const Case c = random_case(8, 10, 32, 4, kv_heads, 30 + kv_heads);
        const Matrix W_k = attn::repeat_kv_columns(c.W_k, 4, kv_heads);  // d×d
        const Matrix W_v = attn::repeat_kv_columns(c.W_v, 4, kv_heads);
        BOOST_TEST(W_k.shape(1) == 32u);
        check_close(attn::grouped_query_attention(c.X_q, c.X_kv, c.W_q, c.W_k, c.W_v, c.W_o,
                                                  4, kv_heads),
                    attn::multi_head_attention(c.X_q, c.X_kv, c.W_q, W_k, W_v, c.W_o, 4),
                    1e-13, 1e-14, "repeated");
        // mean pooling the repeated columns gives the shared ones back
        check_close(attn::mean_pool_kv_columns(W_k, 4, kv_heads), c.W_k, 1e-15, 1e-16,
                    "pooled");
    }
}

BOOST_AUTO_TEST_CASE(the_grouping_is_consecutive_query_heads)
{
    BOOST_TEST(attn::kv_head_of(0, 8, 2) == 0u);
    BOOST_TEST(attn::kv_head_of(3, 8, 2) == 0u);
    BOOST_TEST(attn::kv_head_of(4, 8, 2) == 1u);
    BOOST_TEST(attn::kv_head_of(7, 8, 2) == 1u);
    BOOST_TEST(attn::kv_head_of(5, 8, 8) == 5u);
    BOOST_TEST(attn::kv_head_of(5, 8, 1) == 0u);
}

BOOST_AUTO_TEST_CASE(bad_head_counts_and_shapes_are_rejected)
{
    const Case c = random_case(3, 4, 12, 4, 2, 1);
    auto call = [&](const Matrix& W_q, const Matrix& W_k, const Matrix& W_v, std::size_t h,
                    std::size_t g) {
        return attn::grouped_query_attention(c.X_q, c.X_kv, W_q, W_k, W_v, c.W_o, h, g);
    };
    BOOST_CHECK_NO_THROW(call(c.W_q, c.W_k, c.W_v, 4, 2));
    BOOST_CHECK_THROW(call(c.W_q, c.W_k, c.W_v, 4, 0), std::invalid_argument);  // no groups
    BOOST_CHECK_THROW(call(c.W_q, c.W_k, c.W_v, 4, 3), std::invalid_argument);  // 3 ∤ 4
    BOOST_CHECK_THROW(call(c.W_q, c.W_k, c.W_v, 5, 1), std::invalid_argument);  // 5 ∤ 12
    BOOST_CHECK_THROW(call(c.W_q, c.W_k, c.W_v, 0, 1), std::invalid_argument);
    BOOST_CHECK_THROW(call(c.W_q, c.W_k, c.W_v, 4, 8), std::invalid_argument);  // g > h
    BOOST_CHECK_THROW(call(c.W_q, c.W_k, c.W_v, 4, 4), std::invalid_argument);  // W_k width
    BOOST_CHECK_THROW(call(c.W_q, c.W_k, c.W_q, 4, 2), std::invalid_argument);  // W_v width
    BOOST_CHECK_THROW(call(c.W_k, c.W_k, c.W_v, 4, 2), std::invalid_argument);  // W_q width
    const Matrix narrow = xt::zeros<double>({4, 8});
    BOOST_CHECK_THROW(attn::grouped_query_attention(c.X_q, narrow, c.W_q, c.W_k, c.W_v,
                                                    c.W_o, 4, 2),
                      std::invalid_argument);
    const Matrix no_keys = xt::zeros<double>({0, 12});
    BOOST_CHECK_THROW(attn::grouped_query_attention(c.X_q, no_keys, c.W_q, c.W_k, c.W_v,
                                                    c.W_o, 4, 2),
                      std::invalid_argument);
    const attn::Mask wrong = xt::ones<bool>({3, 3});
    BOOST_CHECK_THROW(attn::grouped_query_attention(c.X_q, c.X_kv, c.W_q, c.W_k, c.W_v,
                                                    c.W_o, 4, 2, wrong),
                      std::invalid_argument);
    BOOST_CHECK_THROW(attn::repeat_kv_columns(c.W_k, 4, 3), std::invalid_argument);
    BOOST_CHECK_THROW(attn::mean_pool_kv_columns(c.W_q, 4, 0), std::invalid_argument);
    const Matrix empty_rows = xt::zeros<double>({0, 12});
    BOOST_TEST(attn::grouped_query_attention(empty_rows, c.X_kv, c.W_q, c.W_k, c.W_v, c.W_o,
                                             4, 2).shape(0) == 0u);  // n = 0: empty
}

BOOST_AUTO_TEST_CASE(one_pass_per_group_gives_each_query_s_own_result_bit_for_bit)
{
    std::mt19937_64 rng(3);
    for (std::size_t m : {1, 5, 300}) {
        const auto K = attn::random_normal<float>(m, 16, 1.0, rng);
        const auto V = attn::random_normal<float>(m, 16, 1.0, rng);
        attn::KVCache<float> cache(16, 16);
        for (std::size_t j = 0; j < m; ++j)
            cache.append(xt::xtensor<float, 1>(xt::row(K, j)), xt::xtensor<float, 1>(xt::row(V, j)));
        const auto Q = attn::random_normal<float>(4, 16, 2.0, rng);
        const xt::xtensor<float, 2> O = attn::attend_group(cache, Q);
        for (std::size_t s = 0; s < 4; ++s) {
            const xt::xtensor<float, 1> alone = cache.attend(xt::xtensor<float, 1>(xt::row(Q, s)));
            for (std::size_t c = 0; c < 16; ++c) BOOST_TEST(O(s, c) == alone(c));
        }
    }
    attn::KVCache<float> empty(16, 16);
    const xt::xtensor<float, 2> Q = xt::ones<float>({2, 16}), wrong = xt::ones<float>({2, 8});
    BOOST_CHECK_THROW(attn::attend_group(empty, Q), std::invalid_argument);
    empty.append(xt::xtensor<float, 1>(xt::row(Q, 0)), xt::xtensor<float, 1>(xt::row(Q, 0)));
    BOOST_CHECK_THROW(attn::attend_group(empty, wrong), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(tied_columns_stay_identical_through_training_and_compact_to_gqa)
{
    const attn::ReversalTask task{4};
    attn::TinyModelShape shape = attn::causal_model_shape(task);
    shape.heads = 4;
    for (std::size_t kv_heads : {1, 2}) {
        std::mt19937_64 rng(11);
        attn::TinyModel<double> model = attn::init_tiny_model<double>(shape, rng);
        attn::share_keys_and_values(model, kv_heads);
        attn::TrainingConfig config;
        config.steps = 15;
        config.batch = 4;
        attn::train_causal_reversal(model, task, config, rng,
                                    [&](attn::TinyModel<double>& grad) {
                                        attn::sum_shared_gradients(grad, kv_heads);
                                    });
        const std::size_t d_k = shape.d_model / shape.heads;
        for (const auto& layer : model.layers)
            for (const Matrix* W : {&layer.W_k, &layer.W_v})
                for (std::size_t t = 0; t < shape.heads; ++t) {
                    const std::size_t first = attn::kv_head_of(t, shape.heads, kv_heads) *
                                              (shape.heads / kv_heads);
                    for (std::size_t r = 0; r < shape.d_model; ++r)
                        for (std::size_t c = 0; c < d_k; ++c)
                            BOOST_TEST((*W)(r, t * d_k + c) == (*W)(r, first * d_k + c));
                }
        const auto sequence = attn::reversal_sequence(task, rng);
        const std::vector<std::size_t> inputs(sequence.begin(), sequence.begin() + 8);
        const auto grouped = attn::group_model(model, kv_heads);
        BOOST_TEST(grouped.W_k[0].shape(1) == kv_heads * d_k);
        check_close(attn::grouped_model_logits(grouped, inputs),
                    attn::causal_model_forward(model, inputs).logits, 1e-12, 1e-12, "compact");
    }
}

BOOST_AUTO_TEST_CASE(the_cache_of_g_heads_holds_2_g_d_k_numbers_per_token_and_layer)
{
    const std::size_t layers = 3, d_k = 8, m = 10;
    for (std::size_t g : {1, 2, 4}) {
        std::size_t bytes = 0;
        for (std::size_t l = 0; l < layers * g; ++l) {
            attn::KVCache<float> cache(d_k, d_k);
            for (std::size_t t = 0; t < m; ++t)
                cache.append(xt::ones<float>({d_k}), xt::ones<float>({d_k}));
            bytes += cache.bytes();
        }
        BOOST_TEST(bytes == 2 * layers * g * d_k * sizeof(float) * m);
    }
}
