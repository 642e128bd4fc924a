// Helpers shared by the chapters' Boost.Test suites: independent reference loops,
// comparisons that report the worst element, and golden data files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <xtensor/xtensor.hpp>

#include "attn/machine.hpp"
#include "attn/random.hpp"

namespace test_support {

/// Queries, keys and values of one test case.
struct Inputs {
    xt::xtensor<double, 2> Q, K, V;
};

/// Random Q (n×d_k), K (m×d_k) and V (m×d_v): N(0, scale²) entries in Q and K, N(0, 1) in V.
inline Inputs random_inputs(std::size_t n, std::size_t m, std::size_t d_k, std::size_t d_v, std::uint64_t seed,
                            double scale = 1.0)
{
    std::mt19937_64 rng(seed);
    xt::xtensor<double, 2> Q = attn::random_normal<double>(n, d_k, scale, rng);
    xt::xtensor<double, 2> K = attn::random_normal<double>(m, d_k, scale, rng);
    xt::xtensor<double, 2> V = attn::random_normal<double>(m, d_v, 1.0, rng);
    return {Q, K, V};
}

/// Self-attention inputs: n queries, and n keys and values, as random_inputs(n, n, d_k, d_v, seed).
inline Inputs random_inputs(std::size_t n, std::size_t d_k, std::size_t d_v, std::uint64_t seed)
{
    return random_inputs(n, n, d_k, d_v, seed);
}

/// softmax(Q·Kᵀ/√d_k)·V by three plain loops in long double, written independently of the library.
/// `allowed(i, j)` says whether query i may attend key j; a row with nothing allowed gives zeros.
template <class T, class Allowed>
xt::xtensor<T, 2> naive_attention(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K,
                                  const xt::xtensor<T, 2>& V, Allowed allowed)
{
    const std::size_t n = Q.shape(0), m = K.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    xt::xtensor<T, 2> O = xt::zeros<T>({n, d_v});
    for (std::size_t i = 0; i < n; ++i) {
        std::vector<long double> s(m, -std::numeric_limits<long double>::infinity());
        long double s_max = -std::numeric_limits<long double>::infinity();
        for (std::size_t j = 0; j < m; ++j) {
            if (!allowed(i, j)) continue;
            long double dot = 0;
            for (std::size_t c = 0; c < d_k; ++c) dot += (long double)Q(i, c) * (long double)K(j, c);
            s[j] = dot / std::sqrt((long double)d_k);
            s_max = std::max(s_max, s[j]);
        }
        if (s_max == -std::numeric_limits<long double>::infinity()) continue;
        long double total = 0;
        for (std::size_t j = 0; j < m; ++j) total += allowed(i, j) ? std::exp(s[j] - s_max) : 0.0L;
        for (std::size_t c = 0; c < d_v; ++c) {
            long double acc = 0;
            for (std::size_t j = 0; j < m; ++j)
                if (allowed(i, j)) acc += std::exp(s[j] - s_max) / total * (long double)V(j, c);
            O(i, c) = static_cast<T>(acc);
        }
    }
    return O;
}

template <class T>
xt::xtensor<T, 2> naive_attention(const xt::xtensor<T, 2>& Q, const xt::xtensor<T, 2>& K, const xt::xtensor<T, 2>& V)
{
    return naive_attention(Q, K, V, [](std::size_t, std::size_t) { return true; });
}

/// Check that `actual` equals `expected` element by element within abs_tol + rel_tol·|expected|;
/// on failure report the worst element with its indices.
template <class A, class B>
void check_close(const A& actual, const B& expected, double rel_tol, double abs_tol, const std::string& what = "")
{
    BOOST_REQUIRE_MESSAGE(actual.shape() == expected.shape(), what << ": shapes differ");
    double worst = 0;
    std::size_t worst_at = 0;
    bool ok = true;
    for (std::size_t k = 0; k < expected.size(); ++k) {
        const double a = double(actual.data()[k]), e = double(expected.data()[k]);
        const double excess = std::abs(a - e) - (abs_tol + rel_tol * std::abs(e));
        if (!(excess <= 0) && (ok || excess > worst)) ok = false, worst = excess, worst_at = k;
    }
    if (!ok) {
        const std::size_t cols = expected.dimension() == 2 ? expected.shape(1) : expected.size();
        BOOST_ERROR(what << ": worst element (" << worst_at / cols << ", " << worst_at % cols << ") is "
                         << double(actual.data()[worst_at]) << ", expected " << double(expected.data()[worst_at]));
    } else {
        BOOST_TEST(ok);
    }
}

/// True if every element is finite.
template <class E>
bool all_finite(const E& x)
{
    return std::all_of(x.begin(), x.end(), [](auto v) { return std::isfinite(double(v)); });
}

/// A matrix from a golden data file: a line "rows cols", then rows lines of cols numbers.
/// Lines starting with '#' are comments. Path is relative to tests/golden/.
template <class T>
xt::xtensor<T, 2> read_golden(const std::string& name)
{
    const std::string path = std::string(TESTS_DIR) + "/golden/" + name;
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open golden file " + path);
    std::string line;
    std::stringstream body;
    while (std::getline(in, line))
        if (!line.empty() && line[0] != '#') body << line << '\n';
    std::size_t rows = 0, cols = 0;
    body >> rows >> cols;
    xt::xtensor<T, 2> x = xt::zeros<T>({rows, cols});
    for (std::size_t k = 0; k < rows * cols; ++k) {
        long double v;
        if (!(body >> v)) throw std::runtime_error("golden file " + path + " is short");
        x.data()[k] = static_cast<T>(v);
    }
    return x;
}

}  // namespace test_support

/// Every test runs on the BLAS core the chapters' programs run on (see the appendix
/// "Instruments"): the test program starts again once if OpenBLAS chose a generic core.
struct SelectBlasCore {
    SelectBlasCore() { attn::select_blas_core(); }
};
BOOST_TEST_GLOBAL_FIXTURE(SelectBlasCore);
