// Helpers shared by the chapters' Boost.Test suites: independent reference loops,
// comparisons that report the worst element, and golden data files.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <limits>
#include <random>
#include <set>
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

/// `x` with its entries converted to T (the float twin of a double test case).
template <class T>
xt::xtensor<T, 2> as_type(const xt::xtensor<double, 2>& x)
{
    return xt::xtensor<T, 2>(x);
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
            // A NaN score makes the maximum NaN (std::max would skip it).
            s_max = std::isnan(s[j]) || std::isnan(s_max) ? s[j] + s_max : std::max(s_max, s[j]);
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

/// A fresh, empty directory `name` under the system's temporary folder.
inline std::filesystem::path scratch_dir(const std::string& name)
{
    const auto dir = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

// ---------------------------------------------------------------- the kernel contract, fuzzed

/// Seconds the environment variable FUZZ_SECONDS asks the fuzz tests to run for (0 if unset).
inline double fuzz_seconds()
{
    const char* text = std::getenv("FUZZ_SECONDS");
    if (!text) return 0;
    char* end = nullptr;
    const double seconds = std::strtod(text, &end);
    return end != text && seconds > 0 ? seconds : 0;
}

/// Run `run_case(rng, k)` for k = 0, 1, ...: `cases` times, and then on until
/// FUZZ_SECONDS seconds have passed if it is set. One generator seeded with `seed`
/// draws every case, so a failure repeats. Returns the number of cases run.
template <class RunCase>
std::size_t fuzz_cases(std::size_t cases, std::uint64_t seed, RunCase run_case)
{
    std::mt19937_64 rng(seed);
    const double seconds = fuzz_seconds();
    const auto start = std::chrono::steady_clock::now();
    const auto elapsed = [&] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    std::size_t k = 0;
    for (; k < cases || elapsed() < seconds; ++k) run_case(rng, k);
    return k;
}

/// Whether every entry of row `i` of `O` is finite.
inline bool row_finite(const xt::xtensor<double, 2>& O, std::size_t i)
{
    for (std::size_t c = 0; c < O.shape(1); ++c)
        if (!std::isfinite(O(i, c))) return false;
    return true;
}

/// Whether every entry of column `c` of `O` is finite.
inline bool column_finite(const xt::xtensor<double, 2>& O, std::size_t c)
{
    for (std::size_t i = 0; i < O.shape(0); ++i)
        if (!std::isfinite(O(i, c))) return false;
    return true;
}

/// Draws fuzz cases: at least `minimum`, then on until FUZZ_SECONDS seconds have passed.
class FuzzBudget {
public:
    explicit FuzzBudget(std::size_t minimum) : minimum_(minimum), seconds_(fuzz_seconds()) {}
    bool another()
    {
        ++drawn_;
        if (drawn_ <= minimum_) return true;
        const std::chrono::duration<double> spent = std::chrono::steady_clock::now() - start_;
        return spent.count() < seconds_;
    }
    std::size_t drawn() const { return drawn_; }

private:
    std::size_t minimum_, drawn_ = 0;
    double seconds_ = 0;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

/// A size for a fuzz case: 1, 2, a prime up to 37, or uniform in 1..most.
inline std::size_t draw_size(std::mt19937_64& rng, std::size_t most)
{
    static const std::size_t primes[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};
    switch (rng() % 4) {
    case 0: return 1 + rng() % 2;
    case 1: return std::min(most, primes[rng() % 12]);
    default: return 1 + rng() % most;
    }
}

/// An option value at or beyond its edges for a problem of size n: 0, 1, 2, n − 1, n,
/// n + 1, 2n, SIZE_MAX, SIZE_MAX / 2, SIZE_MAX / n + 1 (which makes n·value overflow),
/// or uniform in 0..n + 1.
inline std::size_t draw_option(std::mt19937_64& rng, std::size_t n)
{
    const std::size_t most = std::numeric_limits<std::size_t>::max();
    switch (rng() % 12) {
    case 0: return 0;
    case 1: return 1;
    case 2: return 2;
    case 3: return n > 0 ? n - 1 : 0;
    case 4: return n;
    case 5: return n + 1;
    case 6: return 2 * n;
    case 7: return most;
    case 8: return most / 2;
    case 9: return most / std::max<std::size_t>(n, 1) + 1;
    default: return rng() % (n + 2);
    }
}

/// One poisoned entry of Q, K or V: `operand` is 0 when there is none.
struct Poison {
    char operand = 0;  ///< 'Q', 'K', 'V' or 0
    std::size_t row = 0, col = 0;
    double value = 0;
};

/// With probability 1/2, poison one entry of x: a NaN in Q or K (an infinite score
/// may count as masked, see the contract), a NaN or ±∞ in V.
inline Poison draw_poison(std::mt19937_64& rng, Inputs& x)
{
    Poison p;
    if (rng() % 2 == 0) return p;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    const int which = int(rng() % 3);
    xt::xtensor<double, 2>& X = which == 0 ? x.Q : which == 1 ? x.K : x.V;
    if (X.size() == 0) return p;
    p.operand = "QKV"[which];
    p.row = rng() % X.shape(0);
    p.col = rng() % X.shape(1);
    const double values[] = {nan, inf, -inf};
    p.value = which < 2 ? nan : values[rng() % 3];
    X(p.row, p.col) = p.value;
    return p;
}

/// Whether output cell (i, c) depends on the poisoned entry under `allowed`.
template <class Allowed>
bool depends_on(const Poison& p, std::size_t i, std::size_t c, std::size_t m, Allowed allowed)
{
    switch (p.operand) {
    case 'Q': {
        if (i != p.row) return false;
        for (std::size_t j = 0; j < m; ++j)
            if (allowed(i, j)) return true;
        return false;  // a fully masked row stays zero
    }
    case 'K': return allowed(i, p.row);
    case 'V': return c == p.col && allowed(i, p.row);
    default: return false;
    }
}

/// The contract on one output O of a kernel run on `clean` with `p` poisoned:
/// every cell that depends on the poison is non-finite; every other cell equals the
/// masked reference on the clean inputs (zeros for a fully masked row). With
/// `v_may_spread` (a dense product multiplies every value by its weight, zero or not)
/// a poisoned V(j, c) may also make other cells of column c non-finite.
/// Returns an empty string, or what is wrong.
template <class Allowed>
std::string contract_violation(const xt::xtensor<double, 2>& O, const Inputs& clean,
                               const Poison& p, Allowed allowed, bool v_may_spread = false)
{
    const std::size_t n = clean.Q.shape(0), m = clean.K.shape(0), d_v = clean.V.shape(1);
    if (O.shape(0) != n || O.shape(1) != d_v) return "the output is not n×d_v";
    const auto reference = naive_attention(clean.Q, clean.K, clean.V, allowed);
    std::ostringstream out;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t c = 0; c < d_v; ++c) {
            const double o = O(i, c), r = reference(i, c);
            const bool finite = std::isfinite(o);
            if (depends_on(p, i, c, m, allowed)) {
                if (finite) out << "cell (" << i << ", " << c << ") = " << o << " is finite but depends on "
                                << p.operand << "(" << p.row << ", " << p.col << ") = " << p.value;
            } else if (!finite) {
                if (!(v_may_spread && p.operand == 'V' && c == p.col))
                    out << "cell (" << i << ", " << c << ") = " << o << " is not finite";
            } else if (!(std::abs(o - r) <= 1e-9 + 1e-8 * std::abs(r))) {
                out << "cell (" << i << ", " << c << ") = " << o << ", the reference " << r;
            }
            if (out.tellp() > 0) return out.str();
        }
    return "";
}

/// True if f() throws std::invalid_argument; any other exception propagates.
template <class F>
bool throws_invalid_argument(F f)
{
    try {
        f();
    } catch (const std::invalid_argument&) {
        return true;
    }
    return false;
}

/// @brief What a figure says in words: the text of every <text> element of an SVG that
/// gnuplot wrote (tic labels, axis labels, key entries), its pieces joined, in order.
inline std::vector<std::string> svg_texts(const std::filesystem::path& svg)
{
    std::ifstream in(svg);
    if (!in) throw std::runtime_error("cannot read " + svg.string());
    const std::string file{std::istreambuf_iterator<char>(in), {}};
    const std::map<std::string, std::string> entities = {
        {"&lt;", "<"}, {"&gt;", ">"}, {"&amp;", "&"}, {"&quot;", "\""}, {"&apos;", "'"}};
    std::vector<std::string> texts;
    for (std::size_t at = file.find("<text"); at != std::string::npos;
         at = file.find("<text", at + 1)) {
        const std::size_t end = file.find("</text>", at);
        std::string text;
        bool in_tag = false;
        for (std::size_t c = at; c < end; ++c) {
            if (file[c] == '<') in_tag = true;
            else if (in_tag) in_tag = file[c] != '>';
            else text += file[c];  // gnuplot writes a '>' of the text as it is
        }
        for (const auto& [entity, character] : entities)
            for (std::size_t e = text.find(entity); e != std::string::npos; e = text.find(entity))
                text.replace(e, entity.size(), character);
        const std::size_t first = text.find_first_not_of(" \t\n");
        if (first != std::string::npos)  // trimmed: tic labels come with a leading space
            texts.push_back(text.substr(first, text.find_last_not_of(" \t\n") - first + 1));
    }
    return texts;
}

/// True if some text of the SVG figure `svg` is exactly `text`.
inline bool svg_says(const std::filesystem::path& svg, const std::string& text)
{
    const auto texts = svg_texts(svg);
    return std::find(texts.begin(), texts.end(), text) != texts.end();
}

/// @brief The data behind a figure (its .tsv): the header line and the distinct values
/// of the first column (series or panel names), in order of appearance.
struct FigureData {
    std::string header;
    std::vector<std::string> names;
};

inline FigureData figure_data(const std::filesystem::path& tsv)
{
    std::ifstream in(tsv);
    if (!in) throw std::runtime_error("cannot read " + tsv.string());
    FigureData data;
    std::getline(in, data.header);
    for (std::string line; std::getline(in, line);) {
        const std::string name = line.substr(0, line.find('\t'));
        if (std::find(data.names.begin(), data.names.end(), name) == data.names.end())
            data.names.push_back(name);
    }
    return data;
}

/// @brief Run a chapter's program (built beside the tests) with --quick into a fresh
/// folder and return the folder, or fail the test if the program is missing or fails.
inline std::filesystem::path run_chapter_program(const std::string& name)
{
    const std::string program = std::string(BUILD_DIR) + "/bin/" + name;
    BOOST_REQUIRE_MESSAGE(std::filesystem::exists(program),
                          "build " << program << " first (make " << name.substr(0, 4) << ")");
    const auto dir = std::filesystem::temp_directory_path() /
                     ("attn-figures-" + name + "-" + std::to_string(std::random_device{}()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const std::string command = program + " --quick --out " + (dir / "out").string() + " > " +
                                (dir / "log").string() + " 2>&1";
    BOOST_REQUIRE_MESSAGE(std::system(command.c_str()) == 0, name << " failed; see " << (dir / "log").string());
    return dir;
}

/// @brief Check that the grid figure whose data is `tsv` holds exactly `titles`, in order.
inline void check_panels(const std::filesystem::path& tsv, const std::vector<std::string>& titles)
{
    const FigureData panels = figure_data(tsv);
    BOOST_TEST(panels.header == "# panel\trow\tcol\tvalue");
    BOOST_TEST(panels.names == titles, boost::test_tools::per_element());
}

/// @brief Check a cost figure (time or memory against n): its axes are labelled, one
/// curve is dense attention's, and every curve's name gives its fitted slope.
inline void check_cost_figure(const std::filesystem::path& svg, const std::string& y_label)
{
    BOOST_TEST(svg_says(svg, "n (tokens)"), svg.string() << " lacks its x label");
    BOOST_TEST(svg_says(svg, y_label), svg.string() << " lacks its y label " << y_label);
    std::filesystem::path tsv = svg;
    const FigureData data = figure_data(tsv.replace_extension(".tsv"));
    BOOST_TEST(data.header == "# series\tx\ty");
    BOOST_TEST(std::count_if(data.names.begin(), data.names.end(),
                             [](const std::string& name) { return name.rfind("dense", 0) == 0; }) == 1);
    for (const std::string& name : data.names) {
        BOOST_TEST(name.find(", slope ") != std::string::npos, name);
        BOOST_TEST(svg_says(svg, name), svg.string() << " has no key entry " << name);
    }
}

}  // namespace test_support

/// Every test runs on the BLAS core the chapters' programs run on (see the appendix
/// "Instruments"): the test program starts again once if OpenBLAS chose a generic core.
struct SelectBlasCore {
    SelectBlasCore() { attn::select_blas_core(); }
};
BOOST_TEST_GLOBAL_FIXTURE(SelectBlasCore);
