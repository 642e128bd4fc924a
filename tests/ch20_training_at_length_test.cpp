// Chapter 20: the forward pass that keeps the log-sum-exp, the tiled (FlashAttention) and
// chunked (Rabe and Staats) backward passes, against chapter 4, naive loops and finite differences.
#define BOOST_TEST_MODULE ch20_training_at_length
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/flash_attention.hpp"
#include "attn/flash_backward.hpp"
#include "attn/masked_attention.hpp"
#include "sparsity_support.hpp"
#include "test_support.hpp"

using test_support::as_type;
using test_support::check_close;
using test_support::naive_attention;
using test_support::random_inputs;

namespace {

using Matrix = xt::xtensor<double, 2>;
using Gradients = attn::AttentionGradients<double>;

/// Sizes and tiles that leave ragged ends: (n, m, d_k, d_v, B_r, B_c).
struct Shape {
    std::size_t n, m, d_k, d_v, query_tile, key_tile;
};
const std::vector<Shape> ragged_shapes = {
    {1, 1, 1, 1, 1, 1},     {5, 7, 4, 3, 2, 3},      {37, 37, 8, 5, 8, 8},
    {100, 100, 16, 12, 64, 64}, {203, 157, 24, 20, 32, 48}, {64, 64, 8, 8, 64, 64},
    {70, 70, 6, 9, 1000, 13}, {50, 50, 3, 3, 7, 1}};

attn::AttentionTiles tiles_of(const Shape& s) { return {s.query_tile, s.key_tile}; }

std::string describe(const Shape& s, bool causal)
{
    return "n = " + std::to_string(s.n) + ", m = " + std::to_string(s.m) + ", tiles " +
           std::to_string(s.query_tile) + "×" + std::to_string(s.key_tile) + (causal ? ", causal" : "");
}

/// Chapter 4's dense backward on chapter 1's or chapter 2's weights.
Gradients dense_backward(const Matrix& Q, const Matrix& K, const Matrix& V, const Matrix& dO, bool causal)
{
    const Matrix P = causal ? attn::attention_weights(Q, K, attn::causal_mask(Q.shape(0)))
                            : attn::attention_weights(Q, K);
    return attn::attention_backward(Q, K, V, P, dO);
}

/// The tiled forward and backward passes, one after the other.
template <class T>
attn::AttentionGradients<T> tiled_backward(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                                           const xt::xtensor<T, 2>& V, const xt::xtensor<T, 2>& dO, bool causal,
                                           const attn::AttentionTiles& tiles = {})
{
    const auto forward = attn::flash_attention_lse(Q, K, V, causal, tiles);
    return attn::flash_attention_backward(Q, K, V, forward.O, dO, forward.lse, causal, tiles);
}

bool allowed_everything(std::size_t, std::size_t) { return true; }
bool allowed_causal(std::size_t i, std::size_t j) { return j <= i; }

/// log Σ_j exp(s_ij) over the allowed keys, by a plain loop in long double.
xt::xtensor<double, 1> naive_lse(const Matrix& Q, const Matrix& K, bool causal)
{
    const std::size_t n = Q.shape(0), m = K.shape(0), d_k = Q.shape(1);
    xt::xtensor<double, 1> lse = xt::zeros<double>({n});
    for (std::size_t i = 0; i < n; ++i) {
        long double total = 0;
        for (std::size_t j = 0; j < m && (!causal || j <= i); ++j) {
            long double dot = 0;
            for (std::size_t c = 0; c < d_k; ++c) dot += (long double)Q(i, c) * K(j, c);
            total += std::exp(dot / std::sqrt((long double)d_k));
        }
        lse(i) = double(std::log(total));
    }
    return lse;
}

/// The backward pass of attention by plain loops in long double, written from the formulas:
/// P, then dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)), dQ = s dS K, dK = s dSᵀ Q.
Gradients naive_backward(const Matrix& Q, const Matrix& K, const Matrix& V, const Matrix& dO, bool causal)
{
    const std::size_t n = Q.shape(0), m = K.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    const long double s = 1.0L / std::sqrt((long double)d_k);
    std::vector<long double> P(n * m, 0.0L), dS(n * m, 0.0L);
    for (std::size_t i = 0; i < n; ++i) {
        long double total = 0;
        for (std::size_t j = 0; j < m && (!causal || j <= i); ++j) {
            long double dot = 0;
            for (std::size_t c = 0; c < d_k; ++c) dot += (long double)Q(i, c) * K(j, c);
            total += P[i * m + j] = std::exp(dot * s);
        }
        long double row = 0;
        std::vector<long double> dP(m, 0.0L);
        for (std::size_t j = 0; j < m; ++j) {
            P[i * m + j] /= total;
            for (std::size_t c = 0; c < d_v; ++c) dP[j] += (long double)dO(i, c) * V(j, c);
            row += P[i * m + j] * dP[j];
        }
        for (std::size_t j = 0; j < m; ++j) dS[i * m + j] = P[i * m + j] * (dP[j] - row);
    }
    Gradients g{xt::zeros<double>({n, d_k}), xt::zeros<double>({m, d_k}), xt::zeros<double>({m, d_v})};
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < m; ++j) {
            for (std::size_t c = 0; c < d_v; ++c) g.dV(j, c) += double(P[i * m + j] * dO(i, c));
            for (std::size_t c = 0; c < d_k; ++c) {
                g.dQ(i, c) += double(s * dS[i * m + j] * K(j, c));
                g.dK(j, c) += double(s * dS[i * m + j] * Q(i, c));
            }
        }
    return g;
}

void check_gradients_close(const Gradients& actual, const Gradients& expected, double tol, const std::string& what)
{
    check_close(actual.dQ, expected.dQ, 0.0, tol, what + ": dQ");
    check_close(actual.dK, expected.dK, 0.0, tol, what + ": dK");
    check_close(actual.dV, expected.dV, 0.0, tol, what + ": dV");
}

/// Random inputs with a random output gradient dO (n×d_v).
struct Case {
    Matrix Q, K, V, dO;
};

Case random_case(std::size_t n, std::size_t m, std::size_t d_k, std::size_t d_v, std::uint64_t seed)
{
    const auto x = random_inputs(n, m, d_k, d_v, seed);
    std::mt19937_64 rng(seed + 1);
    return {x.Q, x.K, x.V, attn::random_normal<double>(n, d_v, 1.0, rng)};
}

bool row_has_nan(const Matrix& X, std::size_t i)
{
    for (std::size_t c = 0; c < X.shape(1); ++c)
        if (!std::isfinite(X(i, c))) return true;
    return false;
}

/// Rows of X other than `skip`, equal to those of Y within tol.
bool other_rows_equal(const Matrix& X, const Matrix& Y, std::size_t skip, double tol)
{
    for (std::size_t i = 0; i < X.shape(0); ++i)
        for (std::size_t c = 0; c < X.shape(1) && i != skip; ++c)
            if (!(std::abs(X(i, c) - Y(i, c)) <= tol)) return false;
    return true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_forward_pass_equals_a_naive_loop_and_keeps_the_log_sum_exp)
{
    for (const Shape& s : ragged_shapes)
        for (bool causal : {false, true}) {
            if (causal && s.n != s.m) continue;
            const auto x = random_inputs(s.n, s.m, s.d_k, s.d_v, 11);
            const auto forward = attn::flash_attention_lse(x.Q, x.K, x.V, causal, tiles_of(s));
            const std::string what = describe(s, causal);
            check_close(forward.O, causal ? naive_attention(x.Q, x.K, x.V, allowed_causal)
                                          : naive_attention(x.Q, x.K, x.V, allowed_everything),
                        1e-12, 1e-12, what + ": O");
            check_close(forward.lse, naive_lse(x.Q, x.K, causal), 1e-12, 1e-12, what + ": lse");
        }
}

BOOST_AUTO_TEST_CASE(the_forward_pass_equals_chapter_13s_flash_attention)
{
    const auto x = random_inputs(131, 131, 16, 8, 12);
    for (bool causal : {false, true})
        check_close(attn::flash_attention_lse(x.Q, x.K, x.V, causal).O, attn::flash_attention(x.Q, x.K, x.V, causal),
                    1e-12, 1e-12, causal ? "causal" : "full");
}

BOOST_AUTO_TEST_CASE(the_tiled_backward_equals_the_dense_backward_to_1e_10_at_ragged_sizes)
{
    for (const Shape& s : ragged_shapes)
        for (bool causal : {false, true}) {
            if (causal && s.n != s.m) continue;
            const Case c = random_case(s.n, s.m, s.d_k, s.d_v, 21);
            check_gradients_close(tiled_backward(c.Q, c.K, c.V, c.dO, causal, tiles_of(s)),
                                  dense_backward(c.Q, c.K, c.V, c.dO, causal), 1e-10, describe(s, causal));
        }
}

BOOST_AUTO_TEST_CASE(the_tiled_backward_equals_a_naive_loop)
{
    for (bool causal : {false, true}) {
        const std::size_t n = 45, m = causal ? 45 : 29;
        const Case c = random_case(n, m, 7, 5, 22);
        check_gradients_close(tiled_backward(c.Q, c.K, c.V, c.dO, causal, {16, 6}),
                              naive_backward(c.Q, c.K, c.V, c.dO, causal), 1e-12, causal ? "causal" : "full");
    }
}

BOOST_AUTO_TEST_CASE(the_tiles_of_the_backward_pass_need_not_match_the_forward_pass)
{
    const Case c = random_case(77, 77, 8, 8, 23);
    for (bool causal : {false, true}) {
        const auto forward = attn::flash_attention_lse(c.Q, c.K, c.V, causal, {64, 64});
        check_gradients_close(
            attn::flash_attention_backward(c.Q, c.K, c.V, forward.O, c.dO, forward.lse, causal, {5, 11}),
            dense_backward(c.Q, c.K, c.V, c.dO, causal), 1e-10, causal ? "causal" : "full");
    }
}

BOOST_AUTO_TEST_CASE(the_chunked_passes_equal_the_dense_ones)
{
    for (const Shape& s : ragged_shapes)
        for (bool causal : {false, true}) {
            if (causal && s.n != s.m) continue;
            const Case c = random_case(s.n, s.m, s.d_k, s.d_v, 24);
            for (std::size_t chunk : {std::size_t(1), s.query_tile, std::size_t(64)}) {
                const std::string what = describe(s, causal) + ", chunk " + std::to_string(chunk);
                check_gradients_close(attn::chunked_attention_backward(c.Q, c.K, c.V, c.dO, causal, chunk),
                                      dense_backward(c.Q, c.K, c.V, c.dO, causal), 1e-10, what);
                check_close(attn::chunked_attention(c.Q, c.K, c.V, causal, chunk),
                            causal ? naive_attention(c.Q, c.K, c.V, allowed_causal)
                                   : naive_attention(c.Q, c.K, c.V, allowed_everything),
                            1e-12, 1e-12, what + ": O");
            }
        }
}

BOOST_AUTO_TEST_CASE(the_gradients_agree_with_finite_differences)
{
    for (bool causal : {false, true}) {
        const std::size_t n = 10, m = causal ? 10 : 13;
        Case c = random_case(n, m, 5, 4, 25);
        const attn::AttentionTiles tiles{3, 4};
        auto loss = [&] {
            const Matrix O = attn::flash_attention_lse(c.Q, c.K, c.V, causal, tiles).O;
            return double(xt::sum(c.dO * O)());  // dL/dO = dO
        };
        const Gradients g = tiled_backward(c.Q, c.K, c.V, c.dO, causal, tiles);
        BOOST_TEST(attn::relative_error(g.dQ, attn::numerical_gradient(c.Q, loss)) < 1e-7);
        BOOST_TEST(attn::relative_error(g.dK, attn::numerical_gradient(c.K, loss)) < 1e-7);
        BOOST_TEST(attn::relative_error(g.dV, attn::numerical_gradient(c.V, loss)) < 1e-7);
    }
}

BOOST_AUTO_TEST_CASE(the_row_sums_from_the_output_equal_the_rowsum_of_P_times_dP)
{
    const Case c = random_case(23, 31, 6, 5, 26);
    const Matrix P = attn::attention_weights(c.Q, c.K);
    const Matrix O = attn::detail::matmul(P, c.V);
    const Matrix dP = attn::detail::matmul(c.dO, attn::detail::transposed(c.V));
    const xt::xtensor<double, 1> expected = xt::sum(P * dP, {1});
    check_close(attn::softmax_backward_offsets(O, c.dO), expected, 1e-12, 1e-12, "δ");
    BOOST_CHECK_THROW(attn::softmax_backward_offsets(O, Matrix(xt::zeros<double>({23, 4}))), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(float_gradients_are_close_to_double_ones)
{
    const Case c = random_case(150, 150, 32, 32, 27);
    for (bool causal : {false, true}) {
        const auto g = tiled_backward(as_type<float>(c.Q), as_type<float>(c.K), as_type<float>(c.V),
                                      as_type<float>(c.dO), causal);
        const Gradients d = dense_backward(c.Q, c.K, c.V, c.dO, causal);
        check_close(g.dQ, d.dQ, 1e-4, 1e-5, "dQ");
        check_close(g.dK, d.dK, 1e-4, 1e-5, "dK");
        check_close(g.dV, d.dV, 1e-4, 1e-5, "dV");
    }
}

BOOST_AUTO_TEST_CASE(future_keys_do_not_change_the_past_rows_of_O_and_dQ)
{
    const std::size_t n = 90, t = 41;  // t falls inside a tile of 16
    const Case c = random_case(n, n, 8, 6, 28);
    Case later = c;
    std::mt19937_64 rng(29);
    for (std::size_t j = t; j < n; ++j)
        for (std::size_t col = 0; col < 8; ++col) later.K(j, col) = attn::random_normal<double>(1, 1, 3.0, rng)(0, 0);
    xt::view(later.V, xt::range(t, n), xt::all()) = 7.0;
    const attn::AttentionTiles tiles{16, 16};
    const auto f = attn::flash_attention_lse(c.Q, c.K, c.V, true, tiles);
    const auto f_later = attn::flash_attention_lse(later.Q, later.K, later.V, true, tiles);
    const auto g = attn::flash_attention_backward(c.Q, c.K, c.V, f.O, c.dO, f.lse, true, tiles);
    const auto g_later =
        attn::flash_attention_backward(later.Q, later.K, later.V, f_later.O, c.dO, f_later.lse, true, tiles);
    const Matrix O_past = xt::view(f.O, xt::range(0, t), xt::all());
    const Matrix O_later_past = xt::view(f_later.O, xt::range(0, t), xt::all());
    const Matrix dQ_past = xt::view(g.dQ, xt::range(0, t), xt::all());
    const Matrix dQ_later_past = xt::view(g_later.dQ, xt::range(0, t), xt::all());
    BOOST_TEST((O_past == O_later_past));    // bit for bit
    BOOST_TEST((dQ_past == dQ_later_past));  // bit for bit
    BOOST_TEST(!(g.dQ == g_later.dQ));       // the later rows did change
}

BOOST_AUTO_TEST_CASE(the_tiled_passes_never_hold_an_n_by_n_matrix)
{
    test_support::check_never_holds_an_n_by_n_matrix(
        [](const auto& Q, const auto& K, const auto& V) { return attn::flash_attention_lse(Q, K, V).O; }, 30);
    test_support::check_never_holds_an_n_by_n_matrix(
        [](const auto& Q, const auto& K, const auto& V) { return tiled_backward(Q, K, V, V, false).dQ; }, 31);
    test_support::check_never_holds_an_n_by_n_matrix(
        [](const auto& Q, const auto& K, const auto& V) { return tiled_backward(Q, K, V, V, true).dK; }, 32);
}

BOOST_AUTO_TEST_CASE(bad_arguments_throw_invalid_argument)
{
    const Case c = random_case(6, 6, 4, 3, 33);
    const auto f = attn::flash_attention_lse(c.Q, c.K, c.V);
    const Matrix wide = xt::zeros<double>({6, 5}), short_K = xt::zeros<double>({5, 4});
    const Matrix empty_K = xt::zeros<double>({0, 4}), empty_V = xt::zeros<double>({0, 3});
    const Matrix Q0 = xt::zeros<double>({6, 0}), K0 = xt::zeros<double>({6, 0});
    const xt::xtensor<double, 1> short_lse = xt::zeros<double>({5});
    // shape mismatches, m = 0, d_k = 0
    BOOST_CHECK_THROW(attn::flash_attention_lse(c.Q, wide, c.V), std::invalid_argument);
    BOOST_CHECK_THROW(attn::flash_attention_lse(c.Q, short_K, c.V), std::invalid_argument);
    BOOST_CHECK_THROW(attn::flash_attention_lse(c.Q, empty_K, empty_V), std::invalid_argument);
    BOOST_CHECK_THROW(attn::flash_attention_lse(Q0, K0, c.V), std::invalid_argument);
    BOOST_CHECK_THROW(attn::flash_attention_backward(Q0, K0, c.V, f.O, c.dO, f.lse), std::invalid_argument);
    BOOST_CHECK_THROW(attn::flash_attention_backward(c.Q, short_K, c.V, f.O, c.dO, f.lse), std::invalid_argument);
    // the backward pass's own inputs: O, dO and lse of the wrong size
    BOOST_CHECK_THROW(attn::flash_attention_backward(c.Q, c.K, c.V, f.O, wide, f.lse), std::invalid_argument);
    BOOST_CHECK_THROW(attn::flash_attention_backward(c.Q, c.K, c.V, wide, c.dO, f.lse), std::invalid_argument);
    BOOST_CHECK_THROW(attn::flash_attention_backward(c.Q, c.K, c.V, f.O, c.dO, short_lse), std::invalid_argument);
    // tiles of 0, and causal attention with n ≠ m
    BOOST_CHECK_THROW(attn::flash_attention_lse(c.Q, c.K, c.V, false, {0, 4}), std::invalid_argument);
    BOOST_CHECK_THROW(attn::flash_attention_backward(c.Q, c.K, c.V, f.O, c.dO, f.lse, false, {4, 0}),
                      std::invalid_argument);
    const Case rect = random_case(6, 8, 4, 3, 34);
    BOOST_CHECK_THROW(attn::flash_attention_lse(rect.Q, rect.K, rect.V, true), std::invalid_argument);
    BOOST_CHECK_THROW(attn::chunked_attention(rect.Q, rect.K, rect.V, true), std::invalid_argument);
    BOOST_CHECK_THROW(attn::chunked_attention(c.Q, c.K, c.V, false, 0), std::invalid_argument);
    BOOST_CHECK_THROW(attn::chunked_attention_backward(c.Q, c.K, c.V, wide, false), std::invalid_argument);
    BOOST_CHECK_THROW(attn::chunked_attention_backward(c.Q, c.K, c.V, c.dO, false, 0), std::invalid_argument);
    try {
        attn::flash_attention_backward(c.Q, c.K, c.V, f.O, c.dO, short_lse);
    } catch (const std::invalid_argument& error) {
        BOOST_TEST(std::string(error.what()).find("lse has 5 entries") != std::string::npos, error.what());
    }
}

BOOST_AUTO_TEST_CASE(a_nan_in_a_row_of_Q_or_dO_stays_in_that_row)
{
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const std::size_t n = 53, i = 17;
    const Case c = random_case(n, n, 8, 6, 35);
    const attn::AttentionTiles tiles{16, 16};
    for (bool causal : {false, true}) {
        BOOST_TEST_CONTEXT((causal ? "causal" : "full"))
        {
            const auto f = attn::flash_attention_lse(c.Q, c.K, c.V, causal, tiles);
            const auto g = attn::flash_attention_backward(c.Q, c.K, c.V, f.O, c.dO, f.lse, causal, tiles);
            Matrix Q_nan = c.Q;
            Q_nan(i, 2) = nan;
            const auto f_nan = attn::flash_attention_lse(Q_nan, c.K, c.V, causal, tiles);
            BOOST_TEST(row_has_nan(f_nan.O, i));
            BOOST_TEST(std::isnan(f_nan.lse(i)));
            BOOST_TEST(other_rows_equal(f_nan.O, f.O, i, 1e-15));
            const auto g_nan =
                attn::flash_attention_backward(Q_nan, c.K, c.V, f_nan.O, c.dO, f_nan.lse, causal, tiles);
            BOOST_TEST(row_has_nan(g_nan.dQ, i));
            BOOST_TEST(other_rows_equal(g_nan.dQ, g.dQ, i, 1e-12));
            Matrix dO_nan = c.dO;
            dO_nan(i, 4) = nan;
            const auto g_dO = attn::flash_attention_backward(c.Q, c.K, c.V, f.O, dO_nan, f.lse, causal, tiles);
            BOOST_TEST(row_has_nan(g_dO.dQ, i));
            BOOST_TEST(other_rows_equal(g_dO.dQ, g.dQ, i, 1e-12));
        }
    }
}

BOOST_AUTO_TEST_CASE(a_nan_in_a_causal_key_reaches_every_row_that_sees_it_and_no_earlier_tile)
{
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const std::size_t n = 64, j = 37;  // key 37 lies in the query tile [32, 48)
    const Case c = random_case(n, n, 8, 6, 40);
    const attn::AttentionTiles tiles{16, 16};
    for (char operand : {'K', 'V'}) {
        BOOST_TEST_CONTEXT(operand)
        {
            Case poisoned = c;
            (operand == 'K' ? poisoned.K : poisoned.V)(j, 1) = nan;
            const auto f = attn::flash_attention_lse(poisoned.Q, poisoned.K, poisoned.V, true, tiles);
            const auto g =
                attn::flash_attention_backward(poisoned.Q, poisoned.K, poisoned.V, f.O, c.dO, f.lse, true, tiles);
            for (std::size_t i = j; i < n; ++i) BOOST_TEST(row_has_nan(f.O, i));  // never fewer
            for (std::size_t i = 0; i < 32; ++i) {  // the tiles before key j's never see it
                BOOST_TEST(!row_has_nan(f.O, i));
                BOOST_TEST(!row_has_nan(g.dQ, i));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(empty_and_narrow_shapes_keep_the_contract)
{
    const Case none = random_case(0, 4, 5, 3, 36);  // n = 0: empty results, zero dK and dV
    const auto f0 = attn::flash_attention_lse(none.Q, none.K, none.V);
    BOOST_TEST((f0.O.shape(0) == 0u && f0.O.shape(1) == 3u && f0.lse.size() == 0u));
    const auto g0 = attn::flash_attention_backward(none.Q, none.K, none.V, f0.O, none.dO, f0.lse);
    BOOST_TEST((g0.dQ.shape(0) == 0u && g0.dK.shape(0) == 4u && g0.dV.shape(0) == 4u));
    BOOST_TEST(xt::amax(xt::abs(g0.dK))() == 0.0);
    for (bool causal : {false, true}) {
        const Case narrow = random_case(5, 5, 4, 0, 37);  // d_v = 0: n×0 outputs, zero gradients
        const auto f = attn::flash_attention_lse(narrow.Q, narrow.K, narrow.V, causal);
        BOOST_TEST((f.O.shape(0) == 5u && f.O.shape(1) == 0u));
        check_close(f.lse, naive_lse(narrow.Q, narrow.K, causal), 1e-12, 1e-12, "lse with d_v = 0");
        const auto g = attn::flash_attention_backward(narrow.Q, narrow.K, narrow.V, f.O, narrow.dO, f.lse, causal);
        BOOST_TEST((g.dV.shape(0) == 5u && g.dV.shape(1) == 0u));
        BOOST_TEST(xt::amax(xt::abs(g.dQ))() == 0.0);
        BOOST_TEST(xt::amax(xt::abs(g.dK))() == 0.0);
    }
}

BOOST_AUTO_TEST_CASE(huge_tiles_are_clamped_to_the_problem)
{
    const std::size_t huge = std::numeric_limits<std::size_t>::max();
    const Case c = random_case(19, 19, 4, 4, 38);
    for (bool causal : {false, true})
        check_gradients_close(tiled_backward(c.Q, c.K, c.V, c.dO, causal, {huge, huge}),
                              dense_backward(c.Q, c.K, c.V, c.dO, causal), 1e-10, causal ? "causal" : "full");
    BOOST_TEST(attn::chunked_attention(c.Q, c.K, c.V, false, huge).shape(0) == 19u);
}

BOOST_AUTO_TEST_CASE(logits_of_plus_minus_ten_thousand_give_no_nan)
{
    Case c = random_case(40, 40, 8, 8, 39);
    c.Q *= 3e3;  // scores of order ±10⁴: the softmax is one-hot to the last digit
    for (bool causal : {false, true}) {
        const auto f = attn::flash_attention_lse(c.Q, c.K, c.V, causal, {16, 16});
        const auto g = attn::flash_attention_backward(c.Q, c.K, c.V, f.O, c.dO, f.lse, causal, {16, 16});
        BOOST_TEST(test_support::all_finite(f.O));
        BOOST_TEST(test_support::all_finite(f.lse));
        BOOST_TEST(test_support::all_finite(g.dQ));
        BOOST_TEST(test_support::all_finite(g.dK));
        BOOST_TEST(test_support::all_finite(g.dV));
        check_gradients_close(g, dense_backward(c.Q, c.K, c.V, c.dO, causal), 1e-8, "saturated");
    }
}
