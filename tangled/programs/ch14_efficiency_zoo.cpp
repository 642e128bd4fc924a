// Generated from chapters/14-efficiency-zoo.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/zoo.hpp"

namespace {

// ⟨Fit a curve over its five largest lengths⟩ 14-efficiency-zoo.md:504
/// The slope of time (or memory) over the curve's five largest lengths; none if fewer.
std::optional<attn::SlopeFit> fit_largest(const attn::CostCurve& curve, bool memory)
{
    const attn::Series s = memory ? curve.memory() : curve.time();
    if (s.x.size() < attn::min_cost_lengths) return std::nullopt;
    const double from = s.x[s.x.size() - attn::min_cost_lengths];
    return memory ? curve.memory_fit(from) : curve.time_fit(from);
}

/// A legend: the mechanism, its slope if fitted, and its last length if before n_max.
std::string legend(const std::string& name, const attn::Series& s,
                   const std::optional<attn::SlopeFit>& fit, double n_max)
{
    std::string label = name;
    if (fit) label += ", slope " + fit->text();
    if (!s.x.empty() && s.x.back() < n_max)
        label += ", to n = " + attn::format_number(s.x.back());
    return label;
}

/// The error of one mechanism against n, drawn no lower than 1e-8 (a log axis).
attn::Series error_series(const std::map<std::size_t, double>& error)
{
    attn::Series s{"", {}, {}};
    for (const auto& [n, value] : error)
        s.x.push_back(double(n)), s.y.push_back(std::max(value, 1e-8));
    return s;
}

// ⟨Look up a cost at one length⟩ 14-efficiency-zoo.md:681
/// The wall seconds (or peak MiB) of `curve` at length n; NaN if not measured there.
double cost_at(const attn::CostCurve& curve, std::size_t n, bool memory)
{
    for (std::size_t k = 0; k < curve.n.size(); ++k)
        if (curve.n[k] == double(n))
            return memory ? curve.peak_mib[k] : curve.wall_seconds[k];
    return NAN;
}

/// A ratio as a table cell, "2.5×", or "–" when either side is missing.
std::string ratio_cell(double numerator, double denominator)
{
    const double r = numerator / denominator;
    return std::isfinite(r) && r > 0 ? attn::format_number(r, 2) + "×" : "–";
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch14",
                             "every mechanism of the book on the same inputs",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Choose the lengths, the rounds and the threads⟩ 14-efficiency-zoo.md:373
        const std::size_t d = 64;
        const std::size_t n_min = options.quick ? 128 : 256;
        const std::size_t n_max = options.quick ? 2048 : 16384;
        const std::size_t dense_n_max = options.quick ? 2048 : 4096;
        const std::size_t reformer_error_n_max = options.quick ? 2048 : 8192;
        const int threads = 1;  // every mechanism of the comparison
        const int all_threads = int(std::max(1u, std::thread::hardware_concurrency()));
        auto rounds = [](std::size_t n) { return n <= 1024 ? 5 : n <= 4096 ? 3 : 2; };
        // ⟨Run the zoo at every length⟩ 14-efficiency-zoo.md:390
        const std::vector<attn::Mechanism> zoo = attn::zoo_mechanisms();
        const std::size_t dense = 0;  // zoo_mechanisms() lists dense attention first
        std::vector<attn::CostCurve> curves;                            // each, on 1 thread
        std::vector<std::map<std::size_t, double>> errors(zoo.size());  // each, by n
        std::vector<std::size_t> exact_ids;                             // the exact ones
        std::vector<attn::CostCurve> curves_all;                        // theirs, every core
        for (std::size_t z = 0; z < zoo.size(); ++z) {
            curves.emplace_back(zoo[z].name, threads);
            if (zoo[z].family != "exact") continue;
            exact_ids.push_back(z);
            curves_all.emplace_back(zoo[z].name, all_threads);
        }
        for (std::size_t n = n_min; n <= n_max; n *= 2) {
            attn::ZooInputs inputs;  // Q, K: n×d_k; V: n×d_v
            for (auto* M : {&inputs.Q, &inputs.K, &inputs.V})
                *M = attn::random_normal<float>(n, d, 1.0, rng);
            // ⟨Compute the exact outputs at this length⟩ 14-efficiency-zoo.md:424
            xt::xtensor<float, 2> exact_full, exact_causal, exact_shared, dense_full, dense_causal;
            #if __has_include("attn/flash_attention.hpp")
            const bool tiled_reference = true;
            exact_full = attn::flash_attention(inputs.Q, inputs.K, inputs.V);
            exact_causal = attn::flash_attention(inputs.Q, inputs.K, inputs.V, true);
            #else
            const bool tiled_reference = false;
            #endif
            #if __has_include("attn/masked_attention.hpp")
            if (n <= dense_n_max)
                dense_causal = attn::scaled_dot_product_attention(inputs.Q, inputs.K, inputs.V,
                                                                  attn::causal_mask(n));
            #endif
            if (n <= reformer_error_n_max)
                exact_shared = attn::shared_qk_reference(inputs.Q, inputs.V);
            auto known = [](const xt::xtensor<float, 2>& O) { return O.size() ? &O : nullptr; };
            auto yardstick = [&](std::size_t z) -> const xt::xtensor<float, 2>* {
                const bool causal = zoo[z].exact == attn::Exact::causal;
                if (z == dense) return tiled_reference ? known(exact_full) : nullptr;
                if (zoo[z].family == "exact") return known(causal ? dense_causal : dense_full);
                if (zoo[z].exact == attn::Exact::shared_qk) return known(exact_shared);
                return known(causal ? exact_causal : (tiled_reference ? exact_full : dense_full));
            };
            // ⟨Measure the error of every mechanism⟩ 14-efficiency-zoo.md:453
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                if (z == dense && n > dense_n_max) continue;  // dense attention stops here
                const xt::xtensor<float, 2> O = zoo[z].prepare(inputs, threads)();  // n×d_v
                if (z == dense) dense_full = O;
                if (const xt::xtensor<float, 2>* exact = yardstick(z))
                    errors[z][n] = attn::relative_error(O, *exact);
            }
            // ⟨Time every mechanism on one thread⟩ 14-efficiency-zoo.md:467
            {
                std::vector<attn::CostCurve*> timed;
                std::vector<attn::Call> calls;
                for (std::size_t z = 0; z < zoo.size(); ++z) {
                    timed.push_back(&curves[z]);
                    const bool skip = z == dense && n > dense_n_max;  // an empty call: no point
                    calls.push_back(skip ? attn::Call() : zoo[z].prepare(inputs, threads));
                }
                attn::measure_costs(timed, double(n), calls, rounds(n));
            }
            // ⟨Time the exact mechanisms on every core⟩ 14-efficiency-zoo.md:484
            if (all_threads > 1 && n <= dense_n_max) {
                std::vector<attn::CostCurve*> timed;
                std::vector<attn::Call> calls;
                for (std::size_t e = 0; e < exact_ids.size(); ++e) {
                    timed.push_back(&curves_all[e]);
                    calls.push_back(zoo[exact_ids[e]].prepare(inputs, unsigned(all_threads)));
                }
                attn::measure_costs(timed, double(n), calls, rounds(n));
            }
            std::cout << "  measured n = " << n << std::endl;
        }
        // ⟨Draw time, memory and error against n⟩ 14-efficiency-zoo.md:539
        for (int group = 0; group < 2; ++group) {
            const std::string file = group == 0 ? "patterns" : "approximations";
            std::vector<attn::Series> time_curves, memory_curves, error_curves;
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                const bool exact = zoo[z].family == "exact";
                if (!exact && (group == 0) != (zoo[z].family == "pattern")) continue;
                attn::Series t = curves[z].time(), m = curves[z].memory();
                t.label = legend(zoo[z].name, t, fit_largest(curves[z], false), double(n_max));
                m.label = legend(zoo[z].name, m, fit_largest(curves[z], true), double(n_max));
                time_curves.push_back(t), memory_curves.push_back(m);
                attn::Series e = error_series(errors[z]);
                e.label = legend(zoo[z].name, e, std::nullopt, double(n_max));
                if (!e.x.empty()) error_curves.push_back(e);  // empty only without a reference
            }
            attn::plot::LinePlotStyle time_style{"", "n (tokens)", "seconds (1 thread)"};
            time_style.log_x = time_style.log_y = true;
            time_style.key = "above";
            attn::plot::lines(out / ("time_" + file + ".svg"), time_curves, time_style);
            attn::plot::LinePlotStyle memory_style{"", "n (tokens)", "MiB"};
            memory_style.log_x = memory_style.log_y = true;
            memory_style.key = "above";
            attn::plot::lines(out / ("memory_" + file + ".svg"), memory_curves, memory_style);
            attn::plot::LinePlotStyle error_style{"", "n (tokens)",
                                                  "‖O − O_{exact}‖ / ‖O_{exact}‖"};
            error_style.log_x = error_style.log_y = true;
            error_style.key = "above";
            attn::plot::lines(out / ("error_" + file + ".svg"), error_curves, error_style);
        }
        // ⟨Write the table of slopes and crossovers⟩ 14-efficiency-zoo.md:635
        {
            std::ofstream slopes(out / "slopes.csv");
            slopes << "mechanism,family,lengths fitted,time slope,memory slope,"
                      "cheaper than dense in time,cheaper than dense in memory\n";
            auto slope = [](const std::optional<attn::SlopeFit>& fit) {
                return fit ? fit->text() : std::string("– (fewer than 5 lengths)");
            };
            auto overtakes = [&](std::size_t z, bool memory) -> std::string {
                if (z == dense) return "–";
                try {
                    return attn::find_crossover(curves[z], curves[dense], memory).describe();
                } catch (const std::invalid_argument&) {
                    return "– (fewer than 3 lengths shared with dense)";
                }
            };
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                const attn::CostCurve& c = curves[z];
                const std::size_t fitted = std::min(c.n.size(), attn::min_cost_lengths);
                const double from = c.n[c.n.size() - fitted];
                slopes << '"' << zoo[z].name << "\"," << zoo[z].family << ','
                       << attn::format_number(from) << "–" << attn::format_number(c.n.back())
                       << ",\"" << slope(fit_largest(c, false)) << "\",\""
                       << slope(fit_largest(c, true)) << "\",\"" << overtakes(z, false)
                       << "\",\"" << overtakes(z, true) << "\"\n";
            }
        }
        // ⟨Write the table relative to dense attention⟩ 14-efficiency-zoo.md:699
        {
            std::ofstream table(out / "relative.csv");
            table << "mechanism,family,speed 1K,speed 2K,speed 4K,"
                     "memory 1K,memory 2K,memory 4K,error 1K,error 4K,error 16K\n";
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                table << '"' << zoo[z].name << "\"," << zoo[z].family;
                for (std::size_t n : {1024, 2048, 4096})
                    table << ',' << ratio_cell(cost_at(curves[dense], n, false),
                                               cost_at(curves[z], n, false));
                for (std::size_t n : {1024, 2048, 4096})
                    table << ',' << ratio_cell(cost_at(curves[z], n, true),
                                               cost_at(curves[dense], n, true));
                for (std::size_t n : {1024, 4096, 16384}) {
                    const auto e = errors[z].find(n);
                    const bool known = e != errors[z].end();
                    table << ',' << (known ? attn::format_number(e->second, 2) : "–");
                }
                table << '\n';
            }
        }
        // ⟨Draw speed against error⟩ 14-efficiency-zoo.md:745
        {
            const std::size_t n = dense_n_max;
            std::vector<attn::Series> points;
            std::string missing;
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                const double speed =
                    cost_at(curves[dense], n, false) / cost_at(curves[z], n, false);
                const auto e = errors[z].find(n);
                if (!std::isfinite(speed) || e == errors[z].end()) {
                    missing += (missing.empty() ? "" : ", ") + zoo[z].name;
                    continue;
                }
                const double error = std::max(e->second, 1e-8);  // a floor for the logarithm
                points.push_back({zoo[z].name, {std::log10(error)}, {speed}, "points"});
            }
            attn::plot::LinePlotStyle style{"", "decimal logarithm of the relative error",
                                            "speed relative to dense attention (1 thread)"};
            style.log_y = true;
            style.key = "outside right";
            attn::plot::lines(out / "speed_error.svg", points, style);
            results.add("n_scatter", double(n));
            results.add_text("scatter_missing", missing.empty() ? "none" : missing);
        }
        // ⟨Write the table of the exact mechanisms on every core⟩ 14-efficiency-zoo.md:792
        {
            std::ofstream table(out / "all_threads.csv");
            table << "mechanism,threads,ms 1K,ms 2K,ms 4K,speed 1K,speed 2K,speed 4K\n";
            for (std::size_t e = 0; e < exact_ids.size(); ++e) {
                const attn::CostCurve& c = curves_all[e];
                table << '"' << zoo[exact_ids[e]].name << "\"," << c.threads;
                for (std::size_t n : {1024, 2048, 4096}) {
                    const double ms = 1e3 * cost_at(c, n, false);
                    table << ',' << (std::isfinite(ms) ? attn::format_number(ms, 3) : "–");
                }
                for (std::size_t n : {1024, 2048, 4096})
                    table << ',' << ratio_cell(cost_at(curves_all[0], n, false),
                                               cost_at(c, n, false));
                table << '\n';
            }
        }
        // ⟨Compare the tiled kernel with dense attention⟩ 14-efficiency-zoo.md:822
        auto versus_dense = [&](const attn::CostCurve& flash, const attn::CostCurve& baseline) {
            const double ratio = cost_at(baseline, dense_n_max, false) /
                                 cost_at(flash, dense_n_max, false);
            if (!std::isfinite(ratio)) return std::string("– (not measured)");
            if (ratio >= 1)
                return attn::format_number(ratio, 2) + " times as fast as dense attention";
            return "slower than dense attention (" + attn::format_number(1 / ratio, 2) +
                   " times as long)";
        };
        std::string flash_one = "– (chapter 13 not in this build)", flash_all = flash_one;
        for (std::size_t e = 0; e < exact_ids.size(); ++e)
            if (zoo[exact_ids[e]].name == "flash (ch. 13)") {
                flash_one = versus_dense(curves[exact_ids[e]], curves[dense]);
                flash_all = all_threads > 1 ? versus_dense(curves_all[e], curves_all[0])
                                            : "– (this machine has one core)";
            }
        results.add_text("flash_vs_dense", flash_one);
        results.add_text("flash_vs_dense_all_threads", flash_all);
        std::size_t fastest = 1;
        for (std::size_t z = 1; z < zoo.size(); ++z)
            if (cost_at(curves[z], n_max, false) < cost_at(curves[fastest], n_max, false))
                fastest = z;
        results.add_text("fastest_at_n_max", fastest < zoo.size() ? zoo[fastest].name : "–");
        // ⟨Record what was measured⟩ 14-efficiency-zoo.md:850
        {
            std::string names;
            for (std::size_t z = 0; z < zoo.size(); ++z) names += (z ? ", " : "") + zoo[z].name;
            results.add_text("mechanisms", names);
            results.add("mechanism_count", double(zoo.size()));
            results.add("n_min", double(n_min));
            results.add("n_max", double(n_max));
            results.add("dense_n_max", double(dense_n_max));
            results.add("reformer_error_n_max", double(reformer_error_n_max));
            results.add("threads", threads);
            results.add("all_threads", all_threads);
            results.add_text("repeats", "5 up to n = 1024, 3 up to 4096, 2 beyond");
        }
    });
}
