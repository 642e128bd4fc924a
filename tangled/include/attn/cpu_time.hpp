// Generated from chapters/10-linformer.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief Chapter 10: time a call by the CPU time of the calling thread, steady on a busy machine.

#include <algorithm>
#include <ctime>
#include <vector>

#include "attn/measure.hpp"

namespace attn {

// ⟨Time a call in CPU seconds of the calling thread⟩ 10-linformer.md:578
/// @brief CPU seconds the calling thread has used so far (Linux CLOCK_THREAD_CPUTIME_ID).
inline double thread_cpu_seconds()
{
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}

/// @brief Median CPU seconds of the calling thread over `repeats` calls of `f` (after one warm-up call).
/// Counts only this thread: use it with single-threaded BLAS, where it is all of the call's work.
template <class F>
double median_thread_seconds(F&& f, int repeats)
{
    do_not_optimise(f());  // warm-up
    std::vector<double> seconds;
    for (int r = 0; r < repeats; ++r) {
        const double start = thread_cpu_seconds();
        const auto result = f();
        seconds.push_back(thread_cpu_seconds() - start);
        do_not_optimise(result);
    }
    std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
    return seconds[seconds.size() / 2];
}

}  // namespace attn
