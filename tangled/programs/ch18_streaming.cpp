// Generated from chapters/18-streaming.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "attn/kv_cache.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/position_model.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/streaming.hpp"

namespace {

// ⟨Put a first token before every example⟩ 18-streaming.md:390
/// The same example with a first token `first` in front (it has no target).
attn::TaskExample with_first_token(const attn::TaskExample& example, std::size_t first)
{
    attn::TaskExample out{{first}, {attn::no_target}, {attn::no_target}};
    for (std::size_t i = 0; i < example.tokens.size(); ++i) {
        out.tokens.push_back(example.tokens[i]);
        out.targets.push_back(example.targets[i]);
        const std::size_t source = example.sources[i];
        out.sources.push_back(source == attn::no_target ? source : source + 1);
    }
    return out;
}

// ⟨Draw the recent-marker task⟩ 18-streaming.md:411
/// @brief Ids below `markers` are markers, drawn with probability `rate`, the others
/// ordinary; the target at i is the latest marker among the last `reach` tokens, or
/// `none` (an id no input uses) if there is no marker among them.
attn::TaskExample recent_marker_example(std::size_t n, std::size_t markers,
                                        std::size_t ordinary, std::size_t none,
                                        std::size_t reach, double rate,
                                        std::mt19937_64& rng)
{
    std::bernoulli_distribution is_marker(rate);
    std::uniform_int_distribution<std::size_t> marker(0, markers - 1),
        other(markers, markers + ordinary - 1);
    attn::TaskExample example{std::vector<std::size_t>(n), std::vector<std::size_t>(n),
                              std::vector<std::size_t>(n, attn::no_target)};
    std::size_t last = attn::no_target;  // the position of the latest marker
    for (std::size_t i = 0; i < n; ++i) {
        example.tokens[i] = is_marker(rng) ? marker(rng) : other(rng);
        if (example.tokens[i] < markers) last = i;
        const bool recent = last != attn::no_target && i - last < reach;
        example.sources[i] = recent ? last : attn::no_target;
        example.targets[i] = recent ? example.tokens[last] : none;
    }
    return example;
}

// ⟨Measure accuracy under a pattern⟩ 18-streaming.md:454
/// Fraction of the positions with a target that the model gets right under a window
/// of w with s sinks, over `count` fresh sequences of n tokens.
double streaming_accuracy(const attn::PositionModel<float>& model,
                          const attn::PositionTask& task, std::size_t n,
                          std::size_t window, std::size_t sinks,
                          attn::SinkPositions positions, std::size_t count,
                          std::uint64_t seed)
{
    std::mt19937_64 rng(seed);  // the same sequences for every pattern
    std::size_t counted = 0, correct = 0;
    for (std::size_t s = 0; s < count; ++s) {
        const attn::TaskExample example = task.draw(n, rng);
        const auto logits = attn::streaming_model_logits(model, example.tokens, window,
                                                         sinks, positions);
        const auto scored = attn::task_loss(logits, example.targets);
        counted += scored.counted;
        correct += scored.correct;
    }
    return counted ? double(correct) / double(counted) : 0.0;
}

// ⟨Name the tokens of the marker task⟩ 18-streaming.md:437
/// Labels for figures: markers A, B, …, ordinary tokens a, b, …, the first token *.
std::vector<std::string> marker_letters(const std::vector<std::size_t>& tokens,
                                        std::size_t markers, std::size_t none)
{
    std::vector<std::string> letters;
    for (std::size_t t : tokens)
        letters.push_back(t < markers ? std::string(1, char('A' + t))
                          : t < none  ? std::string(1, char('a' + t - markers))
                                      : "*");
    return letters;
}

// ⟨Measure the attention on the first token⟩ 18-streaming.md:484
/// Mean weight that query i puts on key 0 (full causal attention), for each head of
/// each layer and each query position, over `count` fresh sequences of n tokens.
/// @return [layer·h + head][i], i = 0 … n−1 (query 0 sees only key 0: weight 1)
std::vector<std::vector<double>> first_token_mass(
    const attn::PositionModel<float>& model, const attn::PositionTask& task,
    std::size_t n, std::size_t count, std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    std::vector<std::vector<double>> mass;
    for (std::size_t s = 0; s < count; ++s) {
        const attn::TaskExample example = task.draw(n, rng);
        const auto f = attn::position_model_forward(model, example.tokens);
        std::size_t k = 0;
        for (const auto& layer : f.layers)
            for (const auto& weights : layer.weights) {  // n×n, one head
                if (mass.size() <= k) mass.emplace_back(n, 0.0);
                for (std::size_t i = 0; i < n; ++i)
                    mass[k][i] += weights(i, 0) / double(count);
                ++k;
            }
    }
    return mass;
}

/// The mean of a head's mass over the queries that have a choice (i ≥ 1).
double mean_after_first(const std::vector<double>& mass_by_query)
{
    double total = 0;
    for (std::size_t i = 1; i < mass_by_query.size(); ++i) total += mass_by_query[i];
    return total / double(mass_by_query.size() - 1);
}

// ⟨Hold what a model learned and how it reads⟩ 18-streaming.md:617
/// A model trained on one task, the weight its heads put on the first token
/// (first_token_mass), and its accuracy against length under the four patterns.
struct TaskRun {
    attn::PositionModel<float> model;
    std::vector<std::vector<double>> mass;
    attn::Series full{"full attention", {}, {}}, plain{"window", {}, {}},
        sunk{"window + sinks at their text positions", {}, {}},
        cached{"window + sinks at their cache positions", {}, {}};
};

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch18",
                             "streaming: a sliding window that keeps its sinks",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        const attn::BlasThreads one_thread(1);  // small matrices: one thread
        // ⟨Draw the sink-window mask⟩ 18-streaming.md:907
        {
            const std::size_t n = 16, w = 4, s = 2;
            const attn::Mask mask = attn::sink_window_mask(n, w, s);
            xt::xtensor<double, 2> uniform = mask;  // n×n: equal scores, 1/(keys seen) each
            for (std::size_t i = 0; i < n; ++i) {
                const double keys = xt::sum(xt::row(uniform, i))();
                xt::row(uniform, i) /= keys;
            }
            attn::plot::HeatmapStyle style;
            style.allowed = mask;
            attn::plot::heatmap(out / "sink_window_mask.svg", uniform, style);
            results.add("mask_n", double(n));
            results.add("mask_window", double(w));
            results.add("mask_sinks", double(s));
        }
        // ⟨Train two models and read them past their length⟩ 18-streaming.md:634
        const std::size_t markers = 4, ordinary = 10;
        const std::size_t none = markers + ordinary, first = none + 1;  // ids 14 and 15
        attn::PositionModelShape shape;
        shape.scheme = attn::PositionScheme::rope;
        shape.vocab = first + 1;
        attn::PositionTraining training;
        training.n = 32;
        training.steps = options.quick ? 100 : 800;
        const std::size_t window = 8, sinks = 4, reach = 4;
        const std::size_t eval_count = options.quick ? 4 : 40;
        const std::vector<std::size_t> lengths =
            options.quick ? std::vector<std::size_t>{16, 32, 64, 128}
                          : std::vector<std::size_t>{16, 32, 64, 128, 256, 512, 1024};
        results.add("train_n", double(training.n));
        results.add("longest_n", double(lengths.back()));
        results.add("window", double(window));
        results.add("sinks", double(sinks));
        results.add("reach", double(reach));
        results.add("scored_positions_max", double(eval_count * lengths.back()));
        const attn::PositionTask copy_task{
            "copy", [&](std::size_t n, std::mt19937_64& r) {
                return with_first_token(attn::copy_back_example(n - 1, none, 3, r), first);
            }};
        const attn::PositionTask marker_task{
            "marker", [&](std::size_t n, std::mt19937_64& r) {
                return with_first_token(
                    recent_marker_example(n - 1, markers, ordinary, none, reach, 0.15, r),
                    first);
            }};
        auto train_and_read = [&](const attn::PositionTask& task) {
            std::mt19937_64 model_rng(options.seed + 18);
            TaskRun run{attn::init_position_model<float>(shape, model_rng), {}};
            attn::train_position_model(run.model, task, training, model_rng);
            run.mass =
                first_token_mass(run.model, task, training.n, eval_count, options.seed + 1);
            using attn::SinkPositions;
            for (std::size_t n : lengths) {
                const std::uint64_t seed = options.seed + 100 + n;
                for (auto [series, w, s, at] :
                     {std::tuple{&run.full, n, std::size_t(0), SinkPositions::absolute},
                      std::tuple{&run.plain, window, std::size_t(0), SinkPositions::absolute},
                      std::tuple{&run.sunk, window, sinks, SinkPositions::absolute},
                      std::tuple{&run.cached, window, sinks, SinkPositions::in_cache}}) {
                    series->x.push_back(double(n));
                    series->y.push_back(
                        streaming_accuracy(run.model, task, n, w, s, at, eval_count, seed));
                }
            }
            return run;
        };
        std::future<TaskRun> copy_run =
            std::async(std::launch::async, train_and_read, std::cref(copy_task));
        std::future<TaskRun> marker_run =
            std::async(std::launch::async, train_and_read, std::cref(marker_task));
        std::vector<attn::Series> mass_curves;
        for (auto [task, future] :
             {std::pair{&copy_task, &copy_run}, std::pair{&marker_task, &marker_run}}) {
            const TaskRun run = future->get();
            // ⟨Measure how much a model looks at its first token⟩ 18-streaming.md:518
            const std::vector<std::vector<double>>& mass = run.mass;
            std::size_t sink_head = 0;  // the head that puts most weight on the first token
            for (std::size_t k = 0; k < mass.size(); ++k)
                if (mean_after_first(mass[k]) > mean_after_first(mass[sink_head])) sink_head = k;
            double mean_mass = 0;
            for (const auto& head : mass) mean_mass += mean_after_first(head) / double(mass.size());
            results.add(task->name + "_mass_mean", mean_mass, 2);
            results.add(task->name + "_mass_top_head", mean_after_first(mass[sink_head]), 2);
            for (std::size_t k = 0; k < mass.size(); ++k)
                results.add(task->name + "_mass_head" + std::to_string(k + 1),
                            mean_after_first(mass[k]), 2);
            results.add(task->name + "_top_head", double(sink_head + 1));
            attn::Series by_query{task->name + " model, head " + std::to_string(sink_head + 1),
                                  {}, {}};
            for (std::size_t i = 1; i < training.n; ++i)
                by_query.x.push_back(double(i)), by_query.y.push_back(mass[sink_head][i]);
            mass_curves.push_back(by_query);
            if (task == &marker_task) {
                // ⟨Draw the sink head on one sequence⟩ 18-streaming.md:578
                std::mt19937_64 draw_rng(options.seed + 3);
                const attn::TaskExample example = task->draw(24, draw_rng);
                const auto f = attn::position_model_forward(run.model, example.tokens);
                const std::size_t heads = shape.heads;
                attn::plot::HeatmapStyle heat;
                heat.row_labels = heat.col_labels = marker_letters(example.tokens, markers, none);
                heat.allowed = attn::causal_mask(example.tokens.size());
                attn::plot::heatmap(
                    out / "sink_head.svg",
                    xt::xtensor<double, 2>(f.layers[sink_head / heads].weights[sink_head % heads]),
                    heat);
            }
            // ⟨Record and draw the accuracy against length⟩ 18-streaming.md:699
            const std::string key = task->name + "_";
            const std::size_t at_train = 1;  // lengths[1] is the training length
            for (const attn::Series* series : {&run.full, &run.plain, &run.sunk, &run.cached}) {
                const std::string name = series == &run.full    ? "full"
                                         : series == &run.plain ? "window"
                                         : series == &run.sunk  ? "sinks_text"
                                                                : "sinks_cache";
                results.add(key + name + "_at_train", series->y[at_train], 3);
                results.add(key + name + "_at_longest", series->y.back(), 3);
            }
            // Error rates on a log axis, so that small differences show; a pattern with no
            // error is drawn at 1/(every position read at the longest length), below any
            // error rate the evaluation can give. The patterns are drawn slightly apart along n
            // (factors 2^±0.1 and 2^±0.3), so that equal error rates stay visible side by side.
            const double no_error = 1.0 / double(eval_count * lengths.back());
            std::vector<attn::Series> errors;
            double shift = -0.3;  // log2 of the factor on n
            for (const attn::Series* series : {&run.full, &run.plain, &run.sunk, &run.cached}) {
                attn::Series error = *series;
                for (double& x : error.x) x *= std::exp2(shift);
                for (double& y : error.y) y = std::max(1.0 - y, no_error);
                shift += 0.2;
                errors.push_back(error);
            }
            attn::plot::LinePlotStyle style{"", "sequence length n (tokens)",
                                            "error rate 1 − accuracy (log scale)"};
            style.log_x = style.log_y = true;
            style.y_min = no_error / 2, style.y_max = 1.5;
            attn::plot::lines(out / (task->name + "_accuracy.svg"), errors, style);
        }
        // ⟨Draw the first-token mass of both models⟩ 18-streaming.md:541
        {
            attn::Series uniform{"uniform, 1/(i+1)", {}, {}, "lines"};
            std::vector<double> uniform_mass(training.n, 1.0);  // by query, as first_token_mass
            for (std::size_t i = 1; i < training.n; ++i) {
                uniform_mass[i] = 1.0 / double(i + 1);
                uniform.x.push_back(double(i)), uniform.y.push_back(uniform_mass[i]);
            }
            mass_curves.push_back(uniform);
            results.add("uniform_mass", mean_after_first(uniform_mass), 2);
            attn::plot::LinePlotStyle style{"", "query position i",
                                            "attention weight on the first token"};
            style.y_min = 0, style.y_max = 1;
            attn::plot::lines(out / "first_token_mass.svg", mass_curves, style);
        }
        // ⟨Measure the streaming cache against the full cache⟩ 18-streaming.md:782
        const std::size_t bench_d = 64, bench_window = 256, bench_sinks = 4, pool = 64;
        std::mt19937_64 bench_rng(options.seed + 4);
        const xt::xtensor<float, 2> rows =
            attn::random_normal<float>(pool, bench_d, 1.0, bench_rng);  // pool×d: the tokens
        const std::vector<std::size_t> bench_lengths =
            options.quick ? std::vector<std::size_t>{256, 512, 1024, 2048, 4096}
                          : std::vector<std::size_t>{1024, 2048, 4096, 8192, 16384};
        attn::CostCurve streaming{"streaming cache, w = " + std::to_string(bench_window) +
                                  ", s = " + std::to_string(bench_sinks)};
        attn::Series full_memory{"full KV cache (chapter 16)", {}, {}};
        for (std::size_t n : bench_lengths) {
            auto decode = [&] {  // n tokens in, the last output out
                attn::StreamingKVCache<float> cache(bench_window, bench_sinks, bench_d,
                                                    bench_d);
                std::vector<float> o(bench_d);
                for (std::size_t t = 0; t < n; ++t) {
                    const float* x = rows.data() + (t % pool) * bench_d;  // key = value = query
                    cache.append(x, x);
                    cache.attend(x, o.data());
                }
                return o;
            };
            attn::measure_costs({&streaming}, double(n), {decode}, options.quick ? 2 : 3);
            auto fill = [&] {  // chapter 16's cache, holding all n tokens
                attn::KVCache<float> cache(bench_d, bench_d);
                const xt::xtensor<float, 1> x = xt::row(rows, 0);
                for (std::size_t t = 0; t < n; ++t) cache.append(x, x);
                return cache.bytes();
            };
            full_memory.x.push_back(double(n));
            full_memory.y.push_back(double(attn::largest_peak_memory_bytes(fill)) / (1 << 20));
        }
        results.add("bench_window", double(bench_window));
        results.add("bench_sinks", double(bench_sinks));
        results.add("bench_d", double(bench_d));
        results.add("bench_n_max", double(bench_lengths.back()));
        results.add("streaming_mib_max", streaming.peak_mib.back());
        results.add("streaming_cache_kib",  // (s + w) keys and values of d floats each
                    double((bench_sinks + bench_window) * 2 * bench_d * sizeof(float)) / 1024);
        results.add("full_mib_max", full_memory.y.back());
        results.add_fit("streaming_memory_slope", streaming.memory_fit());
        results.add_fit("streaming_time_slope", streaming.time_fit());
        results.add_fit("full_memory_slope", attn::loglog_fit(full_memory.x, full_memory.y));
        attn::plot::LinePlotStyle style{"", "tokens decoded n", "peak memory (MiB)"};
        style.log_x = style.log_y = true;
        attn::plot::lines(out / "cache_memory.svg", {streaming.memory(), full_memory}, style);
    });
}
