// Generated from chapters/08-longformer.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Cost curves of efficient kernels against n: CPU time, peak memory, slope, crossover (chapter 8).

#include <algorithm>
#include <cstddef>
#include <ctime>
#include <limits>
#include <vector>

#include "attn/measure.hpp"
#include "attn/plot.hpp"

namespace attn {

// ⟨Time a call in CPU seconds⟩ 08-longformer.md:663
/// @brief The least CPU time the process spends in one call of `f`, over `repeats` calls (after a warm-up call).
/// CPU time does not count the time other programs hold the cores; of several calls the fastest
/// is the least disturbed (interference only ever adds time). For a single-threaded call on an
/// idle machine it equals the wall-clock time.
template <class F>
double least_cpu_seconds(F&& f, int repeats)
{
    auto now = [] {
        timespec t{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
        return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
    };
    f();  // warm-up: caches, page faults
    double least = std::numeric_limits<double>::infinity();
    for (int r = 0; r < repeats; ++r) {
        const double start = now();
        const auto result = f();
        const double stop = now();
        do_not_optimise(result);
        least = std::min(least, stop - start);
    }
    return least;
}

// ⟨Record the time and memory of one call⟩ 08-longformer.md:689
/// @brief Append n, the least CPU seconds of `repeats` calls of `f`, and the MiB one call adds at its peak.
template <class F>
void record_cost(Series& time, Series& memory, std::size_t n, F&& f, int repeats)
{
    time.x.push_back(double(n));
    time.y.push_back(least_cpu_seconds(f, repeats));
    memory.x.push_back(double(n));
    memory.y.push_back(double(peak_memory_bytes(f)) / double(1 << 20));
}

// ⟨Summarise a curve by its slope and crossover⟩ 08-longformer.md:706
/// @brief Least-squares log–log slope of the points of `series` with x ≥ from (and y > 0).
inline double slope_from(const Series& series, double from)
{
    std::vector<double> x, y;
    for (std::size_t k = 0; k < series.x.size(); ++k)
        if (series.x[k] >= from && series.y[k] > 0) x.push_back(series.x[k]), y.push_back(series.y[k]);
    return loglog_slope(x, y);
}

/// @brief The smallest n from which `fast` beats `slow` at every larger n both measured; 0 if it never does.
/// Both series were measured at the same sizes, `slow` only at the first few.
inline double crossover(const Series& fast, const Series& slow)
{
    double from = 0;
    for (std::size_t k = slow.x.size(); k-- > 0;) {
        if (!(fast.y[k] < slow.y[k])) break;
        from = slow.x[k];
    }
    return from;
}

// ⟨Keep the points a log axis can show⟩ 08-longformer.md:769
/// @brief The points of `series` with y > 0.
inline Series positive_points(const Series& series)
{
    Series kept{series.label, {}, {}, series.with};
    for (std::size_t k = 0; k < series.x.size(); ++k)
        if (series.y[k] > 0) kept.x.push_back(series.x[k]), kept.y.push_back(series.y[k]);
    return kept;
}

}  // namespace attn
