// Generated from chapters/14-efficiency-zoo.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/zoo.hpp"

extern "C" int openblas_get_num_threads(void);  // OpenBLAS's own call (not part of CBLAS)

namespace {

// ⟨Keep what was measured⟩ 14-efficiency-zoo.md:327
/// One mechanism at one length.
struct Measurement {
    double seconds = 0, peak_mib = 0, error = NAN;
    xt::xtensor<float, 2> output;
};

/// Everything measured for one mechanism, by length.
struct Record {
    std::map<std::size_t, double> seconds, peak_mib, error;
};

// ⟨Measure one mechanism at one length⟩ 14-efficiency-zoo.md:305
/// Peak memory, output and median time of `call` (the memory call doubles as the warm-up).
Measurement measure(const std::function<xt::xtensor<float, 2>()>& call, int repeats)
{
    Measurement result;
    result.peak_mib = double(attn::peak_memory_bytes([&] {
        result.output = call();
        return 0;
    })) / double(1 << 20);
    std::vector<double> seconds;
    for (int r = 0; r < repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        const auto O = call();
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        attn::do_not_optimise(O);
    }
    std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
    result.seconds = seconds[seconds.size() / 2];
    return result;
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch14", "every mechanism of the book on the same inputs",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Run the zoo at every length⟩ 14-efficiency-zoo.md:340
        const std::vector<attn::Mechanism> zoo = attn::zoo_mechanisms();
        std::vector<Record> records(zoo.size());
        const std::size_t d = 64, n_max = options.quick ? 1024 : 16384;
        const std::size_t dense_n_max = options.quick ? 1024 : 4096, reformer_error_n_max = options.quick ? 1024 : 2048;
        for (std::size_t n = 256; n <= n_max; n *= 2) {
            const attn::ZooInputs inputs{attn::random_normal<float>(n, d, 1.0, rng), attn::random_normal<float>(n, d, 1.0, rng),
                                         attn::random_normal<float>(n, d, 1.0, rng)};
            // ⟨Compute the exact outputs at this length⟩ 14-efficiency-zoo.md:371
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
                dense_causal = attn::scaled_dot_product_attention(inputs.Q, inputs.K, inputs.V, attn::causal_mask(n));
            #endif
            if (n <= reformer_error_n_max) exact_shared = attn::shared_qk_reference(inputs.Q, inputs.V);
            auto known = [](const xt::xtensor<float, 2>& O) { return O.size() ? &O : nullptr; };
            auto yardstick = [&](std::size_t z) -> const xt::xtensor<float, 2>* {
                const bool causal = zoo[z].exact == attn::Exact::causal;
                if (z == 0) return tiled_reference ? known(exact_full) : nullptr;  // dense against the tiled kernel
                if (zoo[z].family == "exact") return known(causal ? dense_causal : dense_full);
                if (zoo[z].exact == attn::Exact::shared_qk) return known(exact_shared);
                return known(causal ? exact_causal : (tiled_reference ? exact_full : dense_full));
            };
            const int repeats = n <= 2048 ? 3 : 1;
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                if (z == 0 && n > dense_n_max) continue;  // zoo_mechanisms() lists dense attention first
                const Measurement m = measure(zoo[z].prepare(inputs), repeats);
                records[z].seconds[n] = m.seconds;
                records[z].peak_mib[n] = m.peak_mib;
                if (z == 0) dense_full = m.output;
                if (const xt::xtensor<float, 2>* exact = yardstick(z)) records[z].error[n] = attn::relative_error(m.output, *exact);
            }
            std::cout << "  measured n = " << n << std::endl;
        }
        const std::size_t fit_from = options.quick ? 256 : 1024;
        // ⟨Fit slopes and draw time, memory and error against n⟩ 14-efficiency-zoo.md:397
        auto series_of = [&](std::size_t z, const std::map<std::size_t, double>& values, bool with_slope) {
            attn::Series s{zoo[z].name, {}, {}};
            std::vector<double> fit_x, fit_y;
            for (const auto& [n, value] : values) {
                s.x.push_back(double(n));
                s.y.push_back(value);
                if (n >= fit_from) fit_x.push_back(double(n)), fit_y.push_back(value);
            }
            if (with_slope && fit_x.size() >= 2) s.label += " (slope " + attn::format_number(attn::loglog_slope(fit_x, fit_y)) + ")";
            return s;
        };
        for (int group = 0; group < 2; ++group) {
            const std::string which = group == 0 ? "exact and patterns" : "approximations";
            const std::string file = group == 0 ? "patterns" : "approximations";
            std::vector<attn::Series> time_curves, memory_curves, error_curves;
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                const bool in_group = zoo[z].family == "exact" || (group == 0) == (zoo[z].family == "pattern");
                if (!in_group) continue;
                time_curves.push_back(series_of(z, records[z].seconds, true));
                memory_curves.push_back(series_of(z, records[z].peak_mib, true));
                if (!records[z].error.empty()) error_curves.push_back(series_of(z, records[z].error, false));
            }
            attn::plot::LinePlotStyle time_style{"Time of one call: " + which + " (d = 64, float)", "n (tokens)", "seconds"};
            time_style.log_x = time_style.log_y = true;
            attn::plot::lines(out / ("time_" + file + ".svg"), time_curves, time_style);
            attn::plot::LinePlotStyle memory_style{"Peak memory of one call: " + which, "n (tokens)", "MiB"};
            memory_style.log_x = memory_style.log_y = true;
            attn::plot::lines(out / ("memory_" + file + ".svg"), memory_curves, memory_style);
            if (!error_curves.empty()) {
                attn::plot::LinePlotStyle error_style{"Relative error against exact attention: " + which, "n (tokens)",
                                                      "‖O − O_{exact}‖ / ‖O_{exact}‖"};
                error_style.log_x = error_style.log_y = true;
                error_style.key = "outside right";
                attn::plot::lines(out / ("error_" + file + ".svg"), error_curves, error_style);
            }
        }
        // ⟨Write the table relative to dense attention⟩ 14-efficiency-zoo.md:502
        {
            const std::size_t dense = 0;  // zoo_mechanisms() lists dense attention first
            std::ofstream table(out / "relative.csv");
            table << "mechanism,family,speed 1K,speed 2K,speed 4K,memory 1K,memory 2K,memory 4K,error 1K,error 4K,error 16K\n";
            auto cell = [](const std::map<std::size_t, double>& values, std::size_t n, auto&& f) -> std::string {
                const auto it = values.find(n);
                return it == values.end() || !std::isfinite(it->second) ? "–" : f(it->second);
            };
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                table << '"' << zoo[z].name << "\"," << zoo[z].family;
                for (std::size_t n : {1024, 2048, 4096})
                    table << ',' << cell(records[z].seconds, n, [&](double t) {
                        return records[dense].seconds.count(n) ? attn::format_number(records[dense].seconds.at(n) / t, 2) + "×" : std::string("–");
                    });
                for (std::size_t n : {1024, 2048, 4096})
                    table << ',' << cell(records[z].peak_mib, n, [&](double mem) {
                        return records[dense].peak_mib.count(n) ? attn::format_number(mem / records[dense].peak_mib.at(n), 2) + "×" : std::string("–");
                    });
                for (std::size_t n : {1024, 4096, 16384})
                    table << ',' << cell(records[z].error, n, [](double e) { return attn::format_number(e, 2); });
                table << '\n';
            }
        }
        // ⟨Draw speed against error⟩ 14-efficiency-zoo.md:549
        {
            const std::size_t n = dense_n_max;
            std::vector<attn::Series> points;
            for (std::size_t z = 1; z < zoo.size(); ++z) {
                if (!records[z].seconds.count(n) || !records[z].error.count(n) || !records[0].seconds.count(n)) continue;
                const double error = std::max(records[z].error.at(n), 1e-8);  // a floor for the logarithm
                points.push_back({zoo[z].name, {std::log10(error)}, {records[0].seconds.at(n) / records[z].seconds.at(n)}, "points"});
            }
            attn::plot::LinePlotStyle style{"Speed against error at n = " + std::to_string(n), "decimal logarithm of the relative error",
                                            "speed relative to dense attention"};
            style.log_y = true;
            style.key = "outside right";
            attn::plot::lines(out / "speed_error.svg", points, style);
            results.add("n_scatter", double(n));
        }
        // ⟨Record what was measured⟩ 14-efficiency-zoo.md:578
        {
            std::string names;
            for (std::size_t z = 0; z < zoo.size(); ++z) names += (z ? ", " : "") + zoo[z].name;
            results.add_text("mechanisms", names);
            results.add("mechanism_count", double(zoo.size()));
            results.add("dense_n_max", double(dense_n_max));
            results.add("reformer_error_n_max", double(reformer_error_n_max));
            results.add("fit_from", double(fit_from));
            results.add("openblas_threads", double(openblas_get_num_threads()));
        #if __has_include("attn/flash_attention.hpp")
            results.add("flash_threads", double(attn::detail::plan_flash({}, 64, 64).threads));
        #else
            results.add_text("flash_threads", "– (chapter 13 not in this build)");
        #endif
            std::ofstream slopes(out / "slopes.csv");
            slopes << "mechanism,family,time slope,memory slope,largest n\n";
            for (std::size_t z = 0; z < zoo.size(); ++z) {
                std::vector<double> x, t, mem;
                for (const auto& [n, seconds] : records[z].seconds)
                    if (n >= fit_from) x.push_back(double(n)), t.push_back(seconds), mem.push_back(records[z].peak_mib.at(n));
                const bool fit = x.size() >= 2;
                slopes << '"' << zoo[z].name << "\"," << zoo[z].family << ','
                       << (fit ? attn::format_number(attn::loglog_slope(x, t), 3) : "–") << ','
                       << (fit ? attn::format_number(attn::loglog_slope(x, mem), 3) : "–") << ','
                       << records[z].seconds.rbegin()->first << '\n';
            }
        }
    });
}
