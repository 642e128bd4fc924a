// Generated from chapters/16-decoding.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <cstddef>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xview.hpp>

#include "attn/causal_decoder.hpp"
#include "attn/kv_cache.hpp"
#include "attn/measure.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"

namespace {

// ⟨Widen a model to double⟩ 16-decoding.md:1414
/// The same model with every parameter converted to double.
attn::TinyModel<double> widen_model(const attn::TinyModel<float>& model)
{
    attn::TinyModel<double> wide = attn::zero_model<double>(model.shape);
    auto to = attn::parameters(wide);
    const auto from = attn::parameters(model);
    for (std::size_t p = 0; p < to.size(); ++p) *to[p].second = *from[p].second;
    return wide;
}

}  // namespace

int main(int argc, char** argv)
{
    return attn::run_program(argc, argv, "ch16",
                             "decoding: a causal model, KV cache, prefill, split-KV",
                             [](const attn::Options& options, attn::Results& results) {
        const std::filesystem::path& out = options.out;
        std::mt19937_64 rng(options.seed);
        // ⟨Train the causal model and let it write⟩ 16-decoding.md:879
        const attn::ReversalTask task{options.quick ? 5u : 8u};
        attn::TinyModel<float> model =
            attn::init_tiny_model<float>(attn::causal_model_shape(task), rng);
        attn::TrainingConfig config;
        config.steps = options.quick ? 150 : 400;
        config.learning_rate = 3e-3;
        const std::vector<attn::TrainingPoint> curve =
            attn::train_causal_reversal(model, task, config, rng);
        results.add("letters", double(task.letters));
        results.add("train_steps", double(config.steps));
        results.add("train_batch", double(config.batch));
        results.add("final_loss", curve.back().loss);
        const std::size_t held_out = options.quick ? 100 : 500;
        std::size_t words_right = 0, letters_right = 0;
        std::vector<std::vector<std::size_t>> prompts, answers;
        for (std::size_t s = 0; s < held_out; ++s) {
            const std::vector<std::size_t> sequence = attn::reversal_sequence(task, rng);
            prompts.emplace_back(sequence.begin(), sequence.begin() + task.letters + 1);
            answers.emplace_back(sequence.begin() + task.letters + 1, sequence.end());
            const auto written = attn::generate_with_cache(model, prompts.back(), task.letters);
            std::size_t right = 0;
            for (std::size_t t = 0; t < task.letters; ++t)
                right += written.tokens[t] == answers.back()[t];
            letters_right += right;
            words_right += right == task.letters;
            if (s == 0) {
                std::string text;
                for (const std::string& c : attn::task_letters(prompts.back())) text += c;
                for (const std::string& c : attn::task_letters(written.tokens)) text += c;
                results.add_text("example", text);
            }
        }
        results.add("held_out", double(held_out));
        results.add("word_accuracy_percent", 100.0 * double(words_right) / double(held_out));
        results.add("letter_accuracy_percent",
                    100.0 * double(letters_right) / double(held_out * task.letters));
        // ⟨Draw where the copying head looks⟩ 16-decoding.md:928
        {
            const std::vector<std::size_t> sequence = attn::reversal_sequence(task, rng);
            const std::vector<std::size_t> inputs(sequence.begin(),
                                                  sequence.begin() + task.context());
            const attn::TinyModelForward<float> f = attn::causal_model_forward(model, inputs);
            const std::size_t n = inputs.size(), k = task.letters;
            std::size_t best_layer = 0, best_head = 0;
            double best = -1;
            for (std::size_t l = 0; l < f.layers.size(); ++l)
                for (std::size_t h = 0; h < f.layers[l].weights.size(); ++h) {
                    double hits = 0;  // rows k … 2k−1 must look at key 2k − 1 − i
                    for (std::size_t i = k; i < n; ++i) {
                        const float* row = f.layers[l].weights[h].data() + i * n;
                        hits += std::size_t(std::max_element(row, row + n) - row) == n - 1 - i;
                    }
                    if (hits / double(k) > best)
                        best = hits / double(k), best_layer = l, best_head = h;
                }
            results.add("copy_layer", double(best_layer + 1));
            results.add("copy_head", double(best_head + 1));
            results.add("copy_head_percent", 100.0 * best);
            attn::plot::HeatmapStyle style;
            style.row_labels = style.col_labels = attn::task_letters(inputs);
            style.allowed = attn::causal_mask(n);
            attn::plot::heatmap(out / "copy_head.svg",
                                xt::xtensor<double, 2>(f.layers[best_layer].weights[best_head]),
                                style);
        }
        // ⟨Compare generation with and without the cache⟩ 16-decoding.md:979
        {
            const attn::TinyModel<double> wide = widen_model(model);
            std::size_t steps = 0, identical_float = 0, identical_double = 0;
            for (std::size_t s = 0; s < prompts.size(); ++s) {
                const auto cached = attn::generate_with_cache(model, prompts[s], task.letters);
                const auto again =
                    attn::generate_by_recomputing(model, prompts[s], task.letters);
                const auto cached_wide =
                    attn::generate_with_cache(wide, prompts[s], task.letters);
                const auto again_wide =
                    attn::generate_by_recomputing(wide, prompts[s], task.letters);
                for (std::size_t t = 0; t < task.letters; ++t, ++steps) {
                    identical_float += cached.tokens[t] == again.tokens[t] &&
                                       cached.logits[t] == again.logits[t];  // every bit
                    identical_double += cached_wide.tokens[t] == again_wide.tokens[t] &&
                                        cached_wide.logits[t] == again_wide.logits[t];
                }
            }
            results.add("compared_steps", double(steps));
            results.add("identical_steps_float", double(identical_float));
            results.add("identical_steps_double", double(identical_double));
            // the batched (BLAS) prefill agrees with the step-by-step decoder only to rounding
            double prefill_gap = 0;
            for (const auto& prompt : prompts) {
                attn::Decoder<float> stepped(model), batched(model);
                xt::xtensor<float, 1> logits;
                for (std::size_t token : prompt) logits = stepped.step(token);
                const xt::xtensor<float, 1> gap = xt::abs(batched.prefill(prompt) - logits);
                prefill_gap = std::max(prefill_gap, double(xt::amax(gap)()));
            }
            results.add("prefill_vs_step_max_abs", prefill_gap, 2);
        }
        // ⟨Time prefill and decode per token⟩ 16-decoding.md:1037
        const std::size_t context = options.quick ? 512 : options.bench ? 2048 : 1024;
        const attn::TinyModelShape bench_shape{64, context, 256, 4, 2};
        const attn::TinyModel<float> bench_model =
            attn::init_tiny_model<float>(bench_shape, rng);
        // prompts doubling, then the longest that leaves room for one step
        std::vector<std::size_t> prompt_lengths;
        for (std::size_t L = options.quick ? 32 : 64; L < context; L *= 2)
            prompt_lengths.push_back(L);
        prompt_lengths.push_back(context - 1);
        const int repeats = options.quick ? 3 : 5;
        attn::Series prefill_series{"prefill, per prompt token (1 thread)", {}, {}};
        attn::Series decode_series{"decode, one step (1 thread)", {}, {}};
        {
            const attn::BlasThreads one_thread(1);
            std::uniform_int_distribution<std::size_t> token(0, bench_shape.vocab - 1);
            for (std::size_t L : prompt_lengths) {
                std::vector<std::size_t> prompt(L);
                for (std::size_t& t : prompt) t = token(rng);
                attn::Decoder<float> decoder(bench_model);
                decoder.reserve(L + 1);
                decoder.prefill(prompt);
                const auto timings = attn::time_alternating(
                    {[&] { return attn::Decoder<float>(bench_model).prefill(prompt); },
                     [&] {
                         xt::xtensor<float, 1> logits = decoder.step(prompt[0]);
                         decoder.truncate(L);
                         return logits;
                     }},
                    repeats);
                prefill_series.x.push_back(double(L));
                prefill_series.y.push_back(1e6 * timings[0].wall / double(L));
                decode_series.x.push_back(double(L));
                decode_series.y.push_back(1e6 * timings[1].wall);
            }
        }
        results.add("bench_threads", 1);
        results.add("bench_prompt_max", double(prompt_lengths.back()));
        results.add("prefill_us_per_token", prefill_series.y.back());
        results.add("decode_us_per_token", decode_series.y.back());
        results.add("decode_over_prefill", decode_series.y.back() / prefill_series.y.back(), 2);
        results.add("decode_over_prefill_shortest",
                    decode_series.y.front() / prefill_series.y.front(), 2);
        attn::plot::LinePlotStyle cost_style{"", "prompt length L (tokens in the cache)",
                                             "microseconds per token"};
        cost_style.log_x = cost_style.log_y = true;
        attn::plot::lines(out / "prefill_decode.svg", {prefill_series, decode_series},
                          cost_style);
        // ⟨Measure the cache's memory against its length⟩ 16-decoding.md:1125
        const std::vector<std::size_t> cache_lengths =
            options.quick ? std::vector<std::size_t>{512, 1024, 2048, 4096, 8192}
                          : std::vector<std::size_t>{1024, 2048, 4096, 8192, 16384, 32768};
        const std::size_t d_head = bench_shape.d_model / bench_shape.heads;
        const double per_token =
            2.0 * double(bench_shape.layers * bench_shape.heads * d_head * sizeof(float));
        results.add("cache_bytes_per_token", per_token);
        // Llama 2 7B: 32 layers, 32 heads of d_k = 128, 16-bit numbers
        results.add("llama2_7b_kib_per_token", 2.0 * 32 * 32 * 128 * 2 / 1024);
        attn::Series formula{"2·layers·h·d_k·4 bytes per token", {}, {}, "lines"};
        attn::Series reserved{"measured, room reserved", {}, {}, "points"};
        attn::Series growing{"measured, growing by append", {}, {}, "points"};
        for (std::size_t m : cache_lengths) {
            const xt::xtensor<float, 1> key = xt::ones<float>({d_head});
            auto fill = [&](bool reserve) {
                std::vector<attn::KVCache<float>> caches(bench_shape.layers * bench_shape.heads,
                                                         attn::KVCache<float>(d_head, d_head));
                for (attn::KVCache<float>& cache : caches) {
                    if (reserve) cache.reserve(m);
                    for (std::size_t t = 0; t < m; ++t) cache.append(key, key);
                }
                return caches;
            };
            formula.x.push_back(double(m));
            formula.y.push_back(per_token * double(m) / (1 << 20));
            reserved.x.push_back(double(m));
            reserved.y.push_back(
                double(attn::largest_peak_memory_bytes([&] { return fill(true); })) /
                (1 << 20));
            growing.x.push_back(double(m));
            growing.y.push_back(
                double(attn::largest_peak_memory_bytes([&] { return fill(false); })) /
                (1 << 20));
        }
        results.add("cache_m_max", double(cache_lengths.back()));
        results.add("cache_mib_formula", formula.y.back());
        results.add("cache_mib_reserved", reserved.y.back());
        results.add("cache_mib_growing", growing.y.back());
        results.add_fit("cache_memory_slope", attn::loglog_fit(reserved.x, reserved.y));
        attn::plot::LinePlotStyle memory_style{"", "tokens in the cache m", "MiB"};
        memory_style.log_x = memory_style.log_y = true;
        attn::plot::lines(out / "cache_memory.svg", {formula, reserved, growing}, memory_style);
        // ⟨Compare split-KV attention with one pass⟩ 16-decoding.md:1202
        const std::size_t split_m = 1000, split_d = 64;
        double split_error_float = 0, split_error_double = 0;
        {
            const auto K = attn::random_normal<double>(split_m, split_d, 1.0, rng);  // m×d_k
            const auto V = attn::random_normal<double>(split_m, split_d, 1.0, rng);  // m×d_v
            const auto Q = attn::random_normal<double>(1, split_d, 2.0, rng);  // 1×d_k
            const xt::xtensor<double, 1> q = xt::row(Q, 0);
            const xt::xtensor<double, 1> exact = attn::split_kv_attention(q, K, V, 1);
            const xt::xtensor<float, 2> K_f = K, V_f = V;
            const xt::xtensor<float, 1> q_f = q;
            for (std::size_t parts : {2, 3, 7, 8, 64, 333, 1000}) {
                for (std::size_t threads : {1, 2}) {
                    const xt::xtensor<double, 1> wide =
                        attn::split_kv_attention(q, K, V, parts, threads);
                    const xt::xtensor<float, 1> narrow =
                        attn::split_kv_attention(q_f, K_f, V_f, parts, threads);
                    split_error_double =
                        std::max(split_error_double, double(xt::amax(xt::abs(wide - exact))()));
                    const xt::xtensor<double, 1> narrow_wide = narrow;
                    split_error_float = std::max(
                        split_error_float, double(xt::amax(xt::abs(narrow_wide - exact))()));
                }
            }
        }
        results.add("split_m", double(split_m));
        results.add("split_max_abs_error_double", split_error_double, 2);
        results.add("split_max_abs_error_float", split_error_float, 2);
        // ⟨Time split-KV decoding against the cache's length⟩ 16-decoding.md:1244
        const std::size_t speed_d = 128, speed_parts = 8;
        const std::vector<std::size_t> speed_lengths =
            options.quick ? std::vector<std::size_t>{1024, 2048, 4096, 8192, 16384}
                          : std::vector<std::size_t>{2048, 4096, 8192, 16384, 32768, 65536};
        attn::Series one_pass{"one pass (1 thread)", {}, {}};
        attn::Series split_one{"split-KV, 8 parts (1 thread)", {}, {}};
        attn::Series split_two{"split-KV, 8 parts (2 threads)", {}, {}};
        std::vector<double> one_pass_seconds;
        for (std::size_t m : speed_lengths) {
            const xt::xtensor<float, 2> K = attn::random_normal<float>(m, speed_d, 1.0, rng);
            const xt::xtensor<float, 2> V = attn::random_normal<float>(m, speed_d, 1.0, rng);
            const xt::xtensor<float, 1> q =
                xt::row(attn::random_normal<float>(1, speed_d, 1.0, rng), 0);
            const auto timings = attn::time_alternating(
                {[&] { return attn::split_kv_attention(q, K, V, 1, 1); },
                 [&] { return attn::split_kv_attention(q, K, V, speed_parts, 1); },
                 [&] { return attn::split_kv_attention(q, K, V, speed_parts, 2); }},
                options.quick ? 5 : 15);
            one_pass_seconds.push_back(timings[0].wall);
            attn::Series* series[] = {&one_pass, &split_one, &split_two};
            for (std::size_t c = 0; c < 3; ++c) {
                series[c]->x.push_back(double(m));
                series[c]->y.push_back(1.0 / timings[c].wall);
            }
        }
        results.add("speed_d", double(speed_d));
        results.add("speed_parts", double(speed_parts));
        results.add("speed_m_max", double(speed_lengths.back()));
        results.add("tokens_per_second_one_pass", one_pass.y.back());
        results.add("tokens_per_second_split_one", split_one.y.back());
        results.add("tokens_per_second_split_two", split_two.y.back());
        results.add("split_two_speedup", split_two.y.back() / split_one.y.back(), 2);
        const double two_over_one = split_two.y.back() / split_one.y.back();
        results.add_text("split_two_verdict", two_over_one >= 1.1          ? "faster than"
                                              : two_over_one <= 1 / 1.1 ? "slower than"
                                                                        : "about as fast as");
        results.add_fit("one_pass_time_slope",
                        attn::loglog_fit(std::vector<double>(one_pass.x), one_pass_seconds));
        attn::plot::LinePlotStyle speed_style{"", "tokens in the cache m",
                                              "tokens per second (one head)"};
        speed_style.log_x = speed_style.log_y = true;
        attn::plot::lines(out / "split_kv_speed.svg", {one_pass, split_one, split_two},
                          speed_style);
    });
}
