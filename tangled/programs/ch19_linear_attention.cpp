// Generated from chapters/19-linear-attention.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <future>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xview.hpp>
#include <xtensor-blas/xlinalg.hpp>

#include "attn/causal_decoder.hpp"
#include "attn/kv_cache.hpp"
#include "attn/linear_attention.hpp"
#include "attn/masked_attention.hpp"
#include "attn/measure.hpp"
#include "attn/performer.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch19",
                             "linear attention: three forms, cost, memory, quality",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        const attn::BlasThreads one_thread(1);  // every timing here runs on one thread
        // ⟨Check that the three forms agree⟩ 19-linear-attention.md:698
        const std::size_t check_n = 100, check_d = 16, check_block = 32;
        {
            const auto Q = attn::random_normal<double>(check_n, check_d, 1.0, rng);
            const auto K = attn::random_normal<double>(check_n, check_d, 1.0, rng);
            const auto V = attn::random_normal<double>(check_n, check_d, 1.0, rng);
            const auto max_abs = [](const xt::xtensor<double, 2>& a,
                                    const xt::xtensor<double, 2>& b) {
                return double(xt::amax(xt::abs(a - b))());
            };
            const xt::xtensor<double, 2> matrix =
                xt::linalg::dot(attn::linear_attention_weights(Q, K, true), V);
            const auto blocked = attn::linear_attention(Q, K, V, true, check_block);
            const auto recurrent = attn::recurrent_linear_attention(Q, K, V);
            results.add("blocked_vs_matrix_max_abs", max_abs(blocked, matrix), 2);
            results.add("recurrent_vs_blocked_max_abs", max_abs(recurrent, blocked), 2);
            const xt::xtensor<double, 2> bidirectional =
                xt::linalg::dot(attn::linear_attention_weights(Q, K, false), V);
            results.add("bidirectional_vs_matrix_max_abs",
                        max_abs(attn::linear_attention(Q, K, V, false), bidirectional), 2);
            const auto W = attn::orthogonal_features<double>(64, check_d, options.seed);
            const auto favor = attn::feature_attention(attn::favor_features(Q, W),
                                                       attn::favor_features(K, W), V, true);
            results.add("favor_through_prefix_sums_max_abs",
                        max_abs(favor, attn::performer_causal_attention(Q, K, V, W)), 2);
        }
        results.add("check_n", double(check_n));
        results.add("check_d", double(check_d));
        results.add("check_block", double(check_block));
        // ⟨Time linear and softmax attention against n⟩ 19-linear-attention.md:753
        const std::size_t cost_d = 64, cost_n_min = 128;
        const std::size_t cost_n_max = options.quick ? 2048 : 16384;
        const std::size_t cost_dense_n_max = 2048;
        const int cost_repeats = 3;
        attn::CostCurve blocked{"causal linear, blocked", 1};
        attn::CostCurve recurrent{"causal linear, recurrent", 1};
        attn::CostCurve softmax{"causal softmax, dense", 1};
        for (std::size_t n = cost_n_min; n <= cost_n_max; n *= 2) {
            const auto Q = attn::random_normal<float>(n, cost_d, 1.0, rng);  // n×d_k
            const auto K = attn::random_normal<float>(n, cost_d, 1.0, rng);  // n×d_k
            const auto V = attn::random_normal<float>(n, cost_d, 1.0, rng);  // n×d_v
            const attn::Mask mask =
                n <= cost_dense_n_max ? attn::causal_mask(n) : attn::Mask();  // n×n
            attn::Call dense_call;  // empty beyond cost_dense_n_max: dense is skipped there
            if (n <= cost_dense_n_max)
                dense_call = [&] { return attn::scaled_dot_product_attention(Q, K, V, mask); };
            attn::measure_costs(
                {&blocked, &recurrent, &softmax}, double(n),
                {[&] { return attn::linear_attention(Q, K, V, true); },
                 [&] { return attn::recurrent_linear_attention(Q, K, V); }, dense_call},
                cost_repeats);
        }
        results.add("cost_d", double(cost_d));
        results.add("cost_n_min", double(cost_n_min));
        results.add("cost_n_max", double(cost_n_max));
        results.add("cost_dense_n_max", double(cost_dense_n_max));
        results.add("cost_repeats", double(cost_repeats));
        // ⟨Fit the slopes and find the crossovers⟩ 19-linear-attention.md:787
        const attn::SlopeFit blocked_fit = blocked.time_fit(), softmax_fit = softmax.time_fit();
        const attn::SlopeFit recurrent_fit = recurrent.time_fit();
        results.add_fit("blocked_time_slope", blocked_fit);
        results.add_fit("recurrent_time_slope", recurrent_fit);
        results.add_fit("softmax_time_slope", softmax_fit);
        // processor seconds: the work of the process alone, without its waits for a core
        const auto cpu_fit = [](const attn::CostCurve& curve) {
            return attn::loglog_fit(curve.n, curve.cpu_seconds);
        };
        results.add_fit("blocked_cpu_slope", cpu_fit(blocked));
        results.add_fit("recurrent_cpu_slope", cpu_fit(recurrent));
        results.add_fit("softmax_cpu_slope", cpu_fit(softmax));
        results.add("blocked_cpu_microseconds_per_token_at_n_min",
                    1e6 * blocked.cpu_seconds.front() / blocked.n.front());
        results.add("blocked_cpu_microseconds_per_token_at_n_max",
                    1e6 * blocked.cpu_seconds.back() / blocked.n.back());
        results.add_text("blocked_crossover",
                         attn::find_crossover(blocked, softmax).describe());
        results.add_text("recurrent_crossover",
                         attn::find_crossover(recurrent, softmax).describe());
        const std::size_t shared = softmax.n.size() - 1;  // the largest n both measured
        for (const auto& [key, curve] : {std::pair{std::string("blocked"), &blocked},
                                         std::pair{std::string("softmax"), &softmax}}) {
            results.add(key + "_peak_mib_at_n_min", curve->peak_mib.front());
            results.add(key + "_peak_mib_at_dense_n_max", curve->peak_mib[shared]);
        }
        results.add("softmax_seconds_at_dense_n_max", softmax.wall_seconds[shared]);
        results.add("blocked_seconds_at_dense_n_max", blocked.wall_seconds[shared]);
        results.add("recurrent_seconds_at_dense_n_max", recurrent.wall_seconds[shared]);
        results.add("blocked_speedup_at_dense_n_max",
                    softmax.wall_seconds[shared] / blocked.wall_seconds[shared], 2);
        results.add("recurrent_over_blocked_at_n_max",
                    recurrent.wall_seconds.back() / blocked.wall_seconds.back(), 2);
        {
            const auto with_fit = [](attn::Series series, const attn::SlopeFit& fit) {
                series.label += ", slope " + fit.text();
                return series;
            };
            attn::plot::LinePlotStyle style{"", "n (tokens)", "seconds (fastest round)"};
            style.log_x = style.log_y = true;
            attn::plot::lines(out / "cost_time.svg",
                              {with_fit(softmax.time(), softmax_fit),
                               with_fit(blocked.time(), blocked_fit),
                               with_fit(recurrent.time(), recurrent_fit)},
                              style);
        }
        // ⟨Measure the memory of decoding against the tokens read⟩ 19-linear-attention.md:893
        const std::size_t decode_d = 64, pool = 256;
        const auto pool_rows = attn::random_normal<float>(pool, decode_d, 1.0, rng);
        const auto token_row = [&](std::size_t i) {  // the rows of token i: q = k = v
            return xt::xtensor<float, 1>(xt::row(pool_rows, i % pool));
        };
        attn::Series cache_series{"KV cache (chapter 16), measured peak", {}, {}};
        attn::Series state_series{"linear attention state, measured peak", {}, {}};
        attn::Series state_size{"linear attention state, its size", {}, {}, "lines"};
        std::size_t state_bytes = 0;
        for (std::size_t t = 1024; t <= 16384; t *= 2) {
            const auto run_state = [&] {
                attn::LinearAttentionState<float> state(decode_d, decode_d);
                float checksum = 0;
                for (std::size_t i = 0; i < t; ++i) {
                    const xt::xtensor<float, 1> row = token_row(i);
                    checksum += state.step(row, row, row)(0);
                }
                state_bytes = state.bytes();
                return checksum;
            };
            const auto fill_cache = [&] {
                attn::KVCache<float> cache(decode_d, decode_d);
                for (std::size_t i = 0; i < t; ++i) cache.append(token_row(i), token_row(i));
                return cache;
            };
            const double kib = 1024;
            cache_series.x.push_back(double(t));
            cache_series.y.push_back(double(attn::largest_peak_memory_bytes(fill_cache)) / kib);
            state_series.x.push_back(double(t));
            state_series.y.push_back(double(attn::largest_peak_memory_bytes(run_state)) / kib);
            state_size.x.push_back(double(t));
            state_size.y.push_back(double(state_bytes) / kib);
        }
        results.add("decode_d", double(decode_d));
        results.add("decode_t_min", cache_series.x.front());
        results.add("decode_t_max", cache_series.x.back());
        results.add("decode_state_kib", double(state_bytes) / 1024);
        results.add("decode_state_peak_kib_t_min", state_series.y.front());
        results.add("decode_state_peak_kib_t_max", state_series.y.back());
        results.add("decode_cache_kib_t_min", cache_series.y.front());
        results.add("decode_cache_kib_t_max", cache_series.y.back());
        results.add("decode_cache_formula_kib_t_max",
                    2.0 * decode_d * sizeof(float) * cache_series.x.back() / 1024);
        attn::plot::LinePlotStyle memory_style{"", "tokens read t", "memory (KiB)"};
        memory_style.log_x = memory_style.log_y = true;
        attn::plot::lines(out / "decode_memory.svg", {cache_series, state_series, state_size},
                          memory_style);
        // ⟨Train with softmax and with linear attention⟩ 19-linear-attention.md:986
        const attn::ReversalTask task{options.quick ? 4u : 6u};
        attn::TrainingConfig config;
        config.steps = options.quick ? 100 : 600;
        config.learning_rate = 3e-3;
        const std::size_t held_out = options.quick ? 50 : 300;
        struct Trained {
            attn::TinyModel<float> model;
            std::vector<attn::TrainingPoint> curve;
        };
        // a model with softmax attention, or linear attention of decay γ; every model starts
        // from the same weights (for its h) and sees the same batches
        const auto train = [&](std::size_t heads, bool linear, double gamma = 1.0) {
            attn::TinyModelShape shape = attn::causal_model_shape(task);
            shape.heads = heads;
            std::mt19937_64 init_rng(options.seed), batches(options.seed + 1);
            attn::TinyModel<float> model = attn::init_tiny_model<float>(shape, init_rng);
            const std::vector<attn::TrainingPoint> curve =
                linear ? attn::train_linear_reversal(model, task, config, batches, gamma)
                       : attn::train_causal_reversal(model, task, config, batches);
            return Trained{model, curve};
        };
        // held-out loss and words of a model run as `train` ran it, the same words for all
        const auto quality_of = [&](const attn::TinyModel<float>& model, bool linear,
                                    double gamma = 1.0) {
            std::mt19937_64 test_rng(options.seed + 7);
            return attn::evaluate_words<float>(
                [&](const std::vector<std::size_t>& tokens) {
                    return linear ? attn::linear_model_forward(model, tokens, gamma).logits
                                  : attn::causal_model_forward(model, tokens).logits;
                },
                task, held_out, test_rng);
        };
        const std::vector<std::size_t> head_counts = {2, 4, 8};
        std::vector<std::future<Trained>> softmax_runs, linear_runs;  // all at once
        for (const std::size_t heads : head_counts) {
            softmax_runs.push_back(std::async(std::launch::async, train, heads, false));
            linear_runs.push_back(std::async(std::launch::async, train, heads, true));
        }
        std::vector<attn::Series> loss_curves;  // h = 2
        attn::Series softmax_quality{"softmax attention", {}, {}};
        attn::Series linear_quality{"linear attention", {}, {}};
        attn::TinyModel<float> softmax_model, linear_model;  // h = 2: the figures
        const auto add_curve = [&](const std::string& label,
                                   const std::vector<attn::TrainingPoint>& curve) {
            attn::Series series{label, {}, {}, "lines"};
            for (const attn::TrainingPoint& point : curve) {
                series.x.push_back(double(point.step));
                series.y.push_back(point.loss);
            }
            loss_curves.push_back(series);
        };
        for (std::size_t h = 0; h < head_counts.size(); ++h) {
            const Trained softmax_trained = softmax_runs[h].get();
            const Trained linear_trained = linear_runs[h].get();
            const attn::WordQuality with_softmax = quality_of(softmax_trained.model, false);
            const attn::WordQuality with_linear = quality_of(linear_trained.model, true);
            if (h == 0) {
                add_curve("softmax attention", softmax_trained.curve);
                add_curve("linear attention", linear_trained.curve);
                softmax_model = softmax_trained.model, linear_model = linear_trained.model;
            }
            const std::size_t d_k = softmax_trained.model.shape.d_model / head_counts[h];
            softmax_quality.x.push_back(double(d_k));
            softmax_quality.y.push_back(with_softmax.loss);
            linear_quality.x.push_back(double(d_k));
            linear_quality.y.push_back(with_linear.loss);
            const std::string key = "_dk" + std::to_string(d_k);
            results.add_text("linear_against_softmax" + key,
                             with_linear.loss < with_softmax.loss ? "lower than"
                                                                  : "higher than");
            results.add("softmax_loss" + key, with_softmax.loss);
            results.add("linear_loss" + key, with_linear.loss);
            results.add("softmax_words_percent" + key, 100 * with_softmax.word_accuracy);
            results.add("linear_words_percent" + key, 100 * with_linear.word_accuracy);
        }
        results.add("quality_letters", double(task.letters));
        results.add("quality_tokens", double(task.context()));
        results.add("quality_steps", double(config.steps));
        results.add("quality_held_out", double(held_out));
        results.add("uniform_loss", std::log(26.0));
        attn::plot::LinePlotStyle curve_style{"", "training step",
                                              "training loss (nats per scored letter)"};
        curve_style.log_y = true;
        attn::plot::lines(out / "training_loss.svg", loss_curves, curve_style);
        attn::plot::LinePlotStyle quality_style{"", "head width d_k",
                                                "held-out loss (nats per letter)"};
        quality_style.log_x = quality_style.log_y = true;
        attn::plot::lines(out / "quality.svg", {softmax_quality, linear_quality},
                          quality_style);
        // ⟨Draw what each trained model attends to⟩ 19-linear-attention.md:1134
        {
            std::mt19937_64 probe_rng(options.seed + 11);
            const std::vector<std::size_t> sequence = attn::reversal_sequence(task, probe_rng);
            const std::vector<std::size_t> inputs(sequence.begin(),
                                                  sequence.begin() + task.context());
            const std::vector<std::string> labels = attn::task_letters(inputs);
            attn::plot::HeatmapStyle style{"", labels, labels};
            style.allowed = attn::causal_mask(inputs.size());
            const std::size_t last = linear_model.layers.size() - 1;
            attn::plot::heatmap(
                out / "weights_softmax.svg",
                xt::xtensor<double, 2>(
                    attn::causal_model_forward(softmax_model, inputs).layers[last].weights[0]),
                style);
            attn::plot::heatmap(
                out / "weights_linear.svg",
                xt::xtensor<double, 2>(
                    attn::linear_model_forward(linear_model, inputs).layers[last].weights[0]),
                style);
        }
        // ⟨Decode the trained linear model as an RNN⟩ 19-linear-attention.md:1226
        {
            std::mt19937_64 word_rng(options.seed + 13);
            double largest_gap = 0;
            const std::size_t words = options.quick ? 20 : 100;
            std::size_t state_bytes = 0;
            for (std::size_t w = 0; w < words; ++w) {
                const auto sequence = attn::reversal_sequence(task, word_rng);
                const std::vector<std::size_t> inputs(sequence.begin(),
                                                      sequence.begin() + task.context());
                const xt::xtensor<float, 2> parallel =
                    attn::linear_model_forward(linear_model, inputs).logits;  // n×vocab
                attn::LinearDecoder<float> decoder(linear_model);
                for (std::size_t i = 0; i < inputs.size(); ++i) {
                    const xt::xtensor<float, 1> logits = decoder.step(inputs[i]);
                    const xt::xtensor<float, 1> row = xt::row(parallel, i);
                    largest_gap =
                        std::max(largest_gap, double(xt::amax(xt::abs(logits - row))()));
                }
                state_bytes = decoder.state_bytes();
            }
            results.add("rnn_words", double(words));
            results.add("rnn_vs_parallel_max_abs_logit", largest_gap, 2);
            results.add("rnn_state_bytes", double(state_bytes));
        }
        // ⟨Train and run the linear model with a decay⟩ 19-linear-attention.md:1273
        attn::Series decay_trained{"trained with this γ", {}, {}};
        attn::Series decay_swapped{"trained with γ = 1, run with this γ", {}, {}};
        const std::vector<double> gammas = {1.0, 0.9, 0.7, 0.5};
        std::vector<std::future<Trained>> decay_runs;  // h = 2, γ < 1 (γ = 1: linear_model)
        for (std::size_t g = 1; g < gammas.size(); ++g)
            decay_runs.push_back(std::async(std::launch::async, train, 2, true, gammas[g]));
        for (std::size_t g = 0; g < gammas.size(); ++g) {
            const double gamma = gammas[g];
            const attn::TinyModel<float> model =
                g == 0 ? linear_model : decay_runs[g - 1].get().model;
            const attn::WordQuality trained = quality_of(model, true, gamma);
            const attn::WordQuality swapped = quality_of(linear_model, true, gamma);
            decay_trained.x.push_back(gamma);
            decay_trained.y.push_back(trained.loss);
            decay_swapped.x.push_back(gamma);
            decay_swapped.y.push_back(swapped.loss);
            const std::string key = "_g" + std::to_string(int(std::lround(100 * gamma)));
            results.add("decay_trained_loss" + key, trained.loss);
            results.add("decay_trained_words_percent" + key, 100 * trained.word_accuracy);
            results.add("decay_swapped_loss" + key, swapped.loss);
            results.add("decay_swapped_words_percent" + key, 100 * swapped.word_accuracy);
        }
        results.add("decay_distance", double(task.context() - 1));  // first letter to last row
        results.add("decay_shrink_g50", std::pow(0.5, double(task.context() - 1)), 2);
        attn::plot::LinePlotStyle decay_style{"", "decay γ", "held-out loss (nats per letter)"};
        decay_style.log_y = true;
        attn::plot::lines(out / "decay_quality.svg", {decay_trained, decay_swapped},
                          decay_style);
    });
}
