// Generated from chapters/06-sliding-window.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xreducer.hpp>
#include <xtensor/xview.hpp>

#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/sliding_window.hpp"

namespace {

// ⟨Find how many layers it takes to reach each token⟩ 06-sliding-window.md:701
/// For each (i, j): the fewest layers of `mask` after which token i depends on token j,
/// or 0 if more than max_layers are needed.
xt::xtensor<double, 2> layers_to_reach(const attn::Mask& mask, int max_layers)
{
    const std::size_t n = mask.shape(0);
    xt::xtensor<double, 2> layers = xt::zeros<double>({n, n});  // n×n
    // n×n: reached within L layers
    attn::Mask reach = mask;
    for (int L = 1; L <= max_layers; ++L) {
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j)
                if (reach(i, j) && layers(i, j) == 0) layers(i, j) = L;
        reach = attn::compose_masks(reach, mask);
    }
    return layers;
}

// ⟨Decode a sequence, keeping only a checksum⟩ 06-sliding-window.md:588
/// Decode n tokens through a rolling cache of `window`, as a generator would: each
/// output row is used (summed into a checksum) and dropped. Returns the checksum.
double decode_and_forget(const xt::xtensor<float, 2>& Q, const xt::xtensor<float, 2>& K,
                         const xt::xtensor<float, 2>& V, std::size_t window)
{
    const std::size_t n = Q.shape(0), d_k = Q.shape(1), d_v = V.shape(1);
    attn::RollingKVCache<float> cache(window, d_k, d_v);
    std::vector<float> o(d_v);  // d_v
    double checksum = 0;
    for (std::size_t t = 0; t < n; ++t) {
        cache.append(K.data() + t * d_k, V.data() + t * d_v);
        cache.attend(Q.data() + t * d_k, o.data());
        for (float value : o) checksum += value;
    }
    return checksum;
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch06",
                             "sliding-window attention: pattern, banded kernel, "
                             "rolling buffer, cost",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Choose the lengths to measure⟩ 06-sliding-window.md:1074
        const std::size_t w_bench = 128;
        const std::size_t n_bench_min = options.bench ? 256 : 128;
        const std::size_t n_bench_max = options.quick ? 4096 : options.bench ? 16384 : 8192;
        const std::size_t n_dense_max = options.bench ? 4096 : 2048;
        const int repeats = options.quick ? 3 : 5;
        results.add("bench_window", double(w_bench));
        results.add("bench_n_min", double(n_bench_min));
        results.add("bench_n_max", double(n_bench_max));
        results.add("dense_n_max", double(n_dense_max));
        results.add("bench_repeats", repeats);
        results.add("cost_threads", 1);
        // ⟨Draw the window pattern⟩ 06-sliding-window.md:978
        {
            const std::vector<std::string> words = {
                "the", "cat",   "sat", "on",   "the", "mat",  "because", "it",
                "was", "tired", "and", "then", "it",  "fell", "asleep",  "there"};
            const std::size_t n_words = words.size(), w_words = 4;
            const auto Q_w = attn::random_normal<double>(n_words, 8, 1.0, rng);  // n×8
            const auto K_w = attn::random_normal<double>(n_words, 8, 1.0, rng);  // n×8
            const attn::Mask mask = attn::sliding_window_mask(n_words, w_words);
            attn::plot::HeatmapStyle style{"Sliding-window attention weights, w = 4", words,
                                           words};
            style.allowed = mask;
            attn::plot::heatmap(out / "window_weights.svg",
                                attn::attention_weights(Q_w, K_w, mask), style);
        }
        {
            const std::size_t w_ring = 4, steps = 10;
            // step × slot: token held
            xt::xtensor<double, 2> slot_token = xt::zeros<double>({steps, w_ring});
            attn::Mask filled = xt::zeros<bool>({steps, w_ring});
            for (std::size_t t = 0; t < steps; ++t) {
                if (t > 0)
                    xt::row(slot_token, t) = xt::row(slot_token, t - 1),
                                        xt::row(filled, t) = xt::row(filled, t - 1);
                slot_token(t, t % w_ring) = double(t), filled(t, t % w_ring) = true;
            }
            std::vector<std::string> step_labels, slot_labels;
            for (std::size_t t = 0; t < steps; ++t)
                step_labels.push_back("token " + std::to_string(t) + " arrives");
            for (std::size_t s = 0; s < w_ring; ++s)
                slot_labels.push_back("slot " + std::to_string(s));
            attn::plot::HeatmapStyle style{"Token held in each slot of a rolling buffer of 4",
                                           step_labels, slot_labels};
            style.x_label = "slot", style.y_label = "step";
            style.probabilities = false;
            style.colorbar_label = "token index";
            style.allowed = filled;
            attn::plot::heatmap(out / "rolling_buffer.svg", slot_token, style);
        }
        // ⟨Compare the banded kernel with dense masked attention⟩ 06-sliding-window.md:427
        const std::size_t n_compare = 1000, w_compare = 96;
        {
            const auto Q_c = attn::random_normal<double>(n_compare, 64, 1.0, rng);  // n×64
            const auto K_c = attn::random_normal<double>(n_compare, 64, 1.0, rng);  // n×64
            const auto V_c = attn::random_normal<double>(n_compare, 64, 1.0, rng);  // n×64
            const attn::Mask mask = attn::sliding_window_mask(n_compare, w_compare);
            const xt::xtensor<double, 2> O_dense =
                attn::scaled_dot_product_attention(Q_c, K_c, V_c, mask);
            const xt::xtensor<double, 2> O_band =
                attn::sliding_window_attention(Q_c, K_c, V_c, w_compare);
            const xt::xtensor<double, 2> O_rows =
                attn::sliding_window_attention_by_rows(Q_c, K_c, V_c, w_compare);
            const xt::xtensor<float, 2> Q_f = Q_c, K_f = K_c, V_f = V_c;
            const xt::xtensor<float, 2> O_dense_f =
                attn::scaled_dot_product_attention(Q_f, K_f, V_f, mask);
            const xt::xtensor<float, 2> O_band_f =
                attn::sliding_window_attention(Q_f, K_f, V_f, w_compare);
            results.add("compare_n", double(n_compare));
            results.add("compare_window", double(w_compare));
            results.add("max_abs_error_double", xt::amax(xt::abs(O_band - O_dense))(), 2);
            results.add("max_abs_error_vs_reference", xt::amax(xt::abs(O_band - O_rows))(), 2);
            results.add("max_abs_error_float", xt::amax(xt::abs(O_band_f - O_dense_f))(), 2);
        }
        // ⟨Compare the rolling buffer with the batch kernel⟩ 06-sliding-window.md:568
        {
            const auto Q_c = attn::random_normal<float>(n_compare, 64, 1.0, rng);  // n×64
            const auto K_c = attn::random_normal<float>(n_compare, 64, 1.0, rng);  // n×64
            const auto V_c = attn::random_normal<float>(n_compare, 64, 1.0, rng);  // n×64
            const xt::xtensor<float, 2> O_batch =
                attn::sliding_window_attention(Q_c, K_c, V_c, w_compare);
            const xt::xtensor<float, 2> O_decode =
                attn::decode_with_rolling_cache(Q_c, K_c, V_c, w_compare);
            results.add("max_abs_error_rolling_vs_batch",
                        xt::amax(xt::abs(O_decode - O_batch))(), 2);
        }
        // ⟨Draw the receptive field across layers⟩ 06-sliding-window.md:744
        {
            const std::size_t n_field = 32, w_field = 4;
            const xt::xtensor<double, 2> layers =
                layers_to_reach(attn::sliding_window_mask(n_field, w_field), 16);
            attn::plot::HeatmapStyle style{
                "Layers until query i depends on key j (w = 4)", {}, {}};
            style.probabilities = false;
            style.colorbar_label = "layers";
            style.allowed = layers > 0.0;
            attn::plot::heatmap(out / "layers_to_reach.svg", layers, style);
        }
        {
            const std::size_t n_field = 128;
            const int max_layers = 8;
            std::vector<attn::Series> curves;
            for (std::size_t w : {2, 4, 8}) {
                attn::Series measured{
                    "w = " + std::to_string(w) + ", measured", {}, {}, "points"};
                attn::Series formula{"L(w-1)+1, w = " + std::to_string(w), {}, {}, "lines"};
                const attn::Mask mask = attn::sliding_window_mask(n_field, w);
                attn::Mask reach = mask;  // n×n: token i depends on token j within L layers
                for (int L = 1; L <= max_layers; ++L) {
                    const double field = double(xt::sum(xt::row(reach, n_field - 1))());
                    const double expected = double(L * (w - 1) + 1);
                    measured.x.push_back(L), measured.y.push_back(field);
                    formula.x.push_back(L), formula.y.push_back(expected);
                    if (w == 4 && L == max_layers) {
                        results.add("field_window", double(w));
                        results.add("field_layers", double(L));
                        results.add("field_measured", field);
                        results.add("field_formula", expected);
                    }
                    reach = attn::compose_masks(reach, mask);
                }
                curves.push_back(measured);
                curves.push_back(formula);
            }
            attn::plot::LinePlotStyle style{"", "layers L", "tokens the last token depends on"};
            attn::plot::lines(out / "receptive_field.svg", curves, style);
        }
        // ⟨Measure the rolling buffer's memory against n⟩ 06-sliding-window.md:623
        {
            attn::Series measured{"rolling buffer: measured peak of the process", {}, {}};
            attn::Series buffer{
                "rolling buffer: its own size w·(d_k+d_v)·4 B", {}, {}, "lines"};
            attn::Series full{"full KV cache: n·(d_k+d_v)·4 B", {}, {}, "lines"};
            double peak_max = 0;
            for (std::size_t n = 256; n <= n_bench_max; n *= 2) {
                const auto Q_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
                const auto K_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
                const auto V_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
                const double peak = double(attn::peak_memory_bytes(
                    [&] { return decode_and_forget(Q_n, K_n, V_n, w_bench); }));
                peak_max = std::max(peak_max, peak);
                const double cache_bytes =
                    double(attn::RollingKVCache<float>(w_bench, 64, 64).bytes());
                for (attn::Series* s : {&measured, &buffer, &full}) s->x.push_back(double(n));
                // one page: the resolution of the kernel's count
                measured.y.push_back(std::max(peak, 4096.0) / 1024);
                buffer.y.push_back(cache_bytes / 1024);
                full.y.push_back(double(n * (64 + 64) * sizeof(float)) / 1024);
            }
            results.add("rolling_cache_kib", buffer.y.back());
            results.add("decode_peak_kib_max", peak_max / 1024);
            results.add("full_cache_kib_at_n_max", full.y.back());
            attn::plot::LinePlotStyle style{"", "n (tokens decoded)", "memory (KiB)"};
            style.log_x = style.log_y = true;
            attn::plot::lines(out / "decode_memory.svg", {full, buffer, measured}, style);
        }
        // ⟨Time the banded kernel and dense attention against n⟩ 06-sliding-window.md:806
        attn::CostCurve band{"sliding window", 1}, dense{"dense", 1};
        for (std::size_t n = n_bench_min; n <= n_bench_max; n *= 2) {
            const auto Q_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
            const auto K_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
            const auto V_n = attn::random_normal<float>(n, 64, 1.0, rng);  // n×64
            const attn::Mask mask = n <= n_dense_max ? attn::sliding_window_mask(n, w_bench)
                                                     : attn::Mask();  // n×n, outside the clock
            const attn::Call band_call = [&] {
                return attn::sliding_window_attention(Q_n, K_n, V_n, w_bench);
            };
            attn::Call dense_call;  // empty beyond n_dense_max: dense is skipped there
            if (n <= n_dense_max)
                dense_call = [&] {
                    return attn::scaled_dot_product_attention(Q_n, K_n, V_n, mask);
                };
            attn::measure_costs({&band, &dense}, double(n), {band_call, dense_call}, repeats);
        }
        // ⟨Fit the slopes and find the crossover⟩ 06-sliding-window.md:836
        const double band_fit_from = 2.0 * double(w_bench);
        const attn::SlopeFit band_time_fit = band.time_fit(band_fit_from);
        const attn::SlopeFit band_memory_fit = band.memory_fit(band_fit_from);
        const attn::SlopeFit dense_time_fit = dense.time_fit();
        results.add("band_fit_from", band_fit_from);
        const attn::SlopeFit dense_memory_fit = dense.memory_fit();
        results.add_fit("time_slope", band_time_fit);
        results.add_fit("memory_slope", band_memory_fit);
        results.add_fit("dense_time_slope", dense_time_fit);
        results.add_fit("dense_memory_slope", dense_memory_fit);
        results.add_text("time_crossover", attn::find_crossover(band, dense).describe());
        results.add_text("memory_crossover",
                         attn::find_crossover(band, dense, true).describe());
        const std::size_t shared = dense.n.size() - 1;  // dense's largest n, measured by both
        results.add("band_seconds_at_n_max", band.wall_seconds.back());
        results.add("band_mib_at_n_max", band.peak_mib.back());
        results.add("dense_seconds_at_dense_n_max", dense.wall_seconds[shared]);
        results.add("band_seconds_at_dense_n_max", band.wall_seconds[shared]);
        results.add("dense_mib_at_dense_n_max", dense.peak_mib[shared]);
        results.add("band_mib_at_dense_n_max", band.peak_mib[shared]);
        // ⟨Draw the cost against n⟩ 06-sliding-window.md:859
        {
            const auto with_fit = [](attn::Series series, const attn::SlopeFit& fit) {
                series.label += ", slope " + fit.text();
                return series;
            };
            attn::plot::LinePlotStyle time_style{"", "n (tokens)", "seconds (fastest round)"};
            time_style.log_x = time_style.log_y = true;
            attn::plot::lines(out / "cost_time.svg",
                              {with_fit(dense.time(), dense_time_fit),
                               with_fit(band.time(), band_time_fit)}, time_style);
            attn::plot::LinePlotStyle memory_style{"", "n (tokens)", "peak MiB one call adds"};
            memory_style.log_x = memory_style.log_y = true;
            attn::plot::lines(out / "cost_memory.svg",
                              {with_fit(dense.memory(), dense_memory_fit),
                               with_fit(band.memory(), band_memory_fit)}, memory_style);
        }
    });
}
