// Generated from chapters/06-sliding-window.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Comparing costs: CPU time of a call, and where an efficient mechanism overtakes dense attention.

#include <algorithm>
#include <cmath>
#include <ctime>
#include <stdexcept>
#include <string>
#include <vector>

#include "attn/measure.hpp"
#include "attn/program.hpp"

namespace attn {

// ⟨Time a call in CPU seconds⟩ 06-sliding-window.md:633
/// CPU seconds used so far by the whole process (all its threads).
inline double process_cpu_seconds()
{
    timespec now{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}

/// @brief Median CPU seconds of the process over `repeats` calls of `f` (after one warm-up call).
/// Unlike wall-clock time, it does not count time the machine spends on other processes.
template <class F>
double median_cpu_seconds(F&& f, int repeats)
{
    do_not_optimise(f());  // warm-up: caches, page faults
    std::vector<double> seconds;
    for (int r = 0; r < repeats; ++r) {
        const double start = process_cpu_seconds();
        const auto result = f();
        seconds.push_back(process_cpu_seconds() - start);
        do_not_optimise(result);
    }
    std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
    return seconds[seconds.size() / 2];
}

/// @brief The largest of `tries` measurements of peak_memory_bytes(f): a measurement can only
/// miss pages the process already held, so the largest is the most complete.
template <class F>
std::size_t largest_peak_memory_bytes(F&& f, int tries = 3)
{
    std::size_t largest = 0;
    for (int t = 0; t < tries; ++t) largest = std::max(largest, peak_memory_bytes(f));
    return largest;
}

// ⟨Find where a cheaper-growing cost overtakes another⟩ 06-sliding-window.md:728
/// @brief Where the cost curve `fast` drops below `dense`, both measured at the sizes `n`.
struct Crossover {
    double n = NAN;   ///< the size at which `fast` becomes cheaper (NaN if never)
    std::string how;  ///< "measured", "below smallest", "extrapolated" or "never"

    /// The crossover as a phrase for the book, e.g. "n ≈ 900 (interpolated between measured sizes)".
    std::string describe() const
    {
        if (how == "below smallest") return "n ≤ " + format_number(n) + " (cheaper already at the smallest size measured)";
        if (how == "measured") return "n ≈ " + format_number(std::round(n)) + " (interpolated between measured sizes)";
        if (how == "extrapolated") return "n ≈ " + format_number(n, 2) + " (extrapolated from the fitted slopes)";
        return "no crossover (dense is cheaper at every size and grows no faster)";
    }
};

/// @brief Find where `fast` (measured at every n) falls below `dense` (measured at the first sizes of n).
/// @param n sizes, increasing; @param fast costs at n; @param dense costs at n[0 .. dense.size())
inline Crossover find_crossover(const std::vector<double>& n, const std::vector<double>& fast,
                                const std::vector<double>& dense)
{
    const std::size_t both = std::min(fast.size(), dense.size());
    if (both < 2 || n.size() < both) throw std::invalid_argument("find_crossover: need two sizes where both were measured");
    if (fast[0] < dense[0]) return {n[0], "below smallest"};
    for (std::size_t k = 1; k < both; ++k)
        if (fast[k] < dense[k]) {  // log(fast/dense) changes sign between n[k−1] and n[k]
            const double g0 = std::log(fast[k - 1] / dense[k - 1]), g1 = std::log(fast[k] / dense[k]);
            const double t = g0 / (g0 - g1);
            return {std::exp(std::log(n[k - 1]) + t * (std::log(n[k]) - std::log(n[k - 1]))), "measured"};
        }
    // Extend both power laws y = c·n^p, fitted where both were measured, until they meet.
    const std::vector<double> x(n.begin(), n.begin() + both), f(fast.begin(), fast.begin() + both),
        d(dense.begin(), dense.begin() + both);
    const double p_fast = loglog_slope(x, f), p_dense = loglog_slope(x, d);
    if (p_dense <= p_fast) return {NAN, "never"};
    const double gap = std::log(f.back() / d.back());  // > 0: fast is dearer at the last shared size
    return {x.back() * std::exp(gap / (p_dense - p_fast)), "extrapolated"};
}

}  // namespace attn
