// Generated from chapters/01-self-attention.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Time, peak memory and log–log slopes, for every chapter's benchmarks.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <malloc.h>

namespace attn {

// ⟨Keep a result alive⟩ 01-self-attention.md:614
/// Tell the compiler `value` is used, so the call producing it is not optimised away.
template <class V>
void do_not_optimise(const V& value)
{
    asm volatile("" : : "r"(&value) : "memory");
}

// ⟨Time a call⟩ 01-self-attention.md:550
/// @brief Median wall-clock seconds of `repeats` calls of `f` (after one warm-up call).
template <class F>
double median_seconds(F&& f, int repeats)
{
    f();  // warm-up: caches, page faults, BLAS threads
    std::vector<double> seconds;
    for (int r = 0; r < repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        const auto result = f();
        const auto stop = std::chrono::steady_clock::now();
        do_not_optimise(result);
        seconds.push_back(std::chrono::duration<double>(stop - start).count());
    }
    std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
    return seconds[seconds.size() / 2];
}

// ⟨Measure the peak memory of a call⟩ 01-self-attention.md:569
/// A field of /proc/self/status in bytes (e.g. "VmRSS", "VmHWM"); 0 if unavailable.
inline std::size_t process_status_bytes(const std::string& field)
{
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
    return 0;
}

/// The exact resident set in bytes, counted page by page (/proc/self/smaps_rollup); 0 if unavailable.
inline std::size_t exact_resident_bytes()
{
    std::ifstream rollup("/proc/self/smaps_rollup");
    for (std::string line; std::getline(rollup, line);)
        if (line.rfind("Rss:", 0) == 0) return std::stoull(line.substr(4)) * 1024;
    return 0;
}

/// @brief Bytes by which the process's resident set grows at its peak during `f()`.
/// Resets the kernel's high-water mark first (Linux: /proc/self/clear_refs); never less than
/// the exact growth while f's result is still alive.
template <class F>
std::size_t peak_memory_bytes(F&& f)
{
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);  // large blocks always come from (and go back to) the kernel
    malloc_trim(0);                         // hand freed memory back, so it is not counted as "before"
    const std::size_t exact_before = exact_resident_bytes();
    const std::size_t before = process_status_bytes("VmRSS");
    std::ofstream("/proc/self/clear_refs") << "5";
    std::size_t exact_after = 0;
    {
        const auto result = f();
        exact_after = exact_resident_bytes();
        do_not_optimise(result);
    }
    const std::size_t peak = process_status_bytes("VmHWM");
    const std::size_t high_water = peak > before ? peak - before : 0;
    return std::max(high_water, exact_after > exact_before ? exact_after - exact_before : 0);
}

// ⟨Fit a slope on log-log axes⟩ 01-self-attention.md:626
/// @brief Least-squares slope of log(y) against log(x): the p in y ∝ x^p.
inline double loglog_slope(const std::vector<double>& x, const std::vector<double>& y)
{
    if (x.size() != y.size() || x.size() < 2) throw std::invalid_argument("loglog_slope: need ≥ 2 points");
    double mean_x = 0, mean_y = 0;
    for (std::size_t i = 0; i < x.size(); ++i) mean_x += std::log(x[i]), mean_y += std::log(y[i]);
    mean_x /= double(x.size()), mean_y /= double(x.size());
    double sxy = 0, sxx = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double dx = std::log(x[i]) - mean_x;
        sxy += dx * (std::log(y[i]) - mean_y);
        sxx += dx * dx;
    }
    return sxy / sxx;
}

}  // namespace attn
