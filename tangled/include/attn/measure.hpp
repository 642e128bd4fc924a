// Generated from chapters/00-instruments.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief The book's one measuring protocol: timing in alternating rounds, peak memory,
/// log–log slopes with their standard error, cost curves and crossovers (appendix
/// "Instruments"). Includes the machine's description (attn/machine.hpp).

#include <algorithm>
#include <any>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <ctime>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <malloc.h>

#include "attn/machine.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"

namespace attn {

// ⟨Keep a result alive⟩ 00-instruments.md:313
/// Tell the compiler `value` is used, so the call producing it is not optimised away.
template <class V>
void do_not_optimise(const V& value)
{
    asm volatile("" : : "r"(&value) : "memory");
}

// ⟨Fix the allocator for every measurement⟩ 00-instruments.md:333
/// @brief From now on, blocks above 128 KiB come from the kernel and go back to it
/// (glibc's M_MMAP_THRESHOLD, fixed). Called by every measurement; idempotent.
inline void fix_the_allocator()
{
    static const bool fixed = mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1;
    (void)fixed;
}

// ⟨Read the clocks⟩ 00-instruments.md:343
/// Seconds on a steady wall clock.
inline double wall_seconds()
{
    return std::chrono::duration<double>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Processor seconds used so far by the whole process (all its threads).
inline double process_cpu_seconds()
{
    timespec now{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}

/// Processor seconds used so far by the calling thread alone (for work that runs side
/// by side with other work, a thread each).
inline double thread_cpu_seconds()
{
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}

// ⟨Time calls in alternating rounds⟩ 00-instruments.md:369
/// @brief The fastest wall-clock and processor seconds of one call over the repeats.
struct Timing {
    double wall = std::numeric_limits<double>::infinity();
    double cpu = std::numeric_limits<double>::infinity();
    std::vector<double> walls;  ///< every round's wall seconds, in order
};

/// A call to time: any callable returning a value (the value is kept alive until the
/// clock stops). An empty Call is skipped.
using Call = std::function<std::any()>;

/// @brief Time `calls` by the book's protocol: one warm-up call of each, then `repeats`
/// rounds in which every call runs once, each round starting one call later (so no call
/// is always first); the fastest of each.
inline std::vector<Timing> time_alternating(const std::vector<Call>& calls, int repeats)
{
    if (repeats < 1) throw std::invalid_argument("time_alternating: need repeats >= 1");
    fix_the_allocator();
    for (const Call& call : calls)
        if (call) do_not_optimise(call());  // warm-up: page faults, caches, threads
    std::vector<Timing> fastest(calls.size());
    for (int round = 0; round < repeats; ++round)
        for (std::size_t turn = 0; turn < calls.size(); ++turn) {
            const std::size_t c = (std::size_t(round) + turn) % calls.size();
            if (!calls[c]) continue;
            const double wall_start = wall_seconds(), cpu_start = process_cpu_seconds();
            const std::any result = calls[c]();
            const double cpu = process_cpu_seconds() - cpu_start;
            const double wall = wall_seconds() - wall_start;
            do_not_optimise(result);
            fastest[c].walls.push_back(wall);
            fastest[c].wall = std::min(fastest[c].wall, wall);
            fastest[c].cpu = std::min(fastest[c].cpu, cpu);
        }
    return fastest;
}

/// @brief time_alternating for a single call.
template <class F>
Timing time_call(F&& f, int repeats)
{
    return time_alternating({Call(std::forward<F>(f))}, repeats)[0];
}

// ⟨Measure the peak memory of a call⟩ 00-instruments.md:431
/// A field of /proc/self/status in bytes (e.g. "VmRSS", "VmHWM"); 0 if unavailable.
inline std::size_t process_status_bytes(const std::string& field)
{
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind(field + ":", 0) == 0)
            return std::stoull(line.substr(field.size() + 1)) * 1024;
    return 0;
}

/// The exact resident set in bytes (/proc/self/smaps_rollup); 0 if unknown.
inline std::size_t exact_resident_bytes()
{
    std::ifstream rollup("/proc/self/smaps_rollup");
    for (std::string line; std::getline(rollup, line);)
        if (line.rfind("Rss:", 0) == 0) return std::stoull(line.substr(4)) * 1024;
    return 0;
}

/// @brief Bytes by which the process's resident set grows at its peak during `f()`.
/// Resets the kernel's high-water mark first (Linux: /proc/self/clear_refs); never less
/// than the exact growth while f's result is still alive.
template <class F>
std::size_t peak_memory_bytes(F&& f)
{
    fix_the_allocator();
    malloc_trim(0);  // hand freed memory back first, so it is not counted as "before"
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
    return std::max(high_water,
                    exact_after > exact_before ? exact_after - exact_before : 0);
}

/// @brief The largest of `tries` measurements of peak_memory_bytes(f).
template <class F>
std::size_t largest_peak_memory_bytes(F&& f, int tries = 3)
{
    std::size_t largest = 0;
    for (int t = 0; t < tries; ++t) largest = std::max(largest, peak_memory_bytes(f));
    return largest;
}

// ⟨Fit a slope on log-log axes⟩ 00-instruments.md:504
/// @brief A least-squares slope on log–log axes and its standard error.
struct SlopeFit {
    double slope = NAN;           ///< p in y ∝ x^p
    double standard_error = NAN;  ///< of the slope, from the scatter about the line
    std::size_t points = 0;

    /// Decimals that show the error to one significant digit (at least 2, at most 4).
    int decimals() const
    {
        if (!(standard_error > 0)) return 2;
        return std::clamp(int(-std::floor(std::log10(standard_error))), 2, 4);
    }
    /// The slope as the book prints it, e.g. "1.98 ± 0.03".
    std::string text() const
    {
        std::ostringstream out;
        out << std::fixed << std::setprecision(decimals()) << slope << " ± "
            << standard_error;
        return out.str();
    }
};

/// @brief Fit log y = a + p·log x by least squares; needs ≥ 3 points, all positive.
inline SlopeFit loglog_fit(const std::vector<double>& x, const std::vector<double>& y)
{
    const std::size_t N = x.size();
    if (y.size() != N || N < 3)
        throw std::invalid_argument(
            "loglog_fit: need three or more (x, y) points, got " +
            std::to_string(std::min(N, y.size())));
    std::vector<double> lx(N), ly(N);
    for (std::size_t i = 0; i < N; ++i) {
        if (!(x[i] > 0) || !(y[i] > 0))
            throw std::invalid_argument("loglog_fit: every x and y must be positive");
        lx[i] = std::log(x[i]), ly[i] = std::log(y[i]);
    }
    const double mean_x = std::accumulate(lx.begin(), lx.end(), 0.0) / double(N);
    const double mean_y = std::accumulate(ly.begin(), ly.end(), 0.0) / double(N);
    double sxx = 0, sxy = 0;
    for (std::size_t i = 0; i < N; ++i) {
        sxx += (lx[i] - mean_x) * (lx[i] - mean_x);
        sxy += (lx[i] - mean_x) * (ly[i] - mean_y);
    }
    if (!(sxx > 0)) throw std::invalid_argument("loglog_fit: all x are equal");
    SlopeFit fit;
    fit.slope = sxy / sxx;
    fit.points = N;
    double squares = 0;
    for (std::size_t i = 0; i < N; ++i) {
        const double residual = ly[i] - mean_y - fit.slope * (lx[i] - mean_x);
        squares += residual * residual;
    }
    fit.standard_error = std::sqrt(squares / double(N - 2) / sxx);
    return fit;
}

// ⟨Record cost curves against n⟩ 00-instruments.md:573
/// The fewest lengths a cost curve is fitted over.
constexpr std::size_t min_cost_lengths = 5;

/// The log–log slope of `series` over its points with x ≥ from, of which there must be
/// at least min_cost_lengths.
inline SlopeFit slope_from(const Series& series, double from = 0)
{
    std::vector<double> x, y;
    for (std::size_t k = 0; k < series.x.size(); ++k)
        if (series.x[k] >= from) x.push_back(series.x[k]), y.push_back(series.y[k]);
    if (x.size() < min_cost_lengths)
        throw std::invalid_argument("slope_from: '" + series.label + "' has " +
                                    std::to_string(x.size()) + " lengths from n = " +
                                    std::to_string(from) + ", need " +
                                    std::to_string(min_cost_lengths));
    return loglog_fit(x, y);
}

/// @brief One mechanism's cost against n, every point on `threads` threads.
struct CostCurve {
    std::string label;  ///< the mechanism, e.g. "dense"
    int threads = 1;    ///< BLAS threads (and the kernel's own) for every point
    std::vector<double> n, wall_seconds, cpu_seconds, peak_mib;

    /// An empty curve for the mechanism `label`, measured on `threads` threads.
    explicit CostCurve(std::string label, int threads = 1)
        : label(std::move(label)), threads(threads)
    {
        if (threads < 1)
            throw std::invalid_argument("CostCurve: need at least one thread");
    }

    /// The label with its threads, e.g. "dense (1 thread)".
    std::string name() const
    {
        return label + " (" + std::to_string(threads) +
               (threads == 1 ? " thread)" : " threads)");
    }
    /// (n, fastest wall seconds), for a line plot.
    Series time() const { return {name(), n, wall_seconds}; }
    /// (n, peak MiB) where the peak is above zero, so a log axis can show it.
    Series memory() const
    {
        Series series{name(), {}, {}};
        for (std::size_t k = 0; k < n.size(); ++k)
            if (peak_mib[k] > 0)
                series.x.push_back(n[k]), series.y.push_back(peak_mib[k]);
        return series;
    }
    /// Slope of time against n over the lengths ≥ from (at least min_cost_lengths).
    SlopeFit time_fit(double from = 0) const { return slope_from(time(), from); }
    /// Slope of peak memory against n over the lengths ≥ from with a peak above zero.
    SlopeFit memory_fit(double from = 0) const { return slope_from(memory(), from); }

};

/// @brief At length n, time calls[i] for curves[i] in alternating rounds on the curves'
/// (equal) number of threads, then take each one's largest peak memory; an empty call
/// adds no point to its curve.
inline void measure_costs(const std::vector<CostCurve*>& curves, double n,
                          const std::vector<Call>& calls, int repeats)
{
    if (curves.size() != calls.size() || curves.empty())
        throw std::invalid_argument("measure_costs: need one call per curve");
    for (const CostCurve* curve : curves)
        if (curve->threads != curves[0]->threads)
            throw std::invalid_argument("measure_costs: '" + curve->name() + "' and '" +
                                        curves[0]->name() +
                                        "' run on different threads");
    const BlasThreads threads(curves[0]->threads);
    const std::vector<Timing> timings = time_alternating(calls, repeats);
    for (std::size_t c = 0; c < calls.size(); ++c) {
        if (!calls[c]) continue;
        CostCurve& curve = *curves[c];
        curve.n.push_back(n);
        curve.wall_seconds.push_back(timings[c].wall);
        curve.cpu_seconds.push_back(timings[c].cpu);
        curve.peak_mib.push_back(double(largest_peak_memory_bytes(calls[c])) /
                                 (1 << 20));
    }
}

// ⟨Find where a cheaper-growing cost overtakes another⟩ 00-instruments.md:662
/// @brief Where one cost curve falls below another.
struct Crossover {
    double n = NAN;   ///< the length from which `fast` is cheaper (NaN if never)
    std::string how;  ///< "below smallest", "measured", "extrapolated" or "never"

    /// The crossover as a phrase, e.g. "n ≈ 900 (between measured lengths)".
    std::string describe() const
    {
        std::ostringstream text;
        text << std::setprecision(2);
        if (how == "below smallest")
            return "n ≤ " + std::to_string(long(n)) +
                   " (cheaper already at the smallest length measured)";
        if (how == "measured")
            return "n ≈ " + std::to_string(long(std::round(n))) +
                   " (between measured lengths)";
        if (how == "extrapolated") {
            text << "n ≈ " << n << " (extrapolated from the fitted slopes)";
            return text.str();
        }
        return "no crossover (the reference is cheaper and grows no faster)";
    }
};

/// @brief Where `fast` falls below `reference`: wall seconds, or peak MiB if `memory`.
inline Crossover find_crossover(const CostCurve& fast, const CostCurve& reference,
                                bool memory = false)
{
    std::vector<double> n, f, r;  // the lengths both measured, and their costs there
    for (std::size_t a = 0; a < fast.n.size(); ++a)
        for (std::size_t b = 0; b < reference.n.size(); ++b)
            if (fast.n[a] == reference.n[b]) {
                const double cost_f = memory ? fast.peak_mib[a] : fast.wall_seconds[a];
                const double cost_r =
                    memory ? reference.peak_mib[b] : reference.wall_seconds[b];
                if (cost_f > 0 && cost_r > 0)
                    n.push_back(fast.n[a]), f.push_back(cost_f), r.push_back(cost_r);
            }
    if (n.size() < 3)
        throw std::invalid_argument("find_crossover: need three shared lengths");
    if (f[0] < r[0]) return {n[0], "below smallest"};
    for (std::size_t k = 1; k < n.size(); ++k)
        if (f[k] < r[k]) {  // log(f/r) changes sign between n[k−1] and n[k]
            const double g0 = std::log(f[k - 1] / r[k - 1]), g1 = std::log(f[k] / r[k]);
            const double t = g0 / (g0 - g1);
            return {std::exp(std::log(n[k - 1]) + t * std::log(n[k] / n[k - 1])),
                    "measured"};
        }
    const double p_fast = loglog_fit(n, f).slope, p_reference = loglog_fit(n, r).slope;
    if (p_reference <= p_fast) return {NAN, "never"};
    const double gap =
        std::log(f.back() / r.back());  // > 0: fast is dearer at the last length
    return {n.back() * std::exp(gap / (p_reference - p_fast)), "extrapolated"};
}

// ⟨Report a kernel against dense attention⟩ 00-instruments.md:723
/// @brief Report `kernel` against `dense`: the slopes of time and of peak memory
/// (time_slope, memory_slope, dense_time_slope, dense_memory_slope; the kernel's fitted
/// from n = `fit_from`, dense's from `dense_fit_from`), the crossover, the kernel's
/// cost at its largest n, the speed-up and memory ratio at dense's largest n; and both
/// curves, log–log, with their slopes in the key: `out`/cost_time.svg and
/// `out`/cost_memory.svg.
inline void report_against_dense(const CostCurve& kernel, const CostCurve& dense,
                                 double fit_from, double dense_fit_from,
                                 const std::filesystem::path& out, Results& results)
{
    const SlopeFit time_fit = kernel.time_fit(fit_from);
    const SlopeFit dense_time_fit = dense.time_fit(dense_fit_from);
    const SlopeFit memory_fit = kernel.memory_fit(fit_from);
    const SlopeFit dense_memory_fit = dense.memory_fit(dense_fit_from);
    results.add_fit("time_slope", time_fit);
    results.add_fit("memory_slope", memory_fit);
    results.add_fit("dense_time_slope", dense_time_fit);
    results.add_fit("dense_memory_slope", dense_memory_fit);
    results.add_text("crossover", find_crossover(kernel, dense).describe());
    results.add("kernel_ms_at_n_max", 1e3 * kernel.wall_seconds.back());
    results.add("kernel_mib_at_n_max", kernel.peak_mib.back());
    const std::size_t shared = dense.n.size() - 1;  // dense's largest n, both measured
    results.add("speedup_at_dense_n_max",
                dense.wall_seconds[shared] / kernel.wall_seconds[shared]);
    results.add("memory_ratio_at_dense_n_max",
                dense.peak_mib[shared] / kernel.peak_mib[shared]);
    const auto with_fit = [](Series series, const SlopeFit& fit) {
        series.label += ", slope " + fit.text();
        return series;
    };
    const std::vector<Series> times = {with_fit(dense.time(), dense_time_fit),
                                       with_fit(kernel.time(), time_fit)};
    const std::vector<Series> memories = {with_fit(dense.memory(), dense_memory_fit),
                                          with_fit(kernel.memory(), memory_fit)};
    plot::LinePlotStyle time_style{"", "n (tokens)", "seconds (fastest round)"};
    plot::LinePlotStyle memory_style{"", "n (tokens)", "peak MiB one call adds"};
    time_style.log_x = time_style.log_y = true;
    memory_style.log_x = memory_style.log_y = true;
    plot::leave_room_for_the_key(time_style, times);
    plot::leave_room_for_the_key(memory_style, memories);
    plot::lines(out / "cost_time.svg", times, time_style);
    plot::lines(out / "cost_memory.svg", memories, memory_style);
}

// ⟨Count the arithmetic of attention⟩ 00-instruments.md:777
/// @brief Floating-point operations of exact attention, 2·pairs·(d_k + d_v): pairs is
/// n·m, or for causal attention (query i sees keys j ≤ i) the visible pairs only.
inline double attention_flops(double n, double m, double d_k, double d_v,
                              bool causal = false)
{
    const double pairs = !causal ? n * m
                         : n <= m ? n * (n + 1) / 2
                                  : m * (m + 1) / 2 + (n - m) * m;
    return 2 * pairs * (d_k + d_v);
}

}  // namespace attn
