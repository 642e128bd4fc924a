// Generated from chapters/15-positions.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <future>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xview.hpp>

#include "attn/attention_backward.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/position_model.hpp"
#include "attn/positions.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"
#include "attn/sentence.hpp"

namespace {

// ⟨Define the program's helpers⟩ 15-positions.md:118
using Matrix = xt::xtensor<float, 2>;

/// Row r of the result is row order[r] of X.
Matrix permute_rows(const Matrix& X, const std::vector<std::size_t>& order)
{
    Matrix Y = xt::zeros<float>({order.size(), X.shape(1)});
    for (std::size_t r = 0; r < order.size(); ++r) xt::row(Y, r) = xt::row(X, order[r]);
    return Y;
}

Matrix matmul(const Matrix& A, const Matrix& B)
{
    return attn::detail::matmul(A, B);
}

xt::xtensor<double, 2> to_double(const Matrix& A)
{
    return xt::xtensor<double, 2>(A);
}

// ⟨Name a scheme in results⟩ 15-positions.md:1708
/// The key of a scheme in results.tsv: none, sinusoidal, learned, t5, alibi, rope.
std::string scheme_key(attn::PositionScheme scheme)
{
    const std::string name = attn::scheme_name(scheme);
    if (name == "T5 bias") return "t5";
    if (name == "ALiBi") return "alibi";
    if (name == "RoPE") return "rope";
    return name;
}

/// "a, b and c", or "none of them".
std::string list_text(const std::vector<std::string>& names)
{
    if (names.empty()) return "none of them";
    std::string text = names[0];
    for (std::size_t k = 1; k < names.size(); ++k)
        text += (k + 1 == names.size() ? " and " : ", ") + names[k];
    return text;
}

// ⟨Hold what a scheme did on a task⟩ 15-positions.md:1490
/// One scheme's model on one task, trained and tested.
struct SchemeRun {
    attn::Series accuracy;  ///< against the test length
    attn::SourceAttention at_train, at_longest;
};

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(
        argc, argv, "ch15",
        "positions: equivariance, sinusoids, T5, ALiBi, RoPE, length",
        [](const attn::Options& options, attn::Results& results) {
            const std::filesystem::path& out = options.out;
            // ⟨Shuffle a sentence and attend to it⟩ 15-positions.md:46
            const std::vector<std::string> words =
                attn::split_words("the dog bit the man and the man bit the dog back");
            const std::size_t n = words.size(), d_model = 16;
            std::mt19937_64 rng(options.seed);
            const Matrix W_q = attn::random_normal<float>(d_model, d_model, 0.25, rng);
            const Matrix W_k = attn::random_normal<float>(d_model, d_model, 0.25, rng);
            const Matrix W_v = attn::random_normal<float>(d_model, d_model, 0.25, rng);
            auto attend = [&](const Matrix& X) {  // n×d_model → n×d_model
                return attn::scaled_dot_product_attention<float>(matmul(X, W_q), matmul(X, W_k),
                                                                 matmul(X, W_v));
            };
            std::vector<std::size_t> order(n);  // shuffled row r is old row order[r]
            std::iota(order.begin(), order.end(), std::size_t(0));
            std::shuffle(order.begin(), order.end(), rng);
            const Matrix X = attn::embed_words<float>(words, d_model, options.seed);
            const Matrix X_shuffled = permute_rows(X, order);
            const Matrix change = attend(X_shuffled) - permute_rows(attend(X), order);
            results.add("equivariance_max_abs_error", xt::amax(xt::abs(change))(), 2);
            // ⟨Shuffle a sentence and attend to it⟩ +≡ 15-positions.md:75
            const Matrix P = attn::sinusoidal_positions<float>(n, d_model);  // n×d_model
            const Matrix moved =
                attend(X_shuffled + P) - permute_rows(Matrix(attend(X + P)), order);
            results.add("with_positions_max_abs_change", xt::amax(xt::abs(moved))(), 2);
            // ⟨Shuffle a sentence and attend to it⟩ +≡ 15-positions.md:87
            auto weights_of = [&](const Matrix& Y) {  // n×n
                return attn::attention_weights<float>(matmul(Y, W_q), matmul(Y, W_k));
            };
            std::vector<std::string> shuffled_words;
            for (std::size_t r : order) shuffled_words.push_back(words[r]);
            // no titles: the captions say what each map shows
            attn::plot::heatmap(out / "weights_sentence.svg", to_double(weights_of(X)),
                                {"", words, words});
            attn::plot::heatmap(out / "weights_shuffled.svg", to_double(weights_of(X_shuffled)),
                                {"", shuffled_words, shuffled_words});
            // ⟨Draw the sinusoidal positions⟩ 15-positions.md:216
            {
                const std::size_t table_n = 64, table_d = 64;
                const auto table = attn::sinusoidal_positions<double>(table_n, table_d);
                attn::plot::HeatmapStyle style{"", {}, {}, "column", "position"};
                style.probabilities = false;
                style.colorbar_label = "value";
                attn::plot::heatmap(out / "sinusoidal.svg", table, style);
                double worst = 0;  // |p_i·p_j − p_(i−j)·p_0| over i ≥ j
                for (std::size_t i = 0; i < table_n; ++i)
                    for (std::size_t j = 0; j <= i; ++j) {
                        const double dot_ij = xt::sum(xt::row(table, i) * xt::row(table, j))();
                        const double dot_k = xt::sum(xt::row(table, i - j) * xt::row(table, 0))();
                        worst = std::max(worst, std::abs(dot_ij - dot_k));
                    }
                results.add("sinusoidal_relative_max_error", worst, 2);
            }
            // ⟨Draw the T5 buckets⟩ 15-positions.md:404
            {
                attn::Series t5{"T5 encoder: 32 buckets, max distance 128", {}, {}, "steps"};
                attn::Series ours{
                    "this chapter: causal, 16 buckets, max distance 16", {}, {}, "steps"};
                for (std::int64_t distance = 0; distance <= 160; ++distance) {
                    t5.x.push_back(double(distance));
                    t5.y.push_back(double(attn::t5_bucket(-distance, true, 32, 128)));
                    ours.x.push_back(double(distance));
                    ours.y.push_back(double(attn::t5_bucket(-distance, false, 16, 16)));
                }
                attn::plot::LinePlotStyle style{"", "distance i − j (key before the query)",
                                                "bucket"};
                attn::plot::lines(out / "t5_buckets.svg", {t5, ours}, style);
                std::int64_t shared = 1;  // the first distance whose bucket its predecessor shares
                while (attn::t5_bucket(-shared, true) != attn::t5_bucket(-(shared - 1), true))
                    ++shared;
                results.add("t5_last_own_bucket", double(shared - 1));
                results.add("t5_first_shared_distance", double(shared));
                std::int64_t last = 0;  // the first distance in the experiment's last bucket
                while (attn::t5_bucket(-last, false, 16, 16) != 15) ++last;
                results.add("t5_experiment_last_bucket_from", double(last));
            }
            // ⟨Draw the ALiBi biases⟩ 15-positions.md:510
            {
                const std::vector<double> slopes = attn::alibi_slopes(8);
                const std::size_t bias_n = 16;
                attn::plot::HeatmapStyle style{"", {}, {}, "key j", "query i"};
                style.probabilities = false;
                style.colorbar_label = "bias added to the score";
                style.allowed = attn::causal_mask(bias_n);
                attn::plot::heatmap(out / "alibi_bias.svg",
                                    attn::alibi_bias<double>(bias_n, slopes[0]), style);
                std::vector<attn::Series> lines;
                for (std::size_t h = 0; h < slopes.size(); ++h) {
                    attn::Series head{"head " + std::to_string(h + 1) + ", slope 1/" +
                                          attn::format_number(1 / slopes[h]), {}, {}, "lines"};
                    for (double distance = 0; distance <= 32; ++distance) {
                        head.x.push_back(distance);
                        head.y.push_back(-slopes[h] * distance);
                    }
                    lines.push_back(head);
                }
                attn::plot::LinePlotStyle line_style{"", "distance i − j",
                                                     "bias added to the score"};
                attn::plot::lines(out / "alibi_slopes.svg", lines, line_style);
            }
            // ⟨Check the two layouts and the relative property⟩ 15-positions.md:675
            {
                const std::size_t rows = 32, d = 64;
                // q and k in split-halves column order
                const Matrix q = attn::random_normal<float>(rows, d, 1.0, rng);
                const Matrix k = attn::random_normal<float>(rows, d, 1.0, rng);
                // interleaved column 2c + s is split-halves column c + s·d/2
                std::vector<std::size_t> to_interleaved(d);
                for (std::size_t c = 0; c < d / 2; ++c)
                    to_interleaved[2 * c] = c, to_interleaved[2 * c + 1] = c + d / 2;
                const Matrix split = attn::rope(q, 7, 10000, attn::RopeLayout::split_halves);
                const Matrix interleaved = attn::rope(
                    Matrix(xt::transpose(permute_rows(Matrix(xt::transpose(q)), to_interleaved))),
                    7, 10000, attn::RopeLayout::interleaved);
                const Matrix split_permuted =
                    xt::transpose(permute_rows(Matrix(xt::transpose(split)), to_interleaved));
                results.add("rope_layouts_max_abs_difference",
                            xt::amax(xt::abs(interleaved - split_permuted))(), 2);
                const Matrix scores = matmul(attn::rope(q, 0), xt::transpose(attn::rope(k, 3)));
                const Matrix shifted =
                    matmul(attn::rope(q, 1000), xt::transpose(attn::rope(k, 1003)));
                const double shift_error = xt::amax(xt::abs(scores - shifted))();
                results.add("rope_shift_max_abs_difference", shift_error, 2);
            }
            // ⟨Draw RoPE's score against distance⟩ 15-positions.md:710
            {
                const std::size_t d = 64, max_distance = 2048;
                std::vector<attn::Series> curves;
                for (double base : {10000.0, 500000.0}) {
                    attn::Series curve{"base " + attn::format_number(base), {}, {}, "lines"};
                    // q = k = (1, …, 1); row δ of keys is the key at position δ
                    const Matrix ones = xt::ones<float>({max_distance + 1, d});
                    const Matrix keys = attn::rope(ones, 0, base);
                    const Matrix query =
                        attn::rope(Matrix(xt::ones<float>({std::size_t(1), d})), 0, base);
                    const Matrix dots = matmul(keys, xt::transpose(query));  // (max_distance+1)×1
                    for (std::size_t delta = 1; delta <= max_distance; ++delta) {
                        curve.x.push_back(double(delta));
                        curve.y.push_back(double(dots(delta, 0)) / double(d));
                    }
                    curves.push_back(curve);
                }
                attn::plot::LinePlotStyle style{"", "distance between query and key",
                                                "q·k relative to distance 0"};
                style.log_x = true;
                style.key = "bottom left";
                attn::plot::lines(out / "rope_decay.svg", curves, style);
            }
            // ⟨Compare the model without positions with chapter 2's attention⟩ 15-positions.md:1045
            {
                const attn::PositionModelShape shape;  // scheme none
                std::mt19937_64 model_rng(options.seed + 5);
                const auto model = attn::init_position_model<float>(shape, model_rng);
                const std::vector<std::size_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8};
                const auto f = attn::position_model_forward(model, tokens);
                const Matrix X = attn::embed_positions(model, tokens);  // n×d_model
                const Matrix Q = matmul(X, model.layers[0].W_q), K = matmul(X, model.layers[0].W_k);
                const std::size_t d_k = shape.d_model / shape.heads;
                double worst = 0;
                for (std::size_t h = 0; h < shape.heads; ++h) {
                    const Matrix P = attn::attention_weights<float>(
                        attn::head_columns(Q, h, d_k), attn::head_columns(K, h, d_k),
                        attn::causal_mask(tokens.size()));  // n×n
                    const Matrix difference = P - f.layers[0].weights[h];
                    worst = std::max(worst, double(xt::amax(xt::abs(difference))()));
                }
                results.add("model_vs_masked_attention", worst, 2);
            }
            // ⟨Set up the experiment⟩ 15-positions.md:1574
            const std::vector<attn::PositionScheme> schemes = {
                attn::PositionScheme::none,    attn::PositionScheme::sinusoidal,
                attn::PositionScheme::learned, attn::PositionScheme::t5_bias,
                attn::PositionScheme::alibi,   attn::PositionScheme::rope};
            attn::PositionTraining training;  // n = 16
            training.steps = options.quick ? 60 : training.steps;
            const std::vector<std::size_t> lengths =
                options.quick ? std::vector<std::size_t>{16, 32, 64}
                              : std::vector<std::size_t>{8, 16, 32, 64, 128};
            const std::size_t eval_count = options.quick ? 10 : 200;
            const std::size_t train_index = std::size_t(
                std::find(lengths.begin(), lengths.end(), training.n) - lengths.begin());
            attn::PositionModelShape base_shape;
            base_shape.max_n = lengths.back();
            const attn::BlasThreads one_thread(1);  // small matrices: one BLAS thread is fastest
            results.add("train_n", double(training.n));
            results.add("longest_n", double(lengths.back()));
            results.add("train_steps", double(training.steps));
            results.add("train_batch", double(training.batch));
            results.add("eval_sequences", double(eval_count));
            results.add("heads", double(base_shape.heads));
            results.add("d_model", double(base_shape.d_model));
            results.add("vocab", double(base_shape.vocab));
            const std::size_t vocab = base_shape.vocab;
            const attn::PositionTask copy_back{"Copy the token 3 back",
                                               [vocab](std::size_t n, auto& rng) {
                                                   return attn::copy_back_example(n, vocab, 3, rng);
                                               }};
            const attn::PositionTask last_marker{
                "Repeat the last marker", [vocab](std::size_t n, auto& rng) {
                    return attn::last_marker_example(n, vocab, vocab / 2, 0.25, rng);
                }};
            // ⟨Train every scheme on a task and test it at every length⟩ 15-positions.md:1498
            auto train_and_test = [&](const attn::PositionTask& task, attn::PositionScheme scheme) {
                attn::PositionModelShape shape = base_shape;
                shape.scheme = scheme;
                std::mt19937_64 rng(options.seed + 17);  // the same start for every scheme
                attn::PositionModel<float> model = attn::init_position_model<float>(shape, rng);
                attn::train_position_model(model, task, training, rng);
                SchemeRun run{{attn::scheme_name(scheme), {}, {}, "linespoints"}, {}, {}};
                for (std::size_t n : lengths) {
                    std::mt19937_64 test_rng(options.seed + 1000 + n);  // same tests for all
                    run.accuracy.x.push_back(double(n));
                    run.accuracy.y.push_back(
                        attn::position_accuracy(model, task, n, eval_count, test_rng));
                }
                for (std::size_t n : {training.n, lengths.back()}) {
                    std::mt19937_64 source_rng(options.seed + 2000 + n);
                    (n == training.n ? run.at_train : run.at_longest) =
                        attn::source_attention(model, task, n, eval_count / 4, source_rng);
                }
                return run;
            };
            // ⟨Record the schemes' runs on a task⟩ 15-positions.md:1528
            auto record_task = [&](const attn::PositionTask& task, const std::string& key,
                                   std::vector<std::future<SchemeRun>>& runs) {
                std::vector<attn::Series> curves;
                std::vector<std::string> extrapolate, fit;
                for (std::size_t s = 0; s < schemes.size(); ++s) {
                    const attn::PositionScheme scheme = schemes[s];
                    const SchemeRun run = runs[s].get();
                    // ⟨Record a scheme's accuracy⟩ 15-positions.md:1548
                    const std::string name = key + "_" + scheme_key(scheme);
                    const double at_train = run.accuracy.y[train_index], at_longest = run.accuracy.y.back();
                    results.add(name + "_at_train", at_train, 3);
                    results.add(name + "_at_longest", at_longest, 3);
                    for (const auto& [at, focus] : {std::pair{"_at_train", run.at_train},
                                                    std::pair{"_at_longest", run.at_longest}}) {
                        results.add(name + "_source" + at, focus.source, 2);
                        results.add(name + "_rival" + at, focus.rival, 2);
                    }
                    if (at_train >= 0.9) fit.push_back(attn::scheme_name(scheme));
                    if (at_longest >= 0.9) extrapolate.push_back(attn::scheme_name(scheme));
                    curves.push_back(run.accuracy);
                }
                // ⟨Draw the accuracy against length⟩ 15-positions.md:1562
                results.add_text(key + "_fit", list_text(fit));
                results.add_text(key + "_extrapolate", list_text(extrapolate));
                attn::plot::LinePlotStyle style{
                    task.name + ": trained on " + std::to_string(training.n) + " tokens",
                    "test length n (tokens)", "accuracy (positions with a target)"};
                style.log_x = true;
                style.y_min = 0, style.y_max = 1.05;
                style.key = "outside right top";
                attn::plot::lines(out / (key + "_accuracy.svg"), curves, style);
            };
            // ⟨Run the experiment⟩ 15-positions.md:1609
            std::vector<std::future<SchemeRun>> copy_runs, marker_runs;
            for (attn::PositionScheme scheme : schemes) {
                copy_runs.push_back(std::async(std::launch::async, train_and_test,
                                               std::cref(copy_back), scheme));
                marker_runs.push_back(std::async(std::launch::async, train_and_test,
                                                 std::cref(last_marker), scheme));
            }
            record_task(copy_back, "copy", copy_runs);
            record_task(last_marker, "marker", marker_runs);
        });
}
