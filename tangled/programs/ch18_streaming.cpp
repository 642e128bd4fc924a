// Generated from chapters/18-streaming.md by tools/tangle.py; edit the chapter, not this file.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/position_model.hpp"
#include "attn/program.hpp"
#include "attn/streaming.hpp"

namespace {

// ⟨Put a first token before every example⟩ 18-streaming.md:324
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

// ⟨Draw the recent-marker task⟩ 18-streaming.md:339
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

// ⟨Measure accuracy under a pattern⟩ 18-streaming.md:365
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
        const auto scored = attn::task_loss(
            attn::streaming_model_logits(model, example.tokens, window, sinks, positions),
            example.targets);
        counted += scored.counted;
        correct += scored.correct;
    }
    return counted ? double(correct) / double(counted) : 0.0;
}

// ⟨Measure the attention on the first token⟩ 18-streaming.md:388
/// Mean weight the model's queries at positions ≥ 1 put on key 0, for each layer and
/// head (full causal attention), over `count` fresh sequences of n tokens.
std::vector<double> first_token_mass(const attn::PositionModel<float>& model,
                                     const attn::PositionTask& task, std::size_t n,
                                     std::size_t count, std::uint64_t seed)
{
    std::mt19937_64 rng(seed);
    std::vector<double> mass;
    for (std::size_t s = 0; s < count; ++s) {
        const attn::TaskExample example = task.draw(n, rng);
        const auto f = attn::position_model_forward(model, example.tokens);
        std::size_t k = 0;
        for (const auto& layer : f.layers)
            for (const auto& weights : layer.weights) {  // n×n, one head
                if (mass.size() <= k) mass.push_back(0);
                for (std::size_t i = 1; i < n; ++i)
                    mass[k] += weights(i, 0) / double((n - 1) * count);
                ++k;
            }
    }
    return mass;
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch18",
                             "streaming: a sliding window that keeps its sinks",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        const attn::BlasThreads one_thread(1);  // small matrices: one thread
        // ⟨Train two models and read them past their length⟩ 18-streaming.md:413
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
        for (const attn::PositionTask* task : {&copy_task, &marker_task}) {
            std::mt19937_64 model_rng(options.seed + 18);
            attn::PositionModel<float> model = attn::init_position_model<float>(shape, model_rng);
            attn::train_position_model(model, *task, training, model_rng);
            const std::vector<double> mass =
                first_token_mass(model, *task, training.n, eval_count, options.seed + 1);
            for (std::size_t k = 0; k < mass.size(); ++k)
                results.add(task->name + "_mass_head" + std::to_string(k + 1), mass[k], 2);
            using attn::SinkPositions;
            attn::Series full{"full attention", {}, {}}, plain{"window", {}, {}},
                sunk{"window + sinks at their text positions", {}, {}},
                cached{"window + sinks at their cache positions", {}, {}};
            for (std::size_t n : lengths) {
                const std::uint64_t seed = options.seed + 100 + n;
                for (auto [series, w, s, at] :
                     {std::tuple{&full, n, std::size_t(0), SinkPositions::absolute},
                      std::tuple{&plain, window, std::size_t(0), SinkPositions::absolute},
                      std::tuple{&sunk, window, sinks, SinkPositions::absolute},
                      std::tuple{&cached, window, sinks, SinkPositions::in_cache}}) {
                    series->x.push_back(double(n));
                    series->y.push_back(
                        streaming_accuracy(model, *task, n, w, s, at, eval_count, seed));
                }
                std::printf("%s n=%zu full %.3f window %.3f sinks %.3f cached %.3f\n",
                            task->name.c_str(), n, full.y.back(), plain.y.back(), sunk.y.back(),
                            cached.y.back());
            }
            attn::plot::LinePlotStyle style{"", "sequence length n (tokens)", "accuracy"};
            style.log_x = true;
            style.y_min = 0, style.y_max = 1.05;
            attn::plot::lines(out / (task->name + "_accuracy.svg"), {full, plain, sunk, cached}, style);
        }
    });
}
