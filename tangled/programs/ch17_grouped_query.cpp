// Generated from chapters/17-grouped-query.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xview.hpp>

#include "attn/causal_decoder.hpp"
#include "attn/grouped_query.hpp"
#include "attn/kv_cache.hpp"
#include "attn/measure.hpp"
#include "attn/multi_head_attention.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"

namespace {

// ⟨Evaluate a grouped model on held-out words⟩ 17-grouped-query.md:691
/// Loss and greedy word accuracy of a grouped model on `count` fresh words.
attn::WordQuality evaluate_grouped(const attn::GroupedModel<float>& grouped,
                                   const attn::ReversalTask& task, std::size_t count,
                                   std::mt19937_64& rng)
{
    return attn::evaluate_words<float>(
        [&](const std::vector<std::size_t>& tokens) {
            return attn::grouped_model_logits(grouped, tokens);
        },
        task, count, rng);
}

// ⟨Compare two speeds in words⟩ 17-grouped-query.md:547
/// "faster than", "slower than", or within 10 % "about as fast as".
std::string compare_speed(double ratio)
{
    return ratio >= 1.1       ? "faster than"
           : ratio <= 1 / 1.1 ? "slower than"
                              : "about as fast as";
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch17",
                             "grouped-query attention: memory, speed, quality",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        const attn::BlasThreads one_thread(1);  // every timing here runs on one thread
        // ⟨Compare grouped-query attention with multi-head attention⟩ 17-grouped-query.md:437
        const std::size_t check_n = 12, check_d_model = 64, check_heads = 8;
        {
            const auto X = attn::random_normal<double>(check_n, check_d_model, 1.0, rng);
            const double init = 1.0 / std::sqrt(double(check_d_model));
            auto weights = [&](std::size_t cols) {
                return attn::random_normal<double>(check_d_model, cols, init, rng);
            };
            const auto W_q = weights(check_d_model), W_o = weights(check_d_model);
            const auto W_k = weights(check_d_model), W_v = weights(check_d_model);
            const auto mha = attn::multi_head_attention(X, X, W_q, W_k, W_v, W_o, check_heads);
            const auto gqa = attn::grouped_query_attention(X, X, W_q, W_k, W_v, W_o,
                                                           check_heads, check_heads);
            results.add("gqa_h_vs_mha_max_abs", double(xt::amax(xt::abs(gqa - mha))()), 2);
            double repeated_gap = 0;
            for (std::size_t g : {1, 2, 4}) {
                const std::size_t d_kv = g * check_d_model / check_heads;
                const auto W_k_g = weights(d_kv), W_v_g = weights(d_kv);
                const auto grouped =
                    attn::grouped_query_attention(X, X, W_q, W_k_g, W_v_g, W_o, check_heads, g);
                const auto repeated = attn::multi_head_attention(
                    X, X, W_q, attn::repeat_kv_columns(W_k_g, check_heads, g),
                    attn::repeat_kv_columns(W_v_g, check_heads, g), W_o, check_heads);
                repeated_gap =
                    std::max(repeated_gap, double(xt::amax(xt::abs(grouped - repeated))()));
            }
            results.add("gqa_vs_repeated_mha_max_abs", repeated_gap, 2);
        }
        results.add("check_n", double(check_n));
        results.add("check_d_model", double(check_d_model));
        results.add("check_heads", double(check_heads));
        // ⟨Measure the cache's memory against the number of KV heads⟩ 17-grouped-query.md:483
        const std::size_t bench_heads = 8, bench_d_k = 64, bench_layers = 2;
        const std::vector<std::size_t> kv_counts = {1, 2, 4, 8};
        const std::size_t memory_m = options.quick ? 2048 : 8192;
        attn::Series formula{"formula: 2·layers·g·d_k·4 bytes × m", {}, {}, "lines"};
        attn::Series measured{"measured peak", {}, {}, "points"};
        for (std::size_t g : kv_counts) {
            const xt::xtensor<float, 1> row = xt::ones<float>({bench_d_k});
            auto fill = [&] {
                std::vector<attn::KVCache<float>> caches(
                    bench_layers * g, attn::KVCache<float>(bench_d_k, bench_d_k));
                for (attn::KVCache<float>& cache : caches) {
                    cache.reserve(memory_m);
                    for (std::size_t t = 0; t < memory_m; ++t) cache.append(row, row);
                }
                return caches;
            };
            const double bytes = 2.0 * bench_layers * g * bench_d_k * sizeof(float) * memory_m;
            formula.x.push_back(double(g));
            formula.y.push_back(bytes / (1 << 20));
            measured.x.push_back(double(g));
            measured.y.push_back(double(attn::largest_peak_memory_bytes(fill)) / (1 << 20));
        }
        results.add("memory_m", double(memory_m));
        results.add("memory_mib_formula_g1", formula.y.front());
        results.add("memory_mib_measured_g1", measured.y.front());
        results.add("memory_mib_formula_g8", formula.y.back());
        results.add("memory_mib_measured_g8", measured.y.back());
        // Llama 2 70B: 80 layers, d_k = 128, 16-bit numbers; g = 8 KV heads for h = 64 queries
        results.add("llama70b_kib_per_token_g8", 2.0 * 80 * 8 * 128 * 2 / 1024);
        results.add("llama70b_kib_per_token_g64", 2.0 * 80 * 64 * 128 * 2 / 1024);
        attn::plot::LinePlotStyle memory_style{"", "key/value heads g (of h = 8 query heads)",
                                               "MiB"};
        memory_style.log_x = memory_style.log_y = true;
        attn::plot::lines(out / "cache_memory.svg", {formula, measured}, memory_style);
        // ⟨Time a decoding step against the number of KV heads⟩ 17-grouped-query.md:557
        const std::vector<std::size_t> speed_lengths =
            options.quick ? std::vector<std::size_t>{1024, 4096}
                          : std::vector<std::size_t>{2048, 8192};
        std::vector<attn::Series> speed_series;
        for (std::size_t m : speed_lengths) {
            attn::Series grouped{
                "m = " + std::to_string(m) + ", once per group (1 thread)", {}, {}};
            attn::Series per_head{
                "m = " + std::to_string(m) + ", once per query head (1 thread)", {}, {}};
            std::vector<std::vector<attn::KVCache<float>>> caches;  // [g index][KV head]
            for (std::size_t g : kv_counts) {
                caches.emplace_back(g, attn::KVCache<float>(bench_d_k, bench_d_k));
                for (attn::KVCache<float>& cache : caches.back()) {
                    const auto K = attn::random_normal<float>(m, bench_d_k, 1.0, rng);
                    const auto V = attn::random_normal<float>(m, bench_d_k, 1.0, rng);
                    cache.reserve(m);
                    for (std::size_t t = 0; t < m; ++t)
                        cache.append(xt::xtensor<float, 1>(xt::row(K, t)),
                                     xt::xtensor<float, 1>(xt::row(V, t)));
                }
            }
            const auto Q =
                attn::random_normal<float>(bench_heads, bench_d_k, 1.0, rng);  // h×d_k
            std::vector<attn::Call> calls;
            for (std::size_t c = 0; c < kv_counts.size(); ++c) {
                const std::size_t g = kv_counts[c], size = bench_heads / g;
                calls.push_back([&, c, g, size] {  // every group's queries in one pass
                    xt::xtensor<float, 2> O = xt::zeros<float>({bench_heads, bench_d_k});
                    for (std::size_t j = 0; j < g; ++j) {
                        const xt::xtensor<float, 2> Q_j =
                            xt::view(Q, xt::range(j * size, (j + 1) * size), xt::all());
                        xt::view(O, xt::range(j * size, (j + 1) * size), xt::all()) =
                            attn::attend_group(caches[c][j], Q_j);
                    }
                    return O;
                });
                calls.push_back([&, c, g] {  // every query head on its own
                    xt::xtensor<float, 2> O = xt::zeros<float>({bench_heads, bench_d_k});
                    for (std::size_t t = 0; t < bench_heads; ++t)
                        xt::row(O, t) = caches[c][attn::kv_head_of(t, bench_heads, g)].attend(
                            xt::xtensor<float, 1>(xt::row(Q, t)));
                    return O;
                });
            }
            const auto timings = attn::time_alternating(calls, options.quick ? 3 : 15);
            for (std::size_t c = 0; c < kv_counts.size(); ++c) {
                grouped.x.push_back(double(kv_counts[c]));
                grouped.y.push_back(1.0 / timings[2 * c].wall);
                per_head.x.push_back(double(kv_counts[c]));
                per_head.y.push_back(1.0 / timings[2 * c + 1].wall);
            }
            const std::string tag = m == speed_lengths.front() ? "small" : "large";
            results.add("speed_" + tag + "_grouped_g1", grouped.y.front());
            results.add("speed_" + tag + "_grouped_g8", grouped.y.back());
            results.add("speed_" + tag + "_per_head_g1", per_head.y.front());
            results.add("speed_" + tag + "_mqa_gain", grouped.y.front() / grouped.y.back(), 2);
            results.add("speed_" + tag + "_grouping_gain_g1",
                        grouped.y.front() / per_head.y.front(), 2);
            results.add_text("speed_" + tag + "_mqa_verdict",
                             compare_speed(grouped.y.front() / grouped.y.back()));
            results.add_text("speed_" + tag + "_grouping_verdict",
                             compare_speed(grouped.y.front() / per_head.y.front()));
            // At g = h both kernels do the same work: how far apart they measure is the noise.
            const double same = grouped.y.back() / per_head.y.back();
            results.add("speed_" + tag + "_same_work_ratio", std::max(same, 1 / same), 2);
            speed_series.push_back(grouped);
            speed_series.push_back(per_head);
        }
        results.add("speed_m_small", double(speed_lengths.front()));
        results.add("speed_m_large", double(speed_lengths.back()));
        attn::plot::LinePlotStyle speed_style{"", "key/value heads g (of h = 8 query heads)",
                                              "decoding steps per second (one layer)"};
        speed_style.log_x = speed_style.log_y = true;
        speed_style.key = "top right";
        attn::plot::lines(out / "decode_speed.svg", speed_series, speed_style);
        // ⟨Train models with fewer key and value heads⟩ 17-grouped-query.md:705
        const attn::ReversalTask task{options.quick ? 5u : 8u};
        attn::TinyModelShape narrow = attn::causal_model_shape(task);
        narrow.d_model = 16;
        narrow.heads = 8;
        attn::TrainingConfig config;
        config.steps = options.quick ? 80 : 300;
        config.learning_rate = 1e-2;
        const std::size_t seeds = options.quick ? 1 : 2, held_out = options.quick ? 50 : 100;
        std::vector<attn::Series> loss_curves;
        attn::Series trained{"trained with g KV heads", {}, {}};
        attn::Series pooled{"trained with g = 8, mean-pooled to g", {}, {}};
        std::vector<attn::TinyModel<float>> full_models;  // g = 8, one per seed
        std::vector<double> words_right(kv_counts.size(), 0.0), losses(kv_counts.size(), 0.0);
        double tied_gap = 0;
        for (std::size_t c = kv_counts.size(); c-- > 0;) {  // g = 8 first: the pooling source
            const std::size_t g = kv_counts[c];
            for (std::size_t seed = 0; seed < seeds; ++seed) {
                std::mt19937_64 train_rng(options.seed + 1000 * seed);
                attn::TinyModel<float> model = attn::init_tiny_model<float>(narrow, train_rng);
                attn::share_keys_and_values(model, g);
                const auto curve = attn::train_causal_reversal(
                    model, task, config, train_rng,
                    [g](attn::TinyModel<float>& grad) { attn::sum_shared_gradients(grad, g); });
                if (seed == 0) {
                    attn::Series loss{"g = " + std::to_string(g), {}, {}, "lines"};
                    for (const attn::TrainingPoint& point : curve) {
                        loss.x.push_back(double(point.step));
                        loss.y.push_back(point.loss);
                    }
                    loss_curves.push_back(loss);
                }
                const attn::GroupedModel<float> grouped = attn::group_model(model, g);
                std::mt19937_64 test_rng(options.seed + 7);  // the same held-out words for all
                const attn::WordQuality quality =
                    evaluate_grouped(grouped, task, held_out, test_rng);
                losses[c] += quality.loss / double(seeds);
                words_right[c] += quality.word_accuracy / double(seeds);
                // the compact model computes what the tied one did
                const std::vector<std::size_t> sequence =
                    attn::reversal_sequence(task, test_rng);
                const std::vector<std::size_t> inputs(sequence.begin(),
                                                      sequence.begin() + task.context());
                const xt::xtensor<float, 2> gap =
                    xt::abs(attn::grouped_model_logits(grouped, inputs) -
                            attn::causal_model_forward(model, inputs).logits);
                tied_gap = std::max(tied_gap, double(xt::amax(gap)()));
                if (g == kv_counts.back()) full_models.push_back(model);
            }
        }
        for (std::size_t c = 0; c < kv_counts.size(); ++c) {
            trained.x.push_back(double(kv_counts[c]));
            trained.y.push_back(losses[c]);
            double pooled_loss = 0;
            for (const attn::TinyModel<float>& model : full_models) {
                std::mt19937_64 test_rng(options.seed + 7);
                const auto grouped = attn::group_model(model, kv_counts[c]);
                pooled_loss +=
                    evaluate_grouped(grouped, task, held_out, test_rng).loss / double(seeds);
            }
            pooled.x.push_back(double(kv_counts[c]));
            pooled.y.push_back(pooled_loss);
            const std::string g = std::to_string(kv_counts[c]);
            results.add("quality_loss_g" + g, losses[c]);
            results.add("quality_words_percent_g" + g, 100.0 * words_right[c]);
            results.add("pooled_loss_g" + g, pooled_loss);
        }
        results.add("quality_letters", double(task.letters));
        results.add("quality_steps", double(config.steps));
        results.add("quality_seeds", double(seeds));
        results.add("quality_held_out", double(held_out));
        results.add("tied_vs_compact_max_abs", tied_gap, 2);
        const double uniform = std::log(26.0);  // a uniform guess among the 26 letters
        results.add("uniform_loss", uniform);
        results.add_text("pooled_g1_against_uniform",
                         pooled.y.front() > uniform ? "worse than" : "better than");
        std::reverse(loss_curves.begin(), loss_curves.end());  // g = 1 first in the legend
        attn::plot::LinePlotStyle curve_style{"", "training step",
                                              "training loss (nats per scored letter)"};
        curve_style.log_y = true;
        curve_style.key = "bottom left";
        attn::plot::lines(out / "training_loss.svg", loss_curves, curve_style);
        attn::plot::LinePlotStyle quality_style{"", "key/value heads g (of h = 8 query heads)",
                                                "held-out loss (nats per letter)"};
        quality_style.log_x = quality_style.log_y = true;
        attn::plot::lines(out / "quality.svg", {trained, pooled}, quality_style);
    });
}
