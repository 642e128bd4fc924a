// Generated from chapters/00-instruments.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cstddef>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <cblas.h>

#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"

namespace {

// ⟨Multiply two square matrices with sgemm⟩ 00-instruments.md:1921
/// @brief C = A·B for three s×s matrices of float, by OpenBLAS's sgemm.
std::vector<float> multiply_square(const std::vector<float>& A,
                                   const std::vector<float>& B, int s)
{
    std::vector<float> C(std::size_t(s) * std::size_t(s));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s, s, s, 1.0f, A.data(), s,
                B.data(), s, 0.0f, C.data(), s);
    return C;
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch00",
                             "the machine, its BLAS, and how timings scatter",
                             [](const attn::Options& options, attn::Results& results) {
                                 const std::filesystem::path& out = options.out;
                                 // ⟨Record the caches⟩ 00-instruments.md:1998
                                 const attn::Machine machine = attn::this_machine();
                                 results.add("l1d_kib", double(machine.l1d_bytes) / 1024);
                                 results.add("l2_kib", double(machine.l2_bytes) / 1024);
                                 results.add("l3_kib", double(machine.l3_bytes) / 1024);
                                 results.add_text("vector_level", machine.vector_level == 2   ? "AVX-512"
                                                                  : machine.vector_level == 1 ? "AVX2 with FMA"
                                                                                              : "narrower than AVX2");
                                 // ⟨Measure sgemm's rate on one and on every thread⟩ 00-instruments.md:1936
                                 const std::vector<int> sizes = options.quick
                                                                    ? std::vector<int>{128, 192, 256, 384, 512}
                                                                    : std::vector<int>{256, 512, 768, 1024, 1536, 2048};
                                 const int cores = int(std::thread::hardware_concurrency());
                                 attn::Series one{"sgemm (1 thread)", {}, {}}, all{"sgemm (" + std::to_string(cores) +
                                                                                    " threads)", {}, {}};
                                 std::mt19937_64 rng(options.seed);
                                 for (int s : sizes) {
                                     const auto A = attn::random_normal<float>(s, s, 1.0, rng);  // s×s
                                     const auto B = attn::random_normal<float>(s, s, 1.0, rng);  // s×s
                                     const std::vector<float> a(A.begin(), A.end()), b(B.begin(), B.end());
                                     const auto timings = attn::time_alternating(
                                         {[&] { attn::set_blas_threads(1); return multiply_square(a, b, s); },
                                          [&] { attn::set_blas_threads(cores); return multiply_square(a, b, s); }},
                                         options.quick ? 3 : 5);
                                     const double flops = 2.0 * s * s * s;
                                     one.x.push_back(s), one.y.push_back(flops / timings[0].wall / 1e9);
                                     all.x.push_back(s), all.y.push_back(flops / timings[1].wall / 1e9);
                                 }
                                 attn::set_blas_threads(cores);
                                 results.add("sgemm_size", sizes.back());
                                 results.add("sgemm_gflops_1_thread", one.y.back());
                                 results.add("sgemm_gflops_all_threads", all.y.back());
                                 attn::plot::LinePlotStyle rate_style{"", "matrix size s (s×s times s×s)", "GFLOP/s"};
                                 rate_style.log_x = true;
                                 attn::plot::lines(out / "sgemm_rate.svg", {one, all}, rate_style);
                                 // ⟨Show how repeated timings scatter⟩ 00-instruments.md:1969
                                 {
                                     const int s = options.quick ? 256 : 768;
                                     const auto A = attn::random_normal<float>(s, s, 1.0, rng);  // s×s
                                     const std::vector<float> a(A.begin(), A.end());
                                     attn::set_blas_threads(1);
                                     const attn::Timing timing = attn::time_call(
                                         [&] { return multiply_square(a, a, s); }, options.quick ? 10 : 50);
                                     attn::set_blas_threads(cores);
                                     std::vector<double> sorted = timing.walls;
                                     std::sort(sorted.begin(), sorted.end());
                                     results.add("repeat_size", s);
                                     results.add("repeat_count", double(sorted.size()));
                                     results.add("repeat_fastest_ms", 1e3 * sorted.front());
                                     results.add("repeat_median_ms", 1e3 * sorted[sorted.size() / 2]);
                                     results.add("repeat_slowest_ms", 1e3 * sorted.back());
                                     attn::Series each{"each repeat", {}, {}, "points"},
                                         least{"fastest", {}, {}, "lines"};
                                     for (std::size_t r = 0; r < timing.walls.size(); ++r) {
                                         each.x.push_back(double(r + 1)), each.y.push_back(1e3 * timing.walls[r]);
                                         least.x.push_back(double(r + 1)), least.y.push_back(1e3 * sorted.front());
                                     }
                                     attn::plot::LinePlotStyle style{"", "repeat", "milliseconds"};
                                     style.y_min = 0.9e3 * sorted.front(), style.y_max = 1.05e3 * sorted.back();
                                     style.key = "top right";
                                     attn::plot::lines(out / "repeats.svg", {each, least}, style);
                                 }
                             });
}
