// Generated from chapters/00-instruments.md by tools/tangle.py; edit the chapter, not this file.
#pragma once
/// @file
/// @brief The machine the numbers are taken on: processor, caches, the BLAS core and
/// its threads, and the choice of the right BLAS core (appendix "Instruments").

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <unistd.h>

// ⟨Declare OpenBLAS's own calls⟩ 00-instruments.md:242
extern "C" {
char* openblas_get_corename(void);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int threads);
}

namespace attn {

// ⟨Tell how wide the vectors are⟩ 00-instruments.md:28
/// @brief The widest vectors this processor runs: 2 for AVX-512 (F, DQ, BW, VL),
/// 1 for AVX2 with FMA, 0 for anything older (or not x86).
inline int processor_vector_level()
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

/// @brief The vector level an OpenBLAS core is written for (same scale as above).
inline int blas_core_vector_level(const std::string& core)
{
    for (const char* wide : {"SkylakeX", "Cooperlake", "SapphireRapids"})
        if (core == wide) return 2;
    for (const char* avx2 : {"Haswell", "Zen"})
        if (core == avx2) return 1;
    return 0;  // Prescott, Nehalem, Sandybridge, ...: SSE or AVX without FMA
}

// ⟨Read the program's command line⟩ 00-instruments.md:112
/// The arguments this process was started with (/proc/self/cmdline), or none.
inline std::vector<std::string> command_line()
{
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::vector<std::string> args;
    for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
    return args;
}

// ⟨Choose the BLAS core for this processor⟩ 00-instruments.md:64
/// The core OpenBLAS runs now, as it names it (e.g. "Haswell", "Zen", "Prescott").
inline std::string blas_core() { return openblas_get_corename(); }

/// @brief The core to ask OpenBLAS for when `detected` is narrower than the processor;
/// empty when it is right already.
inline std::string better_blas_core(const std::string& detected)
{
    const int level = processor_vector_level();
    if (blas_core_vector_level(detected) >= level) return "";
    return level == 2 ? "SkylakeX" : "Haswell";
}

/// @brief Make OpenBLAS run the kernel this processor deserves: if it fell back to a
/// narrower core and nobody set OPENBLAS_CORETYPE, set it and re-run this program from
/// the start with the same arguments (OpenBLAS reads the variable only as it loads).
/// Returns when nothing needs to change, or when running again is impossible.
inline void select_blas_core()
{
    if (std::getenv("OPENBLAS_CORETYPE")) return;  // set by hand, or by our first run
    const std::string detected = blas_core(), wanted = better_blas_core(detected);
    if (wanted.empty()) return;
    std::vector<std::string> args = command_line();
    if (args.empty()) return;
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    setenv("OPENBLAS_CORETYPE", wanted.c_str(), 1);
    setenv("ATTN_BLAS_CORE_DETECTED", detected.c_str(), 1);
    execv("/proc/self/exe", argv.data());
    unsetenv("OPENBLAS_CORETYPE");  // exec failed: go on, and report the detected core
    unsetenv("ATTN_BLAS_CORE_DETECTED");
}

/// How the current core was chosen, for the record.
inline std::string blas_core_origin()
{
    if (!std::getenv("OPENBLAS_CORETYPE")) return "detected by OpenBLAS";
    if (const char* detected = std::getenv("ATTN_BLAS_CORE_DETECTED"))
        return std::string("selected by the program; OpenBLAS detected ") + detected;
    return "set by hand in OPENBLAS_CORETYPE";
}

// ⟨Fix the number of BLAS threads⟩ 00-instruments.md:129
/// The number of threads OpenBLAS uses for one call.
inline int blas_threads() { return openblas_get_num_threads(); }

/// Make OpenBLAS use `threads` threads from now on.
inline void set_blas_threads(int threads) { openblas_set_num_threads(threads); }

/// @brief For the lifetime of this object, OpenBLAS uses `threads` threads.
class BlasThreads {
public:
    explicit BlasThreads(int threads) : before_(blas_threads())
    {
        if (threads < 1)
            throw std::invalid_argument("BlasThreads: need at least one thread");
        set_blas_threads(threads);
    }
    BlasThreads(const BlasThreads&) = delete;
    BlasThreads& operator=(const BlasThreads&) = delete;
    ~BlasThreads() { set_blas_threads(before_); }

private:
    int before_;
};

// ⟨Read the caches from the kernel⟩ 00-instruments.md:158
/// One line of a small sysfs file, or "" if it cannot be read.
inline std::string read_first_line(const std::filesystem::path& path)
{
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

/// @brief Bytes of the level-`level` data or unified cache of CPU 0; 0 if unknown.
inline std::size_t cache_bytes(int level)
{
    std::error_code error;
    const std::filesystem::path caches = "/sys/devices/system/cpu/cpu0/cache";
    for (const auto& index : std::filesystem::directory_iterator(caches, error)) {
        if (read_first_line(index.path() / "level") != std::to_string(level)) continue;
        if (read_first_line(index.path() / "type") == "Instruction") continue;
        const std::string size = read_first_line(index.path() / "size");  // "32K"
        std::size_t used = 0, value = 0;
        try {
            value = std::stoull(size, &used);
        } catch (const std::exception&) {
            continue;
        }
        const char unit = used < size.size() ? size[used] : ' ';
        return value * (unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1);
    }
    return 0;
}

// ⟨Describe the machine⟩ 00-instruments.md:190
/// @brief The machine the numbers were taken on.
struct Machine {
    std::string cpu_model;        ///< from /proc/cpuinfo
    int cores = 0;                ///< logical processors the program may use
    int vector_level = 0;         ///< 2: AVX-512, 1: AVX2 + FMA, 0: older
    std::size_t l1d_bytes = 0;    ///< per core; 0 if unknown
    std::size_t l2_bytes = 0;     ///< per core; 0 if unknown
    std::size_t l3_bytes = 0;     ///< shared; 0 if unknown
    std::string blas_core;        ///< the OpenBLAS kernel that runs
    std::string blas_core_origin; ///< detected, selected by the program, or set by hand
    int blas_threads = 0;         ///< OpenBLAS's threads when the program started

    /// One line for a report: processor, cores, BLAS core and threads.
    std::string summary() const
    {
        return cpu_model + ", " + std::to_string(cores) + " cores, OpenBLAS core " +
               blas_core + " (" + blas_core_origin + "), " +
               std::to_string(blas_threads) + " BLAS threads";
    }
};

/// The processor's model name, from /proc/cpuinfo.
inline std::string cpu_model_name()
{
    std::ifstream info("/proc/cpuinfo");
    for (std::string line; std::getline(info, line);)
        if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos)
            return line.substr(line.find_first_not_of(" \t", line.find(':') + 1));
    return "unknown processor";
}

/// @brief Everything this appendix knows about the machine, read now.
inline Machine this_machine()
{
    Machine machine;
    machine.cpu_model = cpu_model_name();
    machine.cores = int(std::max(1u, std::thread::hardware_concurrency()));
    machine.vector_level = processor_vector_level();
    machine.l1d_bytes = cache_bytes(1);
    machine.l2_bytes = cache_bytes(2);
    machine.l3_bytes = cache_bytes(3);
    machine.blas_core = blas_core();
    machine.blas_core_origin = blas_core_origin();
    machine.blas_threads = blas_threads();
    return machine;
}

}  // namespace attn
