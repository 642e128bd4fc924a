// Generated from chapters/04-learning-attention.md by tools/tangle.py; edit the chapter, not this file.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iomanip>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>

#include "attn/attention_backward.hpp"
#include "attn/plot.hpp"
#include "attn/program.hpp"
#include "attn/random.hpp"
#include "attn/self_attention.hpp"
#include "attn/tiny_model.hpp"

int main(int argc, char** argv)
{
    return attn::run_program(
        argc, argv, "ch04",
        "backward pass, gradient checks, a tiny model learning to reverse",
        [](const attn::Options& options, attn::Results& results) {
            const std::filesystem::path& out = options.out;
            std::vector<std::pair<std::string, double>> gradient_table;
            // ⟨Check the gradients of attention and of a layer⟩ 04-learning-attention.md:506
            // each error goes into the table as "what name"
            const auto add_checks = [&](const std::string& what,
                                        const attn::GradientErrors& errors) {
                for (const auto& [name, error] : errors)
                    gradient_table.emplace_back(what + name, error);
            };
            {
                std::mt19937_64 check_rng(options.seed + 1);
                const auto Q = attn::random_normal<double>(5, 4, 1.0, check_rng);  // n×d_k
                const auto K = attn::random_normal<double>(7, 4, 1.0, check_rng);  // m×d_k
                const auto V = attn::random_normal<double>(7, 3, 1.0, check_rng);  // m×d_v
                const auto G = attn::random_normal<double>(5, 3, 1.0, check_rng);  // n×d_v
                attn::Mask mask = xt::ones<bool>({5, 7});                          // n×m
                add_checks("attention ", attn::check_attention_gradients(Q, K, V, G, mask));
                xt::view(mask, xt::all(), xt::range(5, 7)) = false;  // keys 5 and 6: padding
                xt::row(mask, 0) = false;                            // query 0 sees nothing
                add_checks("masked attention ", attn::check_attention_gradients(Q, K, V, G, mask));
            }
            {
                std::mt19937_64 check_rng(options.seed + 2);
                const std::size_t n = 6, d_model = 8;
                const double init = 1.0 / std::sqrt(double(d_model));
                const attn::AttentionLayer<double> layer{
                    2, attn::random_normal<double>(d_model, d_model, init, check_rng),
                    attn::random_normal<double>(d_model, d_model, init, check_rng),
                    attn::random_normal<double>(d_model, d_model, init, check_rng),
                    attn::random_normal<double>(d_model, d_model, init, check_rng)};
                const auto X = attn::random_normal<double>(n, d_model, 1.0, check_rng);
                const auto G = attn::random_normal<double>(n, d_model, 1.0, check_rng);
                add_checks("layer ", attn::check_layer_gradients(layer, X, G));
            }
            // ⟨Check the gradients of a small model⟩ 04-learning-attention.md:846
            {
                std::mt19937_64 check_rng(options.seed + 3);
                const attn::TinyModelShape small{5, 6, 8, 2, 2};  // vocab, n, d_model, h, layers
                const auto model = attn::init_tiny_model<double>(small, check_rng);
                const auto example = attn::reversal_example(small.n, small.vocab, check_rng);
                add_checks("model ", attn::check_model_gradients(model, example));
            }
            // ⟨Write the gradient table⟩ 04-learning-attention.md:1608
            {
                std::ofstream table(out / "gradient_check.txt");
                table << std::left << std::setw(28) << "gradient"
                      << "relative error vs central differences\n";
                double worst = 0;
                for (const auto& [name, error] : gradient_table) {
                    table << std::left << std::setw(28) << name << std::scientific
                          << std::setprecision(2) << error << '\n';
                    worst = std::max(worst, error);
                }
                results.add("gradient_checks", double(gradient_table.size()));
                results.add("gradient_check_max_relative_error", worst, 2);
            }
            // ⟨Compare the cheap softmax backward with the full Jacobian⟩ 04-learning-attention.md:873
            {
                std::mt19937_64 check_rng(options.seed + 4);
                // n×m scores
                const xt::xtensor<double, 2> S = attn::random_normal<double>(4, 9, 2.0, check_rng);
                // n×m
                const xt::xtensor<double, 2> dP = attn::random_normal<double>(4, 9, 1.0, check_rng);
                const xt::xtensor<double, 2> P = attn::softmax_rows(S);
                const xt::xtensor<double, 2> dS = attn::softmax_rows_backward(P, dP);
                double worst = 0;
                for (std::size_t i = 0; i < P.shape(0); ++i) {
                    const xt::xtensor<double, 1> p = xt::row(P, i), dp = xt::row(dP, i);
                    const xt::xtensor<double, 2> J = attn::softmax_jacobian(p);  // m×m
                    for (std::size_t l = 0; l < p.size(); ++l) {
                        double ds_l = 0;  // (Jᵀ dp)_l
                        for (std::size_t j = 0; j < p.size(); ++j) ds_l += J(j, l) * dp(j);
                        worst = std::max(worst, std::abs(ds_l - dS(i, l)));
                    }
                }
                results.add("softmax_jacobian_max_abs_difference", worst, 2);
            }
            // ⟨Train the model and photograph its attention⟩ 04-learning-attention.md:1440
            // the defaults: 26 letters, n = 10, d_model = 32, 2 layers of 2 heads
            const attn::TinyModelShape shape;
            std::mt19937_64 rng(options.seed);
            attn::TinyModel<float> model = attn::init_tiny_model<float>(shape, rng);
            const std::vector<std::size_t> probe = attn::letter_tokens("attentions");
            const std::vector<std::string> letters = attn::token_letters(probe);
            const auto maps_before = attn::attention_maps(model, probe);

            attn::TrainingConfig config;
            if (options.quick) config.steps = 150;
            std::vector<attn::AttentionSnapshot> snapshots;
            const auto start = std::chrono::steady_clock::now();
            const std::vector<attn::TrainingPoint> curve = attn::train_reversal(
                model, config, rng, [&](std::size_t step, const attn::TinyModel<float>& current) {
                    if (step % (step < 30 ? 2 : step < 100 ? 5 : 25) == 0)
                        snapshots.push_back({step, attn::attention_maps(current, probe)});
                });
            const double seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            snapshots.push_back({config.steps, attn::attention_maps(model, probe)});
            results.add("training_steps", double(config.steps));
            results.add("training_batch", double(config.batch));
            results.add("training_seconds", seconds, 2);
            results.add("initial_training_loss", curve.front().loss);
            results.add("final_training_loss", curve.back().loss);
            // ⟨Draw the training curves⟩ 04-learning-attention.md:1475
            attn::Series loss_series{"training loss (batch)", {}, {}, "lines"},
                accuracy_series{"training accuracy (batch)", {}, {}, "lines"};
            for (const attn::TrainingPoint& point : curve) {
                loss_series.x.push_back(double(point.step));
                loss_series.y.push_back(point.loss);
                accuracy_series.x.push_back(double(point.step));
                accuracy_series.y.push_back(point.accuracy);
            }
            attn::plot::LinePlotStyle loss_style{
                "Cross-entropy while learning to reverse 10 letters", "Adam step",
                "loss per letter (nats)"};
            loss_style.log_y = true;
            loss_style.key = "top right";
            attn::plot::lines(out / "loss.svg", {loss_series}, loss_style);
            attn::plot::LinePlotStyle accuracy_style{
                "Accuracy while learning to reverse 10 letters", "Adam step",
                "fraction of letters right"};
            accuracy_style.y_min = 0, accuracy_style.y_max = 1.05;
            accuracy_style.key = "bottom right";
            attn::plot::lines(out / "accuracy.svg", {accuracy_series}, accuracy_style);
            // ⟨Evaluate on held-out sequences⟩ 04-learning-attention.md:1521
            // a generator training never used
            std::mt19937_64 heldout_rng(options.seed ^ 0x5eed0fdeadbeefULL);
            const std::size_t heldout = 1000;
            const attn::Evaluation evaluation =
                attn::evaluate_reversal(model, heldout, heldout_rng);
            results.add("heldout_sequences", double(heldout));
            results.add("heldout_loss", evaluation.loss);
            results.add("heldout_token_accuracy", evaluation.token_accuracy, 4);
            results.add("heldout_sequence_accuracy", evaluation.sequence_accuracy, 4);
            // ⟨Find the head that learned the reversal⟩ 04-learning-attention.md:1542
            std::mt19937_64 agreement_rng(options.seed ^ 0xa77e17ULL);
            const auto agreement = attn::ideal_key_agreement(
                model, attn::reversal_ideal_keys(shape.n), 200, agreement_rng);
            std::size_t best_layer = 0, best_head = 0;
            {
                std::ofstream table(out / "heads.txt");
                table << "layer  head  queries whose largest weight is on key n-1-i\n";
                for (std::size_t l = 0; l < agreement.size(); ++l)
                    for (std::size_t h = 0; h < agreement[l].size(); ++h) {
                        table << std::setw(5) << l << std::setw(6) << h << "  " << std::fixed
                              << std::setprecision(3) << agreement[l][h] << '\n';
                        if (agreement[l][h] > agreement[best_layer][best_head])
                            best_layer = l, best_head = h;
                    }
            }
            results.add("best_head_agreement", agreement[best_layer][best_head], 3);
            results.add_text("best_head", "layer " + std::to_string(best_layer) + ", head " +
                                              std::to_string(best_head));
            // ⟨Draw the attention before and after training⟩ 04-learning-attention.md:1568
            const std::string head_name =
                "layer " + std::to_string(best_layer) + ", head " + std::to_string(best_head);
            const auto maps_after = attn::attention_maps(model, probe);
            attn::plot::heatmap(out / "attention_before.svg", maps_before[best_layer][best_head],
                                {"Before training: " + head_name + " on 'attentions'", letters,
                                 letters});
            attn::plot::heatmap(out / "attention_after.svg", maps_after[best_layer][best_head],
                                {"After training: " + head_name + " on 'attentions'", letters,
                                 letters});
            // ⟨Save the model and the snapshots for chapter 5⟩ 04-learning-attention.md:1601
            attn::save_model(out / "model.txt", model);
            attn::save_snapshots(out / "snapshots.txt", probe, snapshots);
        });
}
